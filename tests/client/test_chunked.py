"""Long texts through the client: chunks with overlap, continuation after cuts, faults between.

Against the scripted server's reading model (it answers every match of a pattern in the text
it is sent, cut at the request's output limit), over real sockets, on every event loop.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from pydantic import BaseModel

import multitask
from multitask import ConfigurationError, IncompleteOutputError, Quote
from multitask._document import chunk_bounds
from multitask.testing import ReadingModel, RecordedRequest, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

PATTERN = r"Name\d+"
FAST = Script(chunk_size=64)


class Mention(BaseModel):
    quote: Quote


class Plain(BaseModel):
    quote: str


def document(mentions: int, filler: int = 80) -> str:
    """A text of `mentions` mentions (50 distinct names, each repeated), one sentence each."""
    pad = "x" * max(0, filler - 30)
    return " ".join(f"Here Name{i % 50} said {pad} things." for i in range(mentions))


def expected(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(PATTERN, text)]


def client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:reader", base_url=server.url + "/v1", api_key="k", max_retries=3, **options
    )


async def drain(stream: multitask.ItemStream[Mention], got: list[Mention]) -> None:
    """Read the stream into `got` (what came before an error stays there)."""
    async for m in stream:
        got.append(m)


async def read_all(stream: multitask.ItemStream[Mention]) -> list[Mention]:
    return [m async for m in stream]


async def test_chunks_with_overlap_give_every_mention_once_in_order() -> None:
    text = document(2000, filler=110)
    assert len(text) > 200_000
    model = ReadingModel(PATTERN, script=FAST)
    async with ScriptedModelServer(model) as server:
        stream = client(server).extract_stream(Mention, text, chunk_chars=20_000, overlap_chars=400)
        got = await read_all(stream)
    spans = [(m.quote.start, m.quote.end) for m in got]
    assert spans == expected(text)
    assert all(text[m.quote.start : m.quote.end] == m.quote for m in got)  # type: ignore[misc]
    assert len(server.requests) == len(chunk_bounds(text, 20_000)) > 10
    assert stream.info.items == 2000
    # The overlap: each request after the first shows the text before it as context.
    assert all(len(r.body["messages"]) == 3 for r in server.requests[1:])


async def test_continuation_after_cuts_gives_all_300() -> None:
    text = document(300, filler=40)
    model = ReadingModel(PATTERN, script=FAST)
    async with ScriptedModelServer(model) as server:
        stream = client(server, max_tokens=200).extract_stream(
            Mention, text, max_continuations=100, overlap_chars=60
        )
        got = await read_all(stream)
    assert [(m.quote.start, m.quote.end) for m in got] == expected(text)
    assert len(server.requests) > 5  # each answer was cut, and continued
    assert stream.finish_reason in ("tool_calls", "stop")
    # A continuation is sent the text from just after the last item, and no context.
    assert all(len(r.body["messages"]) == 2 for r in server.requests)


async def test_a_model_that_also_reads_the_context_gives_each_item_once() -> None:
    # It ignores the instruction and extracts from the context message too (the end of the
    # chunk before), and its answers are cut: chunks, overlap and continuations at once.
    text = " ".join(f"Here Name{i} said things." for i in range(600))
    model = ReadingModel(PATTERN, read="all", script=FAST)
    async with ScriptedModelServer(model) as server:
        stream = client(server, max_tokens=250).extract_stream(
            Mention, text, chunk_chars=3000, overlap_chars=300, max_continuations=100
        )
        got = await read_all(stream)
    assert [(m.quote.start, m.quote.end) for m in got] == expected(text)
    assert any(len(r.body["messages"]) == 3 for r in server.requests)  # it was shown context


async def test_no_continuation_keeps_todays_error() -> None:
    text = document(300, filler=40)
    async with ScriptedModelServer(ReadingModel(PATTERN, script=FAST)) as server:
        stream = client(server, max_tokens=200).extract_stream(Mention, text, chunk_chars=5000)
        got: list[Mention] = []
        with pytest.raises(IncompleteOutputError, match="raise max_tokens") as caught:
            await drain(stream, got)
    assert caught.value.items_delivered == len(got) > 0
    assert len(server.requests) == 1


async def test_chunks_continuation_and_faults_still_give_every_item_once() -> None:
    text = document(400, filler=60)
    model = ReadingModel(PATTERN, script=FAST)
    faults: dict[int, Any] = {2: {"status": 503}, 4: {"drop_after": 300}, 7: {"drop_after": 50}}

    def answer(request: RecordedRequest) -> Script:
        script = model(request)
        fault = faults.pop(len(model.texts), None)
        return script if fault is None else dataclasses.replace(script, **fault)

    async with ScriptedModelServer(answer) as server:
        stream = client(server, max_tokens=300).extract_stream(
            Mention, text, chunk_chars=6000, overlap_chars=100, max_continuations=50
        )
        got = await read_all(stream)
    assert [(m.quote.start, m.quote.end) for m in got] == expected(text)
    assert not faults  # every fault was met
    assert stream.info.attempts == len(model.texts) == len(server.requests)


async def test_a_model_that_makes_no_progress_ends_in_bounded_requests() -> None:
    # Its output limit is too small for one item: every answer is cut before the first.
    text = document(50, filler=40)
    async with ScriptedModelServer(ReadingModel(PATTERN, script=FAST)) as server:
        stream = client(server, max_tokens=3).extract_stream(Mention, text, max_continuations=1000)
        got: list[Mention] = []
        with pytest.raises(IncompleteOutputError, match="no progress") as caught:
            await drain(stream, got)
    assert got == []
    assert caught.value.items_delivered == 0
    assert len(server.requests) == 1


async def test_a_continuation_that_brings_nothing_new_ends_it() -> None:
    # The first answer is cut after some items; the next is cut before its first item.
    text = document(200, filler=40)
    model = ReadingModel(PATTERN, script=FAST)

    def answer(request: RecordedRequest) -> Script:
        script = model(request)
        script.truncate_after = 450 if len(model.texts) == 1 else 10
        return script

    async with ScriptedModelServer(answer) as server:
        stream = client(server).extract_stream(Mention, text, max_continuations=10)
        got: list[Mention] = []
        with pytest.raises(IncompleteOutputError, match="no progress") as caught:
            await drain(stream, got)
    assert [(m.quote.start, m.quote.end) for m in got] == expected(text)[: len(got)]
    assert caught.value.items_delivered == len(got) > 0
    assert len(server.requests) == 2


async def test_chunks_without_a_quote_field_read_each_chunk() -> None:
    text = document(100, filler=40)
    async with ScriptedModelServer(ReadingModel(PATTERN, script=FAST)) as server:
        got = await client(server).extract(Plain, text, chunk_chars=1000)
        assert [p.quote for p in got] == re.findall(PATTERN, text)
        for option in ({"overlap_chars": 10}, {"max_continuations": 1}):
            with pytest.raises(ConfigurationError, match="needs the item type to have a"):
                client(server).extract_stream(Plain, text, chunk_chars=1000, **option)


async def test_extract_events_reads_one_answer_and_says_so() -> None:
    async with ScriptedModelServer(ReadingModel(PATTERN)) as server:
        c = client(server, chunk_chars=100)
        with pytest.raises(ConfigurationError, match="extract_events reads a text in one"):
            c.extract_events(Mention, "Name1")


async def test_bad_chunk_options_are_one_line_errors() -> None:
    async with ScriptedModelServer(ReadingModel(PATTERN)) as server:
        with pytest.raises(ConfigurationError, match="chunk_chars must be at least 1"):
            client(server).extract_stream(Mention, "Name1", chunk_chars=0)
        with pytest.raises(ConfigurationError, match="option 'chunk_chars' must be"):
            client(server).extract_stream(Mention, "Name1", chunk_chars="big")
