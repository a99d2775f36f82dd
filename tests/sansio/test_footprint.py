"""What the sans-IO pieces of one stream leave for the garbage collector to walk.

A fan-out keeps hundreds of streams in flight, and CPython's full collection walks every
object the collector tracks; the loop stalls for as long as that takes (see `test_soak`).
These tests count the tracked objects each piece holds in the states a stream spends its
time in, so that a container added per stream shows up here rather than as a longer pause.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import ijson  # type: ignore[import-untyped]
import pytest
from ijson.utils import sendable_list  # type: ignore[import-untyped]
from pydantic import BaseModel, TypeAdapter

import multitask
from multitask._validation import ItemValidator
from multitask.lowlevel import SSEDecoder, TaskParser
from multitask.testing import Script, ScriptedModelServer

COPIES = 100


class User(BaseModel):
    name: str
    age: int


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collection while counting: one would untrack or free objects under the count."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tracked_per_copy(make: Callable[[], Any]) -> float:
    """The objects the collector tracks that each of `COPIES` calls of `make` leaves alive.

    The least of five counts: `gc.get_objects()` sees the whole process, and a thread an
    earlier test left running (Ray's, a server's) may allocate now and then while one runs."""
    kept: list[Any] = [make()]  # first: whatever is made once and cached
    counts = []
    for _ in range(5):
        with collector_paused():
            before = len(gc.get_objects())
            for _ in range(COPIES):
                kept.append(make())
            after = len(gc.get_objects())
        counts.append((after - before) / COPIES)
    return min(counts)


def fed(parser: TaskParser, *pieces: str) -> TaskParser:
    for piece in pieces:
        parser.feed(piece)
    return parser


def ijson_state(*pieces: str) -> Any:
    """ijson's own event parser, fed as a `TaskParser` feeds it (its events taken after each
    piece): what the parser cannot do without."""
    events = sendable_list()
    coro = ijson.basic_parse_coro(events, use_float=True)
    for piece in pieces:
        coro.send(piece.encode())
        events.clear()
    return coro


def test_sse_decoder_holds_a_list_only_while_an_event_is_being_read() -> None:
    assert tracked_per_copy(SSEDecoder) == 1

    def reading() -> SSEDecoder:
        decoder = SSEDecoder()
        assert decoder.feed(b"event: x\ndata: 1\n") == []  # the general path, data pending
        return decoder

    def between_events() -> SSEDecoder:
        decoder = SSEDecoder()
        assert len(decoder.feed(b"event: x\ndata: 1\n\nid: 2\n")) == 1
        return decoder

    assert tracked_per_copy(reading) == 2  # the data lines
    assert tracked_per_copy(between_events) == 1


def test_task_parser_before_its_answer_is_itself() -> None:
    assert tracked_per_copy(TaskParser) == 1


def test_task_parser_keeps_prose_only_until_the_json_starts() -> None:
    prose = "Here are the users"
    assert tracked_per_copy(lambda: fed(TaskParser(), prose)) == 2  # and its Preamble
    opened = [prose + ":\n", '{"tasks": [{"name": "A']
    json_pieces = ['{"tasks": [{"name": "A']
    ijson_only = tracked_per_copy(lambda: ijson_state(*json_pieces))
    # Itself, ijson's state, and the stack of the item being built: the preamble is gone.
    assert tracked_per_copy(lambda: fed(TaskParser(), *opened)) == 1 + ijson_only + 1


def test_task_parser_mid_answer_adds_only_itself_and_its_stack_to_ijson() -> None:
    first = '{"tasks": [{"name": "Ada", "age": 36}, '
    pending = '{"name": "Al'  # buffered: nothing in it can finish an item
    parser = fed(TaskParser(scalar_items=False), first)
    assert parser.items_emitted == 1
    ijson_only = tracked_per_copy(lambda: ijson_state(first))
    assert tracked_per_copy(lambda: fed(TaskParser(scalar_items=False), first, pending)) == (
        1 + ijson_only + 1
    )
    # Pieces buffered together are one list until they are handed on.
    two = [first, pending, 'an", "ag']
    assert tracked_per_copy(lambda: fed(TaskParser(scalar_items=False), *two)) == (3 + ijson_only)


def test_item_validator_is_itself_and_its_skipped_list() -> None:
    adapter = TypeAdapter(User)
    assert tracked_per_copy(lambda: ItemValidator(adapter)) == 2


# -- a whole stream, over HTTP -------------------------------------------------------------------

_CLIENT_FILES = (os.path.dirname(multitask.__file__), os.path.dirname(httpx2.__file__))
_SERVER_FILES = os.path.join(os.path.dirname(multitask.__file__), "testing")


def _clients(garbage: list[Any]) -> list[str]:
    """What in `garbage` belongs to the client (multitask or httpx), not the scripted server."""
    out: list[str] = []
    for obj in garbage:
        codes = (getattr(obj, name, None) for name in ("f_code", "cr_code", "ag_code", "__code__"))
        code = next((c for c in codes if c is not None), None)
        if code is not None:  # a frame, coroutine or function: by the file its code is in
            where = code.co_filename
            mine = where.startswith(_CLIENT_FILES) and not where.startswith(_SERVER_FILES)
        else:
            module = type(obj).__module__
            mine = module.startswith(("multitask.", "httpx2.")) and "testing" not in module
        if mine:
            out.append(type(obj).__qualname__)
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_finished_stream_leaves_the_collector_nothing_of_the_clients(
    provider: str,
) -> None:
    """Everything a stream made is freed by reference counting once it ends, read to the end
    or left early: what is left in cycles waits for a full collection, which in a fan-out of
    hundreds of streams is what stalls the loop longest."""
    users = [{"name": f"user{i}", "age": 20 + i} for i in range(6)]
    async with (
        ScriptedModelServer(Script(items=users, chunk_size=4)) as server,
        multitask.Client(
            f"{provider}:m", base_url=getattr(server, f"{provider}_base_url"), api_key="k"
        ) as client,
    ):
        await client.extract(User, "warm up")  # the connection, and what is cached once
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds lands in gc.garbage
        try:
            for _ in range(5):
                assert len(await client.extract(User, "text")) == 6
            async with client.extract_stream(User, "text") as stream:
                async for _user in stream:
                    break
            gc.collect()
            assert gc.garbage, "the scripted server's cycles should be found: is this working?"
            assert _clients(gc.garbage) == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
