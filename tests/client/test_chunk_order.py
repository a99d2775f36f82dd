"""Chunks read side by side (`chunk_concurrency`) and the order items come in (`order`).

Against the scripted server's reading model over real sockets, on every event loop.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import multitask
from multitask import ConfigurationError, ProviderError, Quote
from multitask.testing import ReadingModel, RecordedRequest, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

PATTERN = r"Name\d+"
FAST = Script(chunk_size=64)


class Mention(BaseModel):
    quote: Quote


def document(mentions: int, filler: int = 40) -> str:
    pad = "x" * max(0, filler - 30)
    return " ".join(f"Here Name{i % 50} said {pad} things." for i in range(mentions))


def expected(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(PATTERN, text)]


def spans(items: list[Mention]) -> list[tuple[int, int]]:
    return [(m.quote.start, m.quote.end) for m in items]


def client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:reader", base_url=server.url + "/v1", api_key="k", max_retries=3, **options
    )


class Busiest:
    """A script source that answers as `model` does and notes the most requests open at once."""

    def __init__(self, model: Any, server_box: list[ScriptedModelServer]) -> None:
        self.model = model
        self.box = server_box
        self.most = 0

    def __call__(self, request: RecordedRequest) -> Script:
        open_now = sum(not r.completed for r in self.box[0].requests)
        self.most = max(self.most, open_now)
        script: Script = self.model(request)
        return dataclasses.replace(script, tokens_per_second=400.0)


async def all_ended(server: ScriptedModelServer, seconds: float = 5.0) -> None:
    """Wait until every request the server saw completed or saw its client go (polling: the
    server runs on another thread's loop)."""

    def ended() -> bool:
        return all(r.completed or r.client_disconnected.is_set() for r in server.requests)

    for _ in range(int(seconds / 0.01)):
        if ended():
            return
        await anyio.sleep(0.01)
    assert ended(), "a request neither completed nor saw its client go"


def reversed_answers(model: ReadingModel) -> Any:
    """A model that lists what it finds backwards (last mention first), as models grouping
    items by kind go back in the text."""

    def answer(request: RecordedRequest) -> Script:
        script = model(request)
        return dataclasses.replace(script, items=script.items[::-1])

    return answer


async def test_side_by_side_chunks_give_every_item_once_in_document_order() -> None:
    text = document(600)
    box: list[ScriptedModelServer] = []
    source = Busiest(ReadingModel(PATTERN, script=FAST), box)
    async with ScriptedModelServer(source) as server:
        box.append(server)
        c = client(server)
        async with c.extract_stream(
            Mention, text, chunk_chars=2000, overlap_chars=100, chunk_concurrency=4
        ) as stream:
            got = [m async for m in stream]
    assert spans(got) == expected(text)
    assert stream.info.items == 600
    assert source.most >= 2  # chunks were read side by side


async def test_arrival_order_gives_every_item_once() -> None:
    text = document(600)
    box: list[ScriptedModelServer] = []
    source = Busiest(ReadingModel(PATTERN, script=FAST), box)
    async with ScriptedModelServer(source) as server:
        box.append(server)
        got = await client(server).extract(
            Mention, text, chunk_chars=2000, overlap_chars=100, chunk_concurrency=3, order="arrival"
        )
    assert sorted(spans(got)) == expected(text)
    assert source.most >= 2


async def test_document_order_holds_when_the_model_answers_backwards() -> None:
    # No cut: each chunk's answer is released, sorted, when it ends.
    text = document(200)
    model = ReadingModel(PATTERN, script=FAST)
    async with ScriptedModelServer(reversed_answers(model)) as server:
        got = await client(server).extract(Mention, text, chunk_chars=3000, overlap_chars=50)
        arrival = await client(server).extract(
            Mention, text, chunk_chars=3000, overlap_chars=50, order="arrival"
        )
    assert spans(got) == expected(text)
    assert sorted(spans(arrival)) == expected(text) != spans(arrival)


async def test_document_order_holds_through_cuts_of_backward_answers() -> None:
    # Cut answers that go backwards: the chunk is re-read in halves, and what was read
    # waits until no half can bring an item before it.
    text = document(120)
    model = ReadingModel(PATTERN, script=FAST)
    async with ScriptedModelServer(reversed_answers(model)) as server:
        for concurrency in (1, 3):
            async with client(server, max_tokens=120).extract_stream(
                Mention,
                text,
                chunk_chars=1500,
                overlap_chars=50,
                max_continuations=50,
                chunk_concurrency=concurrency,
            ) as stream:
                got = [m async for m in stream]
            assert spans(got) == expected(text)


async def test_a_failed_chunk_comes_after_every_item_before_it() -> None:
    text = " ".join(f"Here Name{i} said xxxxxxxxxx things." for i in range(400))  # no repeats
    model = ReadingModel(PATTERN, script=FAST)
    bad = text.index("Name170 ")  # inside a later chunk
    failed_at: list[int] = []

    def answer(request: RecordedRequest) -> Script:
        script = model(request)
        start = text.find(model.texts[-1])
        if start <= bad < start + len(model.texts[-1]):
            failed_at.append(start)
            return dataclasses.replace(script, status=400)  # not retried
        return script

    async with ScriptedModelServer(answer) as server:
        got: list[Mention] = []
        with pytest.raises(ProviderError, match="400"):  # noqa: PT012
            async with client(server).extract_stream(
                Mention, text, chunk_chars=1200, chunk_concurrency=4
            ) as stream:
                async for m in stream:
                    got.append(m)
    # Every chunk before the failed one, whole and in order; nothing of it or after it.
    assert failed_at
    assert spans(got) == [s for s in expected(text) if s[0] < failed_at[0]]


async def test_breaking_out_stops_the_chunks_read_ahead() -> None:
    text = document(800)
    model = ReadingModel(PATTERN, script=dataclasses.replace(FAST, tokens_per_second=200.0))
    async with ScriptedModelServer(model) as server:
        async with client(server).extract_stream(
            Mention, text, chunk_chars=1500, chunk_concurrency=4
        ) as stream:
            async for _ in stream:
                break
        started = len(server.requests)
        await all_ended(server)
        await anyio.sleep(0.2)
        assert len(server.requests) == started  # nothing more was started after the block
    assert 1 <= started <= 5  # the first chunk and at most the next four


async def test_side_by_side_needs_a_block() -> None:
    async with ScriptedModelServer(ReadingModel(PATTERN)) as server:
        stream = client(server).extract_stream(
            Mention, document(10), chunk_chars=100, chunk_concurrency=2
        )
        with pytest.raises(ConfigurationError, match="use `async with"):
            async for _ in stream:
                pass
        with pytest.raises(ConfigurationError, match="chunk_concurrency must be at least 1"):
            client(server).extract_stream(Mention, "Name1", chunk_chars=100, chunk_concurrency=0)
        with pytest.raises(ConfigurationError, match="option 'order' must be"):
            client(server).extract_stream(Mention, "Name1", chunk_chars=100, order="sorted")


async def test_a_timeout_or_an_error_of_the_caller_leaves_the_block_as_itself() -> None:
    text = document(800)
    model = ReadingModel(PATTERN, script=dataclasses.replace(FAST, tokens_per_second=100.0))
    async with ScriptedModelServer(model) as server:
        c = client(server)
        got: list[Mention] = []
        with anyio.move_on_after(0.5) as scope:
            async with c.extract_stream(
                Mention, text, chunk_chars=1500, chunk_concurrency=3
            ) as stream:
                async for m in stream:
                    got.append(m)
        assert scope.cancelled_caught
        assert spans(got) == expected(text)[: len(got)]
        with pytest.raises(KeyError, match="mine"):  # noqa: PT012  (not an ExceptionGroup)
            async with c.extract_stream(
                Mention, text, chunk_chars=1500, chunk_concurrency=3
            ) as stream:
                async for _ in stream:
                    raise KeyError("mine")
        await all_ended(server)


class Plain(BaseModel):
    name: str


class Named(BaseModel):
    name: str
    quote: Quote


async def test_a_key_tells_apart_items_without_a_quote_read_twice_in_an_overlap() -> None:
    text = " ".join(f"Here Name{i} said things." for i in range(300))  # every name once
    names = re.findall(PATTERN, text)
    model = ReadingModel(PATTERN, item=lambda m: {"name": m[0]}, script=FAST)
    async with ScriptedModelServer(model) as server:
        c = client(server)
        with pytest.raises(ConfigurationError, match="needs the item type to have a"):
            c.extract_stream(Plain, text, chunk_chars=1000, overlap_chars=100)
        got = await c.extract(
            Plain, text, chunk_chars=1000, overlap_chars=100, key=lambda p: p.name
        )
        assert [p.name for p in got] == names  # each once, though overlaps were read twice
        read = sum(len(re.findall(PATTERN, t)) for t in model.texts)
        assert read > len(names)  # the model did answer some names twice
        with pytest.raises(ConfigurationError, match="option 'key' must be a function"):
            c.extract_stream(Plain, text, key="name")


async def test_a_key_alone_keeps_one_item_per_key() -> None:
    # One request (no chunks): the key still drops the items that came before by it.
    text = "Name1 met Name2, then Name1 again, and Name3 and Name2."
    model = ReadingModel(PATTERN, item=lambda m: {"name": m[0], "quote": m[0]}, script=FAST)
    async with ScriptedModelServer(model) as server:
        got = await client(server).extract(Named, text, key=lambda n: n.name)
        assert [(n.name, n.quote.start) for n in got] == [
            ("Name1", 0),
            ("Name2", 10),
            ("Name3", 39),
        ]
        assert len(server.requests) == 1
        system = server.requests[0].body["messages"][0]["content"]
        assert "part of a longer text" not in system
