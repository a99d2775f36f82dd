"""`multitask.testing.ReadingModel`: answers that depend on the request, in every provider's
format, cut at the request's output limit; through the client, over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import multitask
from multitask.testing import ReadingModel, Script, ScriptedModelServer
from multitask.testing._reading import request_text, request_token_limit

pytestmark = pytest.mark.anyio

PROVIDERS = ["openai", "openai-responses", "anthropic", "gemini", "ollama", "azure"]
TEXT = " ".join(f"Name{i} went home." for i in range(120))


class Mention(BaseModel):
    quote: str


def client(server: ScriptedModelServer, provider: str, **options: Any) -> multitask.Client:
    v1 = provider in ("openai", "openai-responses")
    return multitask.Client(
        f"{provider}:reader", base_url=server.url + ("/v1" if v1 else ""), api_key="k", **options
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_answers_what_the_text_says(provider: str) -> None:
    model = ReadingModel(r"Name\d+")
    async with ScriptedModelServer(model) as server:
        got = [m.quote async for m in client(server, provider).extract_stream(Mention, TEXT)]
        other = [m.quote async for m in client(server, provider).extract_stream(Mention, "Name7")]
    assert got == [f"Name{i}" for i in range(120)]
    assert other == ["Name7"]
    assert model.texts == [TEXT, "Name7"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_stops_at_the_requests_output_limit(provider: str) -> None:
    model = ReadingModel(r"Name\d+")
    got: list[str] = []
    async with ScriptedModelServer(model) as server:
        stream = client(server, provider, max_tokens=100).extract_stream(Mention, TEXT)
        with pytest.raises(multitask.IncompleteOutputError) as caught:  # noqa: PT012
            async for m in stream:
                got.append(m.quote)
    # 100 tokens of 4 characters: the answer's first 400 characters, and the items whole in it.
    answer = '{"tasks": [' + ", ".join(f'{{"quote": "Name{i}"}}' for i in range(120)) + "]}"
    whole = answer[:400].count("}")
    assert got == [f"Name{i}" for i in range(whole)]
    assert caught.value.items_delivered == whole
    assert stream.finish_reason in ("length", "max_tokens", "MAX_TOKENS", "max_output_tokens")


async def test_its_own_limit_and_the_scripts_other_options() -> None:
    model = ReadingModel(
        r"Name\d+",
        item=lambda m: {"quote": m[0].upper()},
        max_tokens=50,
        script=Script(chunk_size=7, tokens_per_second=10_000),
    )
    got: list[str] = []
    async with ScriptedModelServer(model) as server:
        with pytest.raises(multitask.IncompleteOutputError):  # noqa: PT012
            async for m in client(server, "openai").extract_stream(Mention, TEXT):
                got.append(m.quote)
    assert got == [f"NAME{i}" for i in range(len(got))]
    assert 0 < len(got) < 15


async def test_read_all_reads_every_user_message_as_an_unruly_model_does() -> None:
    earlier = [{"role": "user", "content": "Name900 came first."}]
    obeys, reads_all = ReadingModel(r"Name\d+"), ReadingModel(r"Name\d+", read="all")
    for model, expected in ((obeys, ["Name1"]), (reads_all, ["Name900", "Name1"])):
        async with ScriptedModelServer(model) as server:
            stream = client(server, "anthropic").extract_stream(
                Mention, "Name1 then.", messages=earlier
            )
            assert [m.quote async for m in stream] == expected


def test_request_shapes_it_reads() -> None:
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {}]}]}
    assert request_text("openai", parts) == "a"
    image = {"type": "image_url", "image_url": {"url": "data:"}}
    assert request_text("openai", {"messages": [{"role": "user", "content": [image]}]}) == ""
    assert request_text("openai-responses", {"input": "plain"}) == "plain"
    responses = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "b"}]}]}
    assert request_text("openai-responses", responses) == "b"
    gemini = {"contents": [{"role": "user", "parts": [{"text": "c"}, {"text": "d"}]}]}
    assert request_text("gemini", gemini) == "cd"
    assert request_text("ollama", None) == ""
    assert request_token_limit("openai", {"max_completion_tokens": 9}) == 9
    assert request_token_limit("azure", {"max_tokens": 8}) == 8
    assert request_token_limit("openai-responses", {"max_output_tokens": 7}) == 7
    assert request_token_limit("gemini", {"generationConfig": {"maxOutputTokens": 6}}) == 6
    assert request_token_limit("ollama", {"options": {"num_predict": 5}}) == 5
    assert request_token_limit("anthropic", {"max_tokens": True}) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"read": "some"}, "read must be 'last' or 'all'"),
        ({"chars_per_token": 0}, "chars_per_token must be positive"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReadingModel("x", **options)
