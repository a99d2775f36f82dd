"""Every provider through the client over real HTTP, against the scripted model server.

Each test runs on asyncio and trio. The server renders each provider's own stream format
(Responses events, Gemini SSE, Ollama NDJSON, Azure's filter chunks, compatible servers'
quirks); these tests check that the client sends what each API expects and reads back the
items, usage, finish reasons and errors, one item at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

import multitask
from multitask.testing import RecordedRequest, Script, ScriptedModelServer, _wire
from multitask.testing._wire_base import call_steps

pytestmark = pytest.mark.anyio

KEY = "k-test-0123"
TEXT = "Ada is 36, Alan is 41."


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user{i}", "age": 20 + i} for i in range(5)]
EXPECTED = [User(**u) for u in USERS]
ANSWER = json.dumps({"tasks": USERS})
# Cuts inside the third item: two items are complete before it.
CUT = ANSWER.index(json.dumps(USERS[2])) + 6
# Names of very different lengths, so interleaved calls complete out of list order.
PARALLEL = [
    {"name": "Bartholomew Christopherson-Smythe", "age": 30},
    {"name": "Al", "age": 31},
    {"name": "Dorothea Windsor", "age": 32},
    {"name": "Cy", "age": 33},
    {"name": "Evangeline", "age": 34},
]
PARALLEL_EXPECTED = [User(**u) for u in PARALLEL]


@dataclass(frozen=True)
class Provider:
    """How to reach one provider on the server, and what it answers."""

    model: str
    v1: bool  # base_url = server.url + "/v1"
    route: str  # RecordedRequest.provider
    truncated: str  # finish reason of a truncated answer
    stream_error: str  # in the mid-stream error's message
    status: int  # the HTTP error to script
    status_error: str  # in that error's message

    @property
    def name(self) -> str:
        return self.model.split(":")[0]


_CHAT_ERROR = "server had an error"
PROVIDERS = {
    p.name: p
    for p in [
        Provider(
            "openai-responses:gpt-test",
            True,
            "openai-responses",
            "max_output_tokens",
            _CHAT_ERROR,
            429,
            "Rate limit reached",
        ),
        Provider(
            "gemini:gemini-test",
            False,
            "gemini",
            "MAX_TOKENS",
            "overloaded",
            429,
            "exceeded your current quota",
        ),
        Provider("ollama:llama-test", False, "ollama", "length", "unexpected EOF", 503, "busy"),
        Provider("azure:dep-test", False, "azure", "length", _CHAT_ERROR, 429, "token rate limit"),
        Provider("groq:llama-test", True, "openai", "length", _CHAT_ERROR, 429, "Rate limit"),
        Provider("vllm:qwen-test", True, "openai", "length", _CHAT_ERROR, 429, "Rate limit"),
        Provider("mistral:mistral-test", True, "openai", "length", _CHAT_ERROR, 429, "Rate limit"),
        Provider("llamacpp:tiny-test", True, "openai", "length", _CHAT_ERROR, 503, "busy"),
        Provider("lmstudio:qwen-test", True, "openai", "length", _CHAT_ERROR, 503, "busy"),
        Provider("openai:gpt-test", True, "openai", "length", _CHAT_ERROR, 429, "Rate limit"),
        Provider(
            "anthropic:claude-test", False, "anthropic", "max_tokens", "Overloaded", 529, "Overload"
        ),
    ]
}
NEW = ["openai-responses", "gemini", "ollama", "azure", "groq", "vllm", "mistral"]


def client(server: ScriptedModelServer, name: str, **options: Any) -> multitask.Client:
    p = PROVIDERS[name]
    base_url = server.url + "/v1" if p.v1 else server.url
    options.setdefault("max_retries", 0)
    return multitask.Client(p.model, base_url=base_url, api_key=KEY, **options)


@dataclass
class Run:
    """What one extraction gave: items, the server's progress at each, and the error."""

    items: list[User]
    completed: list[bool]  # the response was fully sent when the item came out
    chunks: list[int]  # stream chunks the server had sent when the item came out
    error: BaseException | None
    stream: multitask.ItemStream[User]


async def extract(server: ScriptedModelServer, c: multitask.Client, **options: Any) -> Run:
    run = Run([], [], [], None, c.extract_stream(User, TEXT, **options))
    try:
        async with run.stream:
            async for item in run.stream:
                record = server.requests[-1]
                run.items.append(item)
                run.completed.append(record.completed)
                run.chunks.append(record.chunks_sent)
    except multitask.MultitaskError as exc:
        run.error = exc
    return run


async def serve_one(
    script: Script, name: str, **options: Any
) -> tuple[Run, RecordedRequest, ScriptedModelServer]:
    async with ScriptedModelServer(script) as server, client(server, name) as c:
        run = await extract(server, c, **options)
    return run, server.requests[-1], server


def completion_order(record: RecordedRequest, script: Script) -> tuple[list[int], list[int]]:
    """From the sans-IO renderer: the order in which the calls' arguments complete, and the
    index of the chunk that completes each."""
    assert record.provider is not None
    plan = _wire.stream_plan(record.provider, record.body, script, model=record.model)
    return [call for _, call in plan.completions], [chunk for chunk, _ in plan.completions]


# -- streaming, one item at a time -------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
async def test_items_arrive_while_the_model_is_still_writing(name: str) -> None:
    script = Script(items=USERS, chunk_size=4, tokens_per_second=400)
    run, record, _ = await serve_one(script, name)
    assert run.error is None
    assert run.items == EXPECTED
    assert record.provider == PROVIDERS[name].route
    # Every item but the last came out before the server had sent the whole response.
    assert run.completed[:-1] == [False] * (len(USERS) - 1)
    assert run.chunks == sorted(run.chunks)
    assert len(set(run.chunks)) == len(USERS)
    assert run.stream.usage is not None or name == "mistral"  # mistral asks for no usage
    assert record.completed
    assert not record.disconnected


@pytest.mark.parametrize("mode", ["tools", "parallel_tools"])
async def test_gemini_function_calls_arrive_whole_so_items_come_at_once(mode: str) -> None:
    """Gemini sends a function call's `args` whole, in one chunk: no item can come out before
    the others, whatever the pacing. (Its default mode, json_schema, streams text instead.)"""
    script = Script(items=USERS, chunk_size=4, tokens_per_second=400)
    run, record, _ = await serve_one(script, "gemini", mode=mode)
    assert run.error is None
    assert run.items == EXPECTED
    assert len(set(run.chunks)) == 1  # all from the same chunk
    _, chunk_of = completion_order(record, script)
    assert run.chunks == [chunk_of[0] + 1] * len(USERS)
    declaration = record.body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == ("MultiUser" if mode == "tools" else "User")


# -- what each provider is sent ----------------------------------------------------------------


async def test_responses_request_shape() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with client(server, "openai-responses", max_tokens=300) as c:
            assert await c.extract(User, TEXT) == EXPECTED
            assert await c.extract(User, TEXT, mode="json_schema") == EXPECTED
    tools_request, schema_request = server.requests
    assert tools_request.path == "/v1/responses"
    assert tools_request.provider == "openai-responses"
    assert tools_request.headers["authorization"] == f"Bearer {KEY}"
    body = tools_request.body
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    (tool,) = body["tools"]
    assert tool["type"] == "function"
    assert tool["name"] == "MultiUser"
    assert tool["parameters"]["required"] == ["tasks"]
    assert body["tool_choice"] == {"type": "function", "name": "MultiUser"}
    assert body["max_output_tokens"] == 300
    assert body["input"] == [{"role": "user", "content": TEXT}]
    assert isinstance(body["instructions"], str)
    assert "messages" not in body
    fmt = schema_request.body["text"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["strict"] is True
    assert fmt["name"] == "MultiUser"
    assert "tools" not in schema_request.body


async def test_gemini_request_shape() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with client(server, "gemini", max_tokens=300, temperature=0.5) as c:
            assert await c.extract(User, TEXT) == EXPECTED
    request = server.requests[0]
    assert request.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request.model == "gemini-test"
    assert request.stream
    assert request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers
    body = request.body
    assert "model" not in body
    assert body["contents"] == [{"role": "user", "parts": [{"text": TEXT}]}]
    assert isinstance(body["systemInstruction"]["parts"][0]["text"], str)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["type"] == "OBJECT"
    assert config["responseSchema"]["properties"]["tasks"]["type"] == "ARRAY"
    assert config["maxOutputTokens"] == 300
    assert config["temperature"] == 0.5


async def test_ollama_request_shape() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        no_key = multitask.Client("ollama:llama-test", base_url=server.url)
        async with no_key:
            assert await no_key.extract(User, TEXT, max_tokens=300) == EXPECTED
        async with client(server, "ollama", mode="json") as c:
            assert await c.extract(User, TEXT) == EXPECTED
    schema_request, json_request = server.requests
    assert schema_request.path == "/api/chat"
    assert schema_request.provider == "ollama"
    assert "authorization" not in schema_request.headers  # a local server needs no key
    body = schema_request.body
    assert body["model"] == "llama-test"
    assert body["stream"] is True
    assert body["format"]["properties"]["tasks"]["type"] == "array"
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][-1] == {"role": "user", "content": TEXT}
    assert body["options"] == {"num_predict": 300}
    assert json_request.body["format"] == "json"
    assert '"tasks"' in json_request.body["messages"][0]["content"]
    assert json_request.headers["authorization"] == f"Bearer {KEY}"


async def test_azure_request_shape() -> None:
    from multitask.providers import AzureOpenAI

    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with client(server, "azure", max_tokens=300) as c:
            assert await c.extract(User, TEXT) == EXPECTED
        entra = AzureOpenAI(base_url=server.url, azure_ad_token="entra-token", api_version="v9")
        async with multitask.Client("azure:dep-two", provider=entra) as c:
            assert await c.extract(User, TEXT) == EXPECTED
    key_request, token_request = server.requests
    assert key_request.path == "/openai/deployments/dep-test/chat/completions"
    assert key_request.provider == "azure"
    assert key_request.model == "dep-test"
    assert key_request.query == {"api-version": "2024-10-21"}
    assert key_request.headers["api-key"] == KEY
    assert "authorization" not in key_request.headers
    body = key_request.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "MultiUser"}}
    assert body["max_tokens"] == 300
    assert token_request.path == "/openai/deployments/dep-two/chat/completions"
    assert token_request.query == {"api-version": "v9"}
    assert token_request.headers["authorization"] == "Bearer entra-token"
    assert "api-key" not in token_request.headers


async def test_azure_without_api_version_is_not_found() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                server.url + "/openai/deployments/d/chat/completions", json={"messages": []}
            )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.parametrize("name", ["groq", "vllm", "mistral", "llamacpp", "lmstudio"])
async def test_compatible_preset_request_shape(name: str) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        # llama.cpp and LM Studio default to json_schema; their tools mode is checked here.
        async with client(server, name, max_tokens=300, mode="tools") as c:
            assert await c.extract(User, TEXT) == EXPECTED
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.provider == "openai"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["model"] == PROVIDERS[name].model.split(":", 1)[1]
    assert body["max_tokens"] == 300
    assert "max_completion_tokens" not in body
    assert body["tools"] == [multitask.MultiTask(User).openai_tool]
    if name == "mistral":
        assert body["tool_choice"] == "any"
        assert "stream_options" not in body
    elif name in ("llamacpp", "lmstudio"):
        # Both read tool_choice only as a string; with the one tool, "required" forces it.
        assert body["tool_choice"] == "required"
        assert body["parallel_tool_calls"] is False
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert body["tool_choice"] == {"type": "function", "function": {"name": "MultiUser"}}
        assert body["stream_options"] == {"include_usage": True}


# -- how answers end ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
async def test_truncation_after_the_complete_items(name: str) -> None:
    run, _, _ = await serve_one(Script(items=USERS, truncate_after=CUT), name)
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.IncompleteOutputError)
    assert run.error.items_delivered == 2
    assert run.error.finish_reason == PROVIDERS[name].truncated
    assert run.stream.finish_reason == PROVIDERS[name].truncated


async def test_gemini_truncated_function_call_sends_no_call() -> None:
    """A call Gemini cuts off is never sent: the whole calls before it are the items."""
    script = Script(items=USERS, truncate_after=len(json.dumps(USERS[0])) * 2 + 5)
    run, _, _ = await serve_one(script, "gemini", mode="parallel_tools")
    assert run.items == EXPECTED[:2]
    assert run.stream.finish_reason == "MAX_TOKENS"


@pytest.mark.parametrize("name", ["gemini", "openai", "anthropic"])
async def test_parallel_truncation_between_calls_raises(name: str) -> None:
    script = Script(items=USERS, truncate_after=len(json.dumps(USERS[0])) * 2)
    run, _, _ = await serve_one(script, name, mode="parallel_tools")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.IncompleteOutputError)


@pytest.mark.parametrize("name", NEW)
async def test_mid_stream_error_after_the_complete_items(name: str) -> None:
    run, record, _ = await serve_one(Script(items=USERS, error_after=CUT), name)
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.StreamError)
    assert PROVIDERS[name].stream_error in str(run.error)
    # The error came as an event, not a cut connection (that would be APIConnectionError); the
    # client stops reading there, so whether the server sent the body's end first is a race.
    assert record.provider == PROVIDERS[name].route


@pytest.mark.parametrize("name", [*NEW, "anthropic"])
async def test_http_error_status_message_and_retry_after(name: str) -> None:
    p = PROVIDERS[name]
    script = Script(status=p.status, retry_after=2.5)
    run, _, server = await serve_one(script, name)
    assert run.items == []
    assert isinstance(run.error, multitask.APIStatusError)
    assert run.error.status_code == p.status
    assert p.status_error in str(run.error)
    assert len(server.requests) == 1  # max_retries=0
    if name == "gemini":  # Gemini puts the delay only in the body, as a RetryInfo detail
        assert run.error.body["error"]["details"][0]["retryDelay"] == "2.5s"
    assert run.error.retry_after == 2.5


async def test_gemini_retry_delay_from_the_error_body() -> None:
    run, _, _ = await serve_one(Script(status=429, retry_after=7), "gemini")
    assert isinstance(run.error, multitask.APIStatusError)
    assert run.error.retry_after == 7.0


async def test_gemini_error_type_is_its_status() -> None:
    run, _, _ = await serve_one(Script(status=429), "gemini")
    assert isinstance(run.error, multitask.APIStatusError)
    assert run.error.error_type == "RESOURCE_EXHAUSTED"


async def test_http_error_retried_then_streamed() -> None:
    scripts = [Script(status=503, retry_after=0.01), Script(items=USERS)]
    async with ScriptedModelServer(scripts) as server:
        async with client(server, "ollama", max_retries=1) as c:
            assert await c.extract(User, TEXT) == EXPECTED
    assert len(server.requests) == 2


@pytest.mark.parametrize("name", [*NEW, "openai", "anthropic"])
async def test_usage_numbers(name: str) -> None:
    quirks = frozenset({"usage_in_last_chunk"}) if name == "mistral" else frozenset()
    script = Script(items=USERS, usage=(123, 45), quirks=quirks)
    run, _, _ = await serve_one(script, name)
    assert run.error is None
    assert run.items == EXPECTED
    usage = run.stream.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (123, 45, 168)


async def test_finish_reasons_of_complete_answers() -> None:
    expected = {
        "openai-responses": "completed",
        "gemini": "STOP",
        "ollama": "stop",
        "azure": "tool_calls",
        "groq": "tool_calls",
    }
    for name, reason in expected.items():
        run, _, _ = await serve_one(Script(items=USERS[:2]), name)
        assert run.stream.finish_reason == reason, name


# -- refusals and content filters --------------------------------------------------------------


async def test_azure_content_filter_after_the_items_before_it() -> None:
    script = Script(items=USERS, truncate_after=CUT, finish_reason="content_filter")
    run, _, _ = await serve_one(script, "azure", mode="json_schema")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.ContentFilterError)
    assert run.stream.finish_reason == "content_filter"


async def test_azure_prompt_filter_is_a_content_filter_error() -> None:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
    }
    run, _, _ = await serve_one(Script(status=400, error_body=body), "azure")
    assert isinstance(run.error, multitask.ContentFilterError)


async def test_gemini_safety_stop_is_a_content_filter_error() -> None:
    script = Script(items=USERS, truncate_after=CUT, finish_reason="SAFETY")
    run, _, _ = await serve_one(script, "gemini")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.ContentFilterError)
    assert run.stream.finish_reason == "SAFETY"


@pytest.mark.parametrize("name", ["openai", "azure", "openai-responses"])
async def test_openai_refusal(name: str) -> None:
    words = "I'm sorry, I can't help with that request."
    run, _, _ = await serve_one(Script(items=USERS, refusal=words, chunk_size=5), name)
    assert run.items == []
    assert isinstance(run.error, multitask.RefusalError)
    assert not isinstance(run.error, multitask.ContentFilterError)
    assert run.error.refusal == words


async def test_anthropic_refusal_stop_reason() -> None:
    words = "This request was refused due to policy."
    run, _, _ = await serve_one(Script(items=USERS, refusal=words), "anthropic")
    assert run.items == []
    assert isinstance(run.error, multitask.RefusalError)
    assert run.error.refusal == words
    assert run.stream.finish_reason == "refusal"


async def test_anthropic_refusal_after_some_items() -> None:
    script = Script(items=USERS, truncate_after=CUT, finish_reason="refusal")
    run, _, _ = await serve_one(script, "anthropic")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.RefusalError)


async def test_responses_content_filter_is_incomplete() -> None:
    script = Script(items=USERS, truncate_after=CUT, finish_reason="content_filter")
    run, _, _ = await serve_one(script, "openai-responses")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.ContentFilterError)


async def test_responses_failed_is_a_stream_error() -> None:
    script = Script(items=USERS, truncate_after=CUT, finish_reason="failed")
    run, _, _ = await serve_one(script, "openai-responses")
    assert run.items == EXPECTED[:2]
    assert isinstance(run.error, multitask.StreamError)
    assert run.error.error_type == "server_error"


# -- OpenAI-compatible servers' quirks ---------------------------------------------------------

QUIRK_SETS = [
    {"no_index"},
    {"id_every_chunk"},
    {"no_index", "id_every_chunk"},
    {"whole_arguments"},
    {"keep_alive"},
    {"usage_in_last_chunk"},
    {"reasoning_content"},
    {"content_with_tool_calls_finish"},
    {"no_index", "id_every_chunk", "whole_arguments", "keep_alive", "usage_in_last_chunk"},
    {"reasoning_content", "keep_alive", "usage_in_last_chunk", "no_index", "id_every_chunk"},
]


@pytest.mark.parametrize("mode", ["tools", "parallel_tools", "json_schema"])
@pytest.mark.parametrize("quirks", QUIRK_SETS, ids=lambda q: "+".join(sorted(q)))
async def test_compatible_quirks_still_give_the_items(quirks: set[str], mode: str) -> None:
    parallel = mode == "parallel_tools"
    # Interleaved calls need an index or an id on every delta to be told apart.
    interleave = 2 if parallel and ("no_index" not in quirks or "id_every_chunk" in quirks) else 1
    items = PARALLEL if parallel else USERS
    script = Script(items=items, chunk_size=5, quirks=frozenset(quirks), interleave=interleave)
    run, record, _ = await serve_one(script, "groq", mode=mode)
    assert run.error is None
    if parallel:
        order, _ = completion_order(record, script)
        if "content_with_tool_calls_finish" not in quirks:
            assert run.items == [PARALLEL_EXPECTED[i] for i in order]
        assert sorted(run.items, key=lambda u: u.age) == PARALLEL_EXPECTED
    else:
        assert run.items == EXPECTED
    if "usage_in_last_chunk" in quirks:
        assert run.stream.usage is not None


async def test_usage_in_last_chunk_is_how_mistral_reports_usage() -> None:
    script = Script(items=USERS, quirks=frozenset({"usage_in_last_chunk"}), usage=(7, 8))
    run, record, _ = await serve_one(script, "mistral")
    assert "stream_options" not in record.body
    assert run.stream.usage is not None
    assert (run.stream.usage.input_tokens, run.stream.usage.output_tokens) == (7, 8)


async def test_reasoning_then_answer_streams_items_incrementally() -> None:
    script = Script(
        items=USERS, chunk_size=4, tokens_per_second=400, quirks=frozenset({"reasoning_content"})
    )
    run, _, _ = await serve_one(script, "vllm", mode="json_schema")
    assert run.items == EXPECTED
    assert run.completed[:-1] == [False] * (len(USERS) - 1)


# -- parallel tool calls -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "azure", "groq", "openai-responses"])
@pytest.mark.parametrize("interleave", [2, 3])
async def test_interleaved_parallel_calls_each_item_when_its_call_completes(
    name: str, interleave: int
) -> None:
    script = Script(items=PARALLEL, chunk_size=4, tokens_per_second=300, interleave=interleave)
    run, record, _ = await serve_one(script, name, mode="parallel_tools")
    assert run.error is None
    order, chunk_of = completion_order(record, script)
    assert order != list(range(len(PARALLEL)))  # interleaving changes the order
    # Every item exactly once, in the order the calls completed.
    assert run.items == [PARALLEL_EXPECTED[i] for i in order]
    for k, sent in enumerate(run.chunks):
        assert sent >= chunk_of[k] + 1  # not before its call's arguments were complete
        if k + 1 < len(chunk_of):
            assert sent <= chunk_of[k + 1]  # and before the next call completed
    assert run.completed[:-1] == [False] * (len(PARALLEL) - 1)
    if name == "openai-responses":
        assert record.body["tool_choice"] == "required"
        assert record.body["tools"][0]["name"] == "User"
    else:
        assert record.body["tool_choice"] == "required"
        assert record.body["parallel_tool_calls"] is True
        assert record.body["tools"][0]["function"]["name"] == "User"


async def test_interleaved_parallel_calls_cut_by_max_tokens() -> None:
    script = Script(items=PARALLEL, chunk_size=4, interleave=2)
    steps, _ = call_steps(script.calls, script, width=2)
    sent, completions = 0, []
    for step in steps:
        sent += len(step.piece or "")
        if step.done:
            completions.append((step.call, sent))
    order = [call for call, _ in completions]
    # Cut one character after the third call to complete: its item is the last to come out.
    truncated = Script(
        items=PARALLEL, chunk_size=4, interleave=2, truncate_after=completions[2][1] + 1
    )
    run, _, _ = await serve_one(truncated, "openai", mode="parallel_tools")
    assert run.items == [PARALLEL_EXPECTED[i] for i in order[:3]]
    assert isinstance(run.error, multitask.IncompleteOutputError)
    assert run.error.items_delivered == 3
    assert run.error.finish_reason == "length"


async def test_anthropic_parallel_tool_use_blocks() -> None:
    script = Script(items=PARALLEL, chunk_size=4, tokens_per_second=400)
    run, record, _ = await serve_one(script, "anthropic", mode="parallel_tools")
    assert run.error is None
    assert run.items == PARALLEL_EXPECTED  # blocks come one after another
    assert run.completed[:-1] == [False] * (len(PARALLEL) - 1)
    assert record.body["tool_choice"] == {"type": "any"}
    assert record.body["tools"][0]["name"] == "User"
    _, chunk_of = completion_order(record, script)
    assert len(chunk_of) == len(PARALLEL)
    for k, sent in enumerate(run.chunks):
        assert sent >= chunk_of[k] + 1


async def test_gemini_parallel_function_calls() -> None:
    run, record, _ = await serve_one(Script(items=PARALLEL), "gemini", mode="parallel_tools")
    assert run.error is None
    assert run.items == PARALLEL_EXPECTED
    assert record.body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"


async def test_responses_parallel_calls_in_sequence() -> None:
    script = Script(items=PARALLEL, chunk_size=4, tokens_per_second=400)
    run, _, _ = await serve_one(script, "openai-responses", mode="parallel_tools")
    assert run.items == PARALLEL_EXPECTED
    assert run.completed[:-1] == [False] * (len(PARALLEL) - 1)
