"""multitask against llama.cpp's real `llama-server`, running a tiny random model.

The server (tests/_llama_server.py) runs the GGUF model of tests/_llama_model.py: random
weights and a few hand-set ones, so that with the server's grammar every answer is valid JSON
of the schema, deterministic at temperature 0, with **one item per line of the text**. The
tests compare multitask's items and usage with what the official `openai` SDK reads from the
same request, and check streaming, truncation, cancellation and concurrency on the server's
own counters (`/slots`, `/metrics`). Every async test runs on each event loop of conftest's
`anyio_backend`.

Without the binary the tests are skipped with a message saying how to build it
(`bash .ci/build-llama-server`); with MULTITASK_REQUIRE_LLAMA=1 they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic import BaseModel

import multitask
import multitask.providers
from _llama_server import LlamaServer, running_llama_server

pytestmark = pytest.mark.anyio

TOOL_CHOICE_IGNORED = "Wrong type supplied for parameter 'tool_choice'"
SEED = 7
#: The fewest tokens an item takes: `{"name":"x","age":1},`.
ITEM_TOKENS = len('{"name":"x","age":1},')


class User(BaseModel):
    name: str
    age: int


def text(lines: int, start: int = 0) -> str:
    """A text of `lines` lines; the model answers with as many items."""
    return "\n".join(f"Person {i} is {20 + i} years old." for i in range(start, start + lines))


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with running_llama_server(tmp_path_factory.mktemp("llama")) as server:
        yield server


def make_client(llama: LlamaServer, preset: str = "llamacpp", **options: Any) -> multitask.Client:
    """A client of the server through `preset`, at temperature 0 with a fixed seed."""
    options.setdefault("temperature", 0.0)
    options.setdefault("max_retries", 0)
    options.setdefault("extra_body", {"seed": SEED})
    api_key = "x" if preset == "openai" else None
    return multitask.Client(f"{preset}:tiny", base_url=llama.base_url, api_key=api_key, **options)


def recording(client: multitask.Client) -> list[dict[str, Any]]:
    """The bodies of the requests `client` builds, as it builds them."""
    bodies: list[dict[str, Any]] = []
    build = client.provider.request

    def request(spec: multitask.providers.RequestSpec) -> Any:
        http = build(spec)
        bodies.append(dict(http.json))
        return http

    client.provider.request = request  # type: ignore[method-assign]
    return bodies


@dataclass
class SDKAnswer:
    """What the official SDK reads from a streamed request."""

    text: str  # the tool call's arguments, or else the content
    tool_call: bool
    usage: Any
    finish_reason: str

    @property
    def items(self) -> list[User]:
        return [User.model_validate(task) for task in json.loads(self.text)["tasks"]]


async def sdk_answer(llama: LlamaServer, body: dict[str, Any]) -> SDKAnswer:
    from openai import AsyncOpenAI

    arguments, content, usage, finish = "", "", None, ""
    async with AsyncOpenAI(base_url=llama.base_url, api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(**body)
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    arguments += call.function.arguments or ""  # type: ignore[union-attr]
                content += choice.delta.content or ""
    tool_call = bool(arguments)
    return SDKAnswer(arguments if tool_call else content, tool_call, usage, finish)


async def read_into(stream: multitask.ItemStream[User], items: list[User]) -> None:
    """Read `stream` to its end (or its error), appending each item to `items`."""
    async with stream:
        async for item in stream:
            items.append(item)


async def idle(llama: LlamaServer) -> float:
    return await anyio.to_thread.run_sync(llama.wait_idle)


# -- the same answer as the official SDK ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
@pytest.mark.parametrize("preset", ["llamacpp", "openai"])
async def test_items_and_usage_equal_the_sdks(llama: LlamaServer, preset: str, mode: str) -> None:
    """multitask's items and usage are what the SDK reads from the very same request."""
    log_start = len(llama.log_text())
    ignored = preset == "openai" and mode == "tools"  # see the end
    async with make_client(llama, preset, mode=mode) as client:
        bodies = recording(client)
        items: list[User] = []
        users = client.extract_stream(User, text(3))
        with anyio.fail_after(60), contextlib.ExitStack() as expect:
            if ignored:
                expect.enter_context(pytest.raises(multitask.MalformedOutputError))
            await read_into(users, items)
    [body] = bodies
    assert body["temperature"] == 0.0
    assert body["seed"] == SEED
    with anyio.fail_after(60):
        sdk = await sdk_answer(llama, body)
    assert users.usage is not None
    assert sdk.usage is not None
    assert (users.usage.input_tokens, users.usage.output_tokens) == (
        sdk.usage.prompt_tokens,
        sdk.usage.completion_tokens,
    )
    assert users.finish_reason == sdk.finish_reason
    log = await anyio.to_thread.run_sync(llama.wait_log, log_start, "stop processing", 2)

    if mode == "json_schema":
        assert "tool_choice" not in body
        assert TOOL_CHOICE_IGNORED not in log
    elif preset == "llamacpp":
        assert body["tool_choice"] == "required"
        assert TOOL_CHOICE_IGNORED not in log  # the tool call is forced
        assert sdk.tool_call
    if not ignored:
        assert items == sdk.items
        assert len(items) == 3  # one per line
        assert users.usage.output_tokens > 3 * ITEM_TOKENS
        assert users.finish_reason == ("tool_calls" if mode == "tools" else "stop")
        return
    # OpenAI's own tool_choice object: llama-server ignores it (and says so, for both
    # requests), so nothing forces the call, and the tiny model answers without one. Both
    # clients read the same non-answer; this is why the llamacpp preset sends "required".
    assert body["tool_choice"] == {"type": "function", "function": {"name": "MultiUser"}}
    assert log.count(TOOL_CHOICE_IGNORED) == 2
    assert not sdk.tool_call
    assert items == []
    assert users.finish_reason == "stop"


# -- streaming -------------------------------------------------------------------------------------


async def test_items_arrive_while_the_server_is_generating(llama: LlamaServer) -> None:
    """The first item is out while the server's slot is still decoding, far from the end."""
    await idle(llama)
    async with make_client(llama, max_tokens=1500) as client:
        start = time.monotonic()
        arrivals: list[float] = []
        busy: list[dict[str, Any]] = []
        with anyio.fail_after(60):
            async with client.extract_stream(User, text(30)) as users:
                async for _ in users:
                    arrivals.append(time.monotonic() - start)
                    if len(arrivals) == 1:
                        slots = await anyio.to_thread.run_sync(llama.slots)
                        busy = [slot for slot in slots if slot["is_processing"]]
        end = time.monotonic() - start
    assert users.finish_reason == "stop"
    assert len(arrivals) == 30
    assert users.usage is not None
    total = users.usage.output_tokens
    assert total > 30 * ITEM_TOKENS
    # At the first item, the slot had decoded a small part of the answer.
    [slot] = busy
    decoded = slot["next_token"][0]["n_decoded"]
    assert 0 < decoded < total / 4, (decoded, total)
    # And the items kept coming for the rest of the answer.
    assert arrivals[0] < end / 4, (arrivals[0], end)
    assert arrivals == sorted(arrivals)
    assert arrivals[len(arrivals) // 2] > 2 * arrivals[0]


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
async def test_a_max_tokens_cut_raises_after_the_complete_items(
    llama: LlamaServer, mode: str
) -> None:
    async with make_client(llama, mode=mode) as client:
        with anyio.fail_after(60):
            async with client.extract_stream(User, text(8)) as whole:
                full = [user async for user in whole]
        assert len(full) == 8
        assert whole.usage is not None
        cut = whole.usage.output_tokens // 2
        items: list[User] = []
        users = client.extract_stream(User, text(8), max_tokens=cut)
        with anyio.fail_after(60), pytest.raises(multitask.IncompleteOutputError) as caught:
            await read_into(users, items)
    assert 0 < len(items) < len(full)
    assert items == full[: len(items)]
    assert caught.value.items_delivered == len(items)
    assert caught.value.finish_reason == users.finish_reason == "length"
    assert users.usage is not None
    assert users.usage.output_tokens == cut


async def test_breaking_out_stops_the_generation(llama: LlamaServer) -> None:
    """Leaving after the first item cancels the server's work: its slot goes idle at once,
    having predicted a fraction of the 60-item answer (which takes more than 1300 tokens)."""
    await idle(llama)
    before = await anyio.to_thread.run_sync(llama.metrics)
    async with make_client(llama, max_tokens=2000) as client:
        with anyio.fail_after(60):
            async with client.extract_stream(User, text(60)) as users:
                first = await anext(users)
        assert isinstance(first, User)
        stopped = await idle(llama)
    after = await anyio.to_thread.run_sync(llama.metrics)
    predicted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    full = 60 * ITEM_TOKENS
    assert ITEM_TOKENS <= predicted < full / 4, predicted
    assert stopped < 1.0, stopped


# -- many at once ----------------------------------------------------------------------------------


async def test_twenty_concurrent_streams_give_the_items_of_one(llama: LlamaServer) -> None:
    """20 streams of one client at once (more than the server's slots: the rest queue), over
    five texts: each gets exactly the items and usage that stream alone got."""
    texts = [text(2 + k, start=10 * k) for k in range(5)]
    async with make_client(llama) as client:
        alone: list[tuple[list[User], Any]] = []
        with anyio.fail_after(60):
            for t in texts:
                async with client.extract_stream(User, t) as users:
                    alone.append(([user async for user in users], users.usage))
        results: dict[int, tuple[list[User], Any]] = {}

        async def one(i: int) -> None:
            async with client.extract_stream(User, texts[i % 5]) as users:
                items = [user async for user in users]
            results[i] = (items, users.usage)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
    assert [len(items) for items, _ in alone] == [2, 3, 4, 5, 6]
    for i in range(20):
        items, usage = results[i]
        assert items == alone[i % 5][0], i
        assert (usage.input_tokens, usage.output_tokens) == (
            alone[i % 5][1].input_tokens,
            alone[i % 5][1].output_tokens,
        ), i


async def test_extract_many_over_several_documents(llama: LlamaServer) -> None:
    documents = [text(1 + k, start=5 * k) for k in range(5)]
    async with make_client(llama) as client:
        with anyio.fail_after(60):
            one_by_one = [await client.extract(User, d) for d in documents]
        items: dict[int, list[User]] = {i: [] for i in range(5)}
        done: dict[int, multitask.Usage | None] = {}
        with anyio.fail_after(120):
            async with client.extract_many(User, documents, max_concurrency=3) as results:
                async for r in results:
                    assert r.ok, r.error
                    if r.done:
                        done[r.index] = r.usage
                        assert r.items == len(items[r.index])
                    else:
                        assert r.position == len(items[r.index])
                        items[r.index].append(r.item)
    assert [len(x) for x in one_by_one] == [1, 2, 3, 4, 5]
    assert [items[i] for i in range(5)] == one_by_one
    assert sorted(done) == list(range(5))
    assert all(usage is not None and usage.output_tokens > 0 for usage in done.values())


def test_the_model_file_is_small_and_the_same_every_time(tmp_path: Path) -> None:
    """The model is rewritten identically (a fixed seed): the answers cannot drift."""
    pytest.importorskip("gguf")
    from _llama_model import write_tiny_llama

    first = write_tiny_llama(tmp_path / "a.gguf").read_bytes()
    second = write_tiny_llama(tmp_path / "b.gguf").read_bytes()
    assert first == second
    assert len(first) < 1_000_000
