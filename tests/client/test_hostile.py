"""A hostile server, over real HTTP: every way it can misbehave ends in a clear `MultitaskError`,
in bounded time and bounded memory, after the valid items that came before it.

`HostileServer` answers with raw bytes: OpenAI chat-completions events built here by hand, or
anything else (HTML, JSON, gzip, bombs, drips, silence). Each test checks the exception's type
and message, the items delivered before it, a loose upper bound on the time it took and, for
the large cases, tracemalloc's peak against the configured caps rather than what was sent.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import multitask
import multitask.lowlevel
import multitask.providers
from _exception_text import exception_text
from multitask.testing import HostileServer, Reply
from multitask.testing._http import Request

pytestmark = pytest.mark.anyio

KEY = "sk-hostile-0123456789abcdef"
MiB = 1024 * 1024
SSE = (("content-type", "text/event-stream"),)
GZIP_SSE = (("content-type", "text/event-stream"), ("content-encoding", "gzip"))


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user{i}", "age": 20 + i} for i in range(3)]
EXPECTED = [User(**u) for u in USERS]


# -- the OpenAI chat-completions stream, by hand ------------------------------------------------


def event(arguments: str) -> bytes:
    """One chat-completion chunk carrying a fragment of the tool call's arguments."""
    call = {"index": 0, "function": {"arguments": arguments}}
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


FINISH = (
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n'
)


def events(text: str, size: int = 16) -> list[bytes]:
    """`text` as argument deltas of `size` characters."""
    return [event(text[i : i + size]) for i in range(0, len(text), size)]


def opening(items: list[dict[str, Any]] = USERS) -> str:
    """The answer's start, up to and including the items and the comma after them."""
    return '{"tasks":[' + "".join(json.dumps(item) + "," for item in items)


def stream(items: list[dict[str, Any]] = USERS, size: int = 16) -> list[bytes]:
    """A whole, valid answer stream."""
    return [*events(json.dumps({"tasks": items}), size), FINISH]


#: The answer up to its first two items, complete; then the rest of it.
TWO = b"".join(events(opening(USERS[:2])))
REST = b"".join(events(json.dumps(USERS[2]) + "]}")) + FINISH


def gzipped(pieces: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
    """gzip, flushed after each piece so that each can be decoded as soon as it arrives."""
    compressor = zlib.compressobj(wbits=31)
    for piece in pieces:
        yield compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


def bomb(unit: bytes, head: bytes = b"") -> Iterator[bytes]:
    """An endless gzip body: `head`, then `unit` repeated forever, at about 1000:1.

    Each MiB of `unit`s is compressed on its own (a full flush resets the compressor), so its
    kilobyte of gzip is computed once and sent again and again: 64 KiB pieces that inflate to
    64 MiB each. No trailer is ever sent; the client must stop first.
    """
    compressor = zlib.compressobj(9, wbits=31)
    yield compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(unit * (MiB // len(unit))) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = block * (65536 // len(block))
    while True:
        yield piece


# -- running one extraction against the server --------------------------------------------------


class Outcome:
    """What one extraction gave: the items, the error, the time, the peak traced memory."""

    def __init__(self) -> None:
        self.items: list[User] = []
        self.error: BaseException | None = None
        self.elapsed = 0.0
        self.peak = 0

    def failed_with(self, kind: type[multitask.MultitaskError], *words: str) -> str:
        assert isinstance(self.error, kind), repr(self.error)
        message = str(self.error)
        for word in words:
            assert word.lower() in message.lower(), message
        assert KEY not in message
        return message


async def extract(
    server: HostileServer,
    *,
    memory: bool = False,
    max_retries: int = 0,
    on_item: Callable[[User], None] | None = None,
    **options: Any,
) -> Outcome:
    """One extraction from the server; `on_item` takes each item instead of the list."""
    result = Outcome()
    if memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    started = time.monotonic()
    try:
        async with multitask.Client(
            "openai:m",
            base_url=server.url + "/v1",
            api_key=KEY,
            max_retries=max_retries,
            **options,
        ) as client:
            with anyio.fail_after(60):  # a hang fails the test instead of blocking the suite
                async with client.extract_stream(User, "text") as users:
                    async for user in users:
                        (on_item or result.items.append)(user)
    except multitask.MultitaskError as exc:
        result.error = exc
    finally:
        result.elapsed = time.monotonic() - started
        if memory:
            result.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return result


# -- size caps -----------------------------------------------------------------------------------


def endless_string(prefix: str, size: int = 4096) -> Iterator[bytes]:
    """`prefix`, then an item's string value that never ends, in `size`-character deltas."""
    yield from events(prefix)
    filler = event("x" * size)
    while True:
        yield filler


async def test_an_item_over_a_small_limit_fails_after_the_items_before_it() -> None:
    pieces = events(opening() + '{"age": 1, "name": "' + "y" * 50_000 + '"}]}', 64)
    async with HostileServer(Reply(body=[*pieces, FINISH])) as server:
        result = await extract(server, max_item_bytes=10_000)
    result.failed_with(multitask.ItemTooLargeError, "item 3", "larger than 10000")
    assert result.items == EXPECTED
    assert result.elapsed < 10


@pytest.mark.parametrize("whole", [False, True], ids=["item-in-one-delta", "answer-in-one-delta"])
async def test_an_item_over_the_limit_in_one_delta_fails_after_the_items_before_it(
    whole: bool,
) -> None:
    """Arriving whole, in one event, the item still meets the limit (the parser's buffer never
    held more than the limit before it, so only its size once parsed can tell)."""
    big = json.dumps({"name": "y" * 50_000, "age": 1})
    if whole:
        pieces = events(opening() + big + "," + json.dumps(USERS[0]) + "]}", 1 << 20)
    else:
        pieces = [*events(opening()), event(big), *events("]}")]
    async with HostileServer(Reply(body=[*pieces, FINISH])) as server:
        result = await extract(server, max_item_bytes=10_000)
    result.failed_with(multitask.ItemTooLargeError, "item 3", "larger than 10000")
    assert result.items == EXPECTED


async def test_an_item_over_the_limit_in_one_delta_in_extract_events() -> None:
    big = json.dumps({"name": "y" * 50_000, "age": 1})
    pieces = [*events(opening()), event(big), *events("]}"), FINISH]
    async with HostileServer(Reply(body=pieces)) as server:
        async with multitask.Client(
            "openai:m", base_url=server.url + "/v1", api_key=KEY, max_retries=0
        ) as client:
            done: list[User] = []
            with pytest.raises(  # noqa: PT012
                multitask.ItemTooLargeError, match="item 3 is larger than 10000"
            ):
                async with client.extract_events(User, "text", max_item_bytes=10_000) as stream:
                    async for e in stream:
                        if isinstance(e, multitask.ItemDone):
                            done.append(e.item)
    assert done == EXPECTED


async def test_an_endless_item_stops_at_the_default_limit_in_bounded_memory() -> None:
    """1 MiB by default; the server would send forever, memory stays near the cap."""
    async with HostileServer(lambda _: Reply(body=endless_string(opening() + '{"name":"'))) as (
        server
    ):
        result = await extract(server, memory=True)
        sent = server.bytes_sent
    result.failed_with(multitask.ItemTooLargeError, "item 3", f"larger than {MiB}")
    assert result.items == EXPECTED
    assert result.elapsed < 10
    assert sent > MiB
    assert result.peak < 4 * MiB, f"peak {result.peak / MiB:.1f} MiB for a 1 MiB item cap"


async def test_an_answer_over_a_small_cap_fails_after_its_items() -> None:
    """An endless list of valid items: `max_answer_bytes` ends it, every item before stands."""

    def endless_items() -> Iterator[bytes]:
        yield event('{"tasks":[')
        i = 0
        while True:
            yield event(json.dumps({"name": f"user{i}", "age": i % 100}) + ",")
            i += 1

    async with HostileServer(lambda _: Reply(body=endless_items())) as server:
        result = await extract(server, max_answer_bytes=50_000, memory=True)
    message = result.failed_with(multitask.ItemTooLargeError, "answer grew past 50000")
    n = len(result.items)
    assert n > 1000
    assert f"after {n} item(s)" in message
    assert result.items == [User(name=f"user{i}", age=i % 100) for i in range(n)]
    assert result.elapsed < 10
    assert result.peak < 4 * MiB


async def test_an_endless_answer_stops_at_the_default_cap_in_bounded_memory() -> None:
    """64 MiB by default, in items of half a MiB (under the item cap): the client reads past
    64 MiB, hands out every item, and holds about one item at a time."""
    name = "z" * (MiB // 2)

    def big_items() -> Iterator[bytes]:
        yield event('{"tasks":[')
        i = 0
        while True:
            yield from events(json.dumps({"age": i, "name": name}) + ",", 64 * 1024)
            i += 1

    ages: list[int] = []

    def check(user: User) -> None:  # checked, then dropped: the items are not kept
        assert user.name == name
        ages.append(user.age)

    async with HostileServer(lambda _: Reply(body=big_items())) as server:
        result = await extract(server, memory=True, on_item=check)
        sent = server.bytes_sent
    message = result.failed_with(
        multitask.ItemTooLargeError, f"answer grew past {64 * MiB}", f"after {len(ages)} item"
    )
    assert 120 <= len(ages) <= 128, message
    assert ages == list(range(len(ages)))
    assert sent > 64 * MiB
    assert result.elapsed < 30
    assert result.peak < 16 * MiB, f"peak {result.peak / MiB:.1f} MiB, {sent / MiB:.0f} MiB sent"


async def test_a_line_that_never_ends_stops_at_the_event_cap() -> None:
    """No newline ever: the 16 MiB event cap ends it, with memory near the cap."""

    def endless_line() -> Iterator[bytes]:
        yield TWO  # two items, then an event that never ends
        yield b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
        filler = b"x" * 65536
        while True:
            yield filler

    async with HostileServer(lambda _: Reply(body=endless_line())) as server:
        result = await extract(server, memory=True)
    result.failed_with(multitask.EventTooLargeError, "server-sent event larger than")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 20
    assert result.peak < 3 * 16 * MiB


def test_a_line_that_never_ends_costs_linear_time() -> None:
    """The SSE decoder appends to an unfinished line instead of copying it on every read (which
    took seconds of CPU, blocking the event loop, to reach the 16 MiB cap in 64 KiB reads)."""
    decoder = multitask.lowlevel.SSEDecoder()
    assert decoder.feed(b"data: ok\n\n") == [multitask.lowlevel.ServerSentEvent("ok")]
    piece = b"x" * 65536
    started = time.process_time()
    fed = 0
    try:
        while fed < 300:
            decoder.feed(piece)
            fed += 1
    except multitask.EventTooLargeError:
        pass
    assert fed == 256  # 16 MiB
    assert time.process_time() - started < 1.0


# -- deep nesting ----------------------------------------------------------------------------------

DEEP = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
#: The depth limit raised past these (the default, 512, refuses them: see below).
ALLOW_DEEP: dict[str, Any] = {"max_depth": 20_000}


@pytest.mark.parametrize("size", [64, 1 << 20], ids=["deltas", "one-delta"])
async def test_nesting_ten_thousand_deep_in_an_ignored_field_is_parsed(size: int) -> None:
    answer = opening(USERS[:1]) + '{"name":"deep","extra":' + DEEP + ',"age":7}]}'
    async with HostileServer(Reply(body=[*events(answer, size), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    assert result.error is None
    assert result.items == [EXPECTED[0], User(name="deep", age=7)]


@pytest.mark.parametrize("deep", [DEEP, DEEP_OBJECT], ids=["lists", "objects"])
async def test_nesting_ten_thousand_deep_in_a_field_is_a_validation_error(deep: str) -> None:
    answer = opening(USERS[:2]) + '{"name":' + deep + ',"age":7}]}'
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    result.failed_with(multitask.ItemValidationError, "item 2", "name")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 10


async def test_nesting_ten_thousand_deep_as_an_item_is_a_validation_error() -> None:
    answer = opening(USERS[:1]) + DEEP + "]}"
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    result.failed_with(multitask.ItemValidationError, "item 1")
    assert result.items == EXPECTED[:1]


async def test_nesting_ten_thousand_deep_outside_the_list_is_skipped() -> None:
    answer = '{"meta":' + DEEP + ',"tasks":' + json.dumps(USERS) + "}"
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    assert result.error is None
    assert result.items == EXPECTED


async def test_nesting_ten_thousand_deep_before_an_empty_list() -> None:
    """No item at all: the parser looks at the JSON before the list, which must not recurse."""
    answer = '{"meta":' + DEEP + ',"tasks":[]}'
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    assert result.error is None
    assert result.items == []


@pytest.mark.parametrize("size", [64, 1 << 20], ids=["deltas", "one-delta"])
async def test_nesting_ten_thousand_deep_over_a_small_item_limit(size: int) -> None:
    """20 kB of brackets against a 10 kB limit, in pieces or whole (too deep to serialise)."""
    answer = opening(USERS[:1]) + '{"name":"deep","extra":' + DEEP + ',"age":7}]}'
    async with HostileServer(Reply(body=[*events(answer, size), FINISH])) as server:
        result = await extract(server, max_item_bytes=10_000, **ALLOW_DEEP)
    result.failed_with(multitask.ItemTooLargeError, "item 1", "larger than 10000")
    assert result.items == EXPECTED[:1]


async def test_nesting_that_never_closes_is_incomplete() -> None:
    answer = opening() + '{"name":"x","extra":' + "[" * 10_000
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        result = await extract(server, **ALLOW_DEEP)
    result.failed_with(multitask.IncompleteOutputError, "ended inside the list", "3 complete")
    assert result.items == EXPECTED


async def test_nesting_ten_thousand_deep_in_extract_events() -> None:
    answer = opening(USERS[:1]) + '{"name":"deep","extra":' + DEEP + ',"age":7}]}'
    async with HostileServer(Reply(body=[*events(answer, 64), FINISH])) as server:
        async with multitask.Client(
            "openai:m", base_url=server.url + "/v1", api_key=KEY, max_retries=0, **ALLOW_DEEP
        ) as client:
            async with client.extract_events(User, "text", min_interval=0) as stream:
                done = [e.item async for e in stream if isinstance(e, multitask.ItemDone)]
    assert done == [EXPECTED[0], User(name="deep", age=7)]


#: Where a hostile answer nests deep: in an item's field, as an item, or outside the list.
DEEP_PLACES = {
    "field": lambda deep: opening(USERS[:2]) + '{"name":"x","extra":' + deep + ',"age":7}]}',
    "item": lambda deep: opening(USERS[:2]) + deep + "]}",
    "outside": lambda deep: '{"tasks":' + json.dumps(USERS[:2])[:-1] + '], "meta":' + deep + "}",
}


@pytest.mark.parametrize("events_api", [False, True], ids=["extract_stream", "extract_events"])
@pytest.mark.parametrize("levels", [20_000, 100_000])
@pytest.mark.parametrize("place", list(DEEP_PLACES))
async def test_nesting_past_the_depth_limit_fails_after_the_items_in_bounded_memory(
    place: str, levels: int, events_api: bool
) -> None:
    """Past `max_depth` (512 by default) the answer is refused, after the items before the
    deep spot; ijson's prefix paths, a string per open level, used to take memory growing
    with the square of the depth (a gigabyte for 20,000 `[`)."""
    answer = DEEP_PLACES[place]("[" * levels)
    async with HostileServer(Reply(body=[*events(answer, 4096), FINISH])) as server:
        if events_api:
            result = Outcome()
            tracemalloc.start()
            tracemalloc.reset_peak()
            try:
                async with multitask.Client(
                    "openai:m", base_url=server.url + "/v1", api_key=KEY, max_retries=0
                ) as client:
                    async with client.extract_events(User, "text") as stream:
                        async for e in stream:
                            if isinstance(e, multitask.ItemDone):
                                result.items.append(e.item)
            except multitask.MultitaskError as exc:
                result.error = exc
            finally:
                result.peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        else:
            result = await extract(server, memory=True)
    result.failed_with(multitask.MalformedOutputError, "nested deeper than 512 levels")
    assert not isinstance(result.error, multitask.ItemTooLargeError)
    assert result.items == EXPECTED[:2]
    assert result.peak < 8 * MiB, result.peak


# -- endless streams: the deadline -------------------------------------------------------------


async def test_an_endless_list_is_ended_by_the_deadline() -> None:
    def paced_items() -> Iterator[bytes]:
        yield event('{"tasks":[')
        i = 0
        while True:
            yield event(json.dumps({"name": f"user{i}", "age": i}) + ",")
            i += 1

    async with HostileServer(lambda _: Reply(body=paced_items(), delay=0.01)) as server:
        result = await extract(server, deadline=1.0)
    n = len(result.items)
    result.failed_with(multitask.APITimeoutError, "deadline passed", f"after {n} item(s)")
    assert n > 10
    assert result.items == [User(name=f"user{i}", age=i) for i in range(n)]
    assert 1.0 <= result.elapsed < 3


async def test_endless_keep_alive_comments_are_ended_by_the_deadline() -> None:
    def comments() -> Iterator[bytes]:
        yield TWO
        while True:
            yield b": keep-alive\n" * 100

    async with HostileServer(lambda _: Reply(body=comments())) as server:
        result = await extract(server, deadline=1.0, memory=True)
    result.failed_with(multitask.APITimeoutError, "deadline passed", "after 2 item(s)")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 3
    assert result.peak < 4 * MiB


async def test_a_drip_of_one_byte_a_second_is_ended_by_the_deadline() -> None:
    """Each byte comes well within the read timeout: only the total deadline ends it."""

    def drip() -> Iterator[bytes]:
        yield TWO  # the first two items at once
        for byte in REST:
            yield bytes([byte])

    async with HostileServer(lambda _: Reply(body=drip(), delay=1.0)) as server:
        result = await extract(server, deadline=3.0, timeout=2.0)
    result.failed_with(multitask.APITimeoutError, "deadline passed", "after 2 item(s)")
    assert result.items == EXPECTED[:2]
    assert 3.0 <= result.elapsed < 5


async def test_a_dripping_error_body_is_ended_by_the_deadline() -> None:
    body = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
    reply = Reply(
        status=500,
        headers=(("content-type", "application/json"),),
        body=[bytes([b]) for b in body],
        delay=0.5,
    )
    async with HostileServer(reply) as server:
        result = await extract(server, deadline=1.5)
    result.failed_with(multitask.APITimeoutError, "deadline passed")
    assert result.elapsed < 4


# -- timeouts ------------------------------------------------------------------------------------


async def test_a_stream_that_stalls_is_ended_by_the_read_timeout() -> None:
    async with HostileServer(Reply(body=[TWO], then="hang")) as server:
        result = await extract(server, timeout=0.5)
    result.failed_with(multitask.APITimeoutError, "timed out", "after 2 item(s)", "ReadTimeout")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 3


async def test_a_stall_before_any_item_is_retried_then_fails() -> None:
    async with HostileServer(Reply(body=events('{"tasks":['), then="hang")) as server:
        result = await extract(server, timeout=0.3, max_retries=1)
        requests = len(server.requests)
    result.failed_with(multitask.APITimeoutError, "timed out", "ReadTimeout")
    assert result.items == []
    assert requests == 2
    assert result.elapsed < 4


async def test_a_server_that_never_answers_is_ended_by_the_read_timeout() -> None:
    async with HostileServer(Reply(silent=True)) as server:
        result = await extract(server, timeout=0.5, max_retries=1)
        requests = len(server.requests)
    result.failed_with(multitask.APITimeoutError, "timed out", "ReadTimeout")
    assert requests == 2
    assert result.elapsed < 4


async def test_a_server_that_never_answers_is_ended_by_the_deadline() -> None:
    """With the default read timeout (600 s), the total deadline still holds."""
    async with HostileServer(Reply(silent=True)) as server:
        result = await extract(server, deadline=1.0, max_retries=3)
    result.failed_with(multitask.APITimeoutError, "deadline passed")
    assert result.elapsed < 3


# -- not an event stream -------------------------------------------------------------------------


async def test_a_200_with_an_html_page() -> None:
    page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
    reply = Reply(headers=(("content-type", "text/html; charset=utf-8"),), body=[page])
    async with HostileServer(reply) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "expected an event stream", "text/html")
    assert result.elapsed < 3


async def test_a_200_with_json_instead_of_a_stream() -> None:
    completion = {"choices": [{"message": {"content": json.dumps({"tasks": USERS})}}]}
    reply = Reply(
        headers=(("content-type", "application/json"),),
        body=[json.dumps(completion).encode()],
        framing="length",
    )
    async with HostileServer(reply) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "expected an event stream", "application/json")


# -- invalid UTF-8 -------------------------------------------------------------------------------


def with_bytes(piece: bytes, raw: bytes) -> bytes:
    """`piece` with its marker `@@` replaced by raw bytes."""
    assert b"@@" in piece
    return piece.replace(b"@@", raw)


async def test_invalid_utf8_in_a_string_is_replaced_as_the_event_stream_spec_says() -> None:
    body = [
        *events(opening(USERS[:2])),
        with_bytes(event('{"name":"b@@d","age":5}'), b"\xff\xc3"),
        *events("]}"),
        FINISH,
    ]
    async with HostileServer(Reply(body=body)) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == [*EXPECTED[:2], User(name="b\ufffd\ufffdd", age=5)]


async def test_invalid_utf8_in_the_answers_json_is_malformed_output() -> None:
    body = [*events(opening(USERS[:2])), with_bytes(event("@@"), b"\xfe\xff"), *stream()[2:]]
    async with HostileServer(Reply(body=body)) as server:
        result = await extract(server)
    result.failed_with(multitask.MalformedOutputError, "malformed JSON", "after 2 item(s)")
    assert result.items == EXPECTED[:2]


async def test_invalid_utf8_in_an_events_json_is_a_decode_error() -> None:
    body = [*events(opening(USERS[:2])), b"data: {\xff\xfe}\n\n", *events("]}"), FINISH]
    async with HostileServer(Reply(body=body)) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "event data is not JSON")
    assert result.items == EXPECTED[:2]


# -- gzip ----------------------------------------------------------------------------------------


async def test_a_gzip_stream_streams_its_items() -> None:
    """The first item comes out while the server is still holding back the rest."""
    first_seen = anyio.Event()
    rest = ",".join(json.dumps(user) for user in USERS[1:]) + "]}"

    async def body() -> AsyncIterator[bytes]:
        pieces = gzipped([b"".join(events(opening(USERS[:1]))), b"".join(events(rest)), FINISH])
        yield next(pieces)
        await first_seen.wait()
        for piece in pieces:
            yield piece

    items: list[User] = []
    async with HostileServer(Reply(headers=GZIP_SSE, body=body())) as server:
        async with multitask.Client(
            "openai:m", base_url=server.url + "/v1", api_key=KEY, max_retries=0
        ) as client:
            with anyio.fail_after(10):
                async for user in client.extract_stream(User, "text"):
                    items.append(user)
                    first_seen.set()
        assert server.requests[0].header("accept-encoding") == "gzip, deflate"
    assert items == EXPECTED


async def test_a_corrupt_gzip_stream_is_a_decode_error_after_its_items() -> None:
    pieces = list(gzipped(stream(size=8)))
    at = len(pieces) * 2 // 3
    pieces[at] = bytes(b ^ 0x5A for b in pieces[at])
    async with HostileServer(Reply(headers=GZIP_SSE, body=pieces)) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "could not decode", "gzip")
    assert result.items
    assert result.items == EXPECTED[: len(result.items)]


async def test_a_body_that_claims_gzip_but_is_not_is_a_decode_error() -> None:
    async with HostileServer(Reply(headers=GZIP_SSE, body=stream())) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "could not decode", "gzip")
    assert result.items == []


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip"])
async def test_a_content_encoding_not_asked_for_is_a_decode_error(coding: str) -> None:
    headers = (("content-type", "text/event-stream"), ("content-encoding", coding))
    async with HostileServer(Reply(headers=headers, body=stream())) as server:
        result = await extract(server)
    result.failed_with(multitask.StreamDecodeError, "content-encoding", repr(coding))
    assert result.items == []


@pytest.mark.parametrize("coding", ["identity", "utf-8"])
async def test_a_content_encoding_that_is_no_compression_is_ignored(coding: str) -> None:
    headers = (("content-type", "text/event-stream"), ("content-encoding", coding))
    async with HostileServer(Reply(headers=headers, body=stream())) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == EXPECTED


async def test_a_deflate_stream_streams_its_items() -> None:
    compressor = zlib.compressobj()
    body = [compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH) for piece in stream()]
    headers = (("content-type", "text/event-stream"), ("content-encoding", "deflate"))
    async with HostileServer(Reply(headers=headers, body=[*body, compressor.flush()])) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == EXPECTED


async def test_a_gzip_bomb_of_blank_lines_is_ended_by_the_deadline_in_bounded_memory() -> None:
    """Endless gzip that inflates a thousandfold into newlines: nothing accumulates, so no cap
    applies; the deadline ends it on time (between two inflated steps) and memory stays flat."""
    reply = lambda _: Reply(headers=GZIP_SSE, body=bomb(b"\n", head=TWO))  # noqa: E731
    async with HostileServer(reply) as server:
        result = await extract(server, deadline=1.5, memory=True)
        sent = server.bytes_sent
    result.failed_with(multitask.APITimeoutError, "deadline passed", "after 2 item(s)")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 3.5
    assert sent > 10_000  # ten megabytes of newlines, at the least
    assert result.peak < 4 * MiB, f"peak {result.peak / MiB:.1f} MiB"


async def test_a_gzip_bomb_inside_an_item_stops_at_the_item_cap_in_bounded_memory() -> None:
    opened = event('{"name":"')
    head = TWO + opened.removesuffix(b'"}}]}}]}\n\n')  # in the arguments' string, unended
    async with HostileServer(lambda _: Reply(headers=GZIP_SSE, body=bomb(b"y", head))) as server:
        result = await extract(server, memory=True)
    # The bomb is one endless SSE line: the event cap (16 MiB) stops it.
    result.failed_with(multitask.EventTooLargeError, "larger than")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 10
    assert result.peak < 2 * 16 * MiB, f"peak {result.peak / MiB:.1f} MiB"


async def test_a_gzip_bomb_of_item_deltas_stops_at_the_item_cap_in_bounded_memory() -> None:
    unit = event("y" * 4096)
    head = TWO + event('{"name":"')
    async with HostileServer(lambda _: Reply(headers=GZIP_SSE, body=bomb(unit, head))) as server:
        result = await extract(server, max_item_bytes=100_000, memory=True)
    result.failed_with(multitask.ItemTooLargeError, "item 2", "larger than 100000")
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 5
    assert result.peak < 2 * MiB, f"peak {result.peak / MiB:.1f} MiB for a 100 kB item cap"


async def test_a_gzip_bomb_as_an_error_body_is_capped() -> None:
    headers = (("content-type", "text/plain"), ("content-encoding", "gzip"))
    async with HostileServer(lambda _: Reply(400, headers, bomb(b"E"))) as server:
        result = await extract(server, memory=True)
    result.failed_with(multitask.APIStatusError, "400")
    assert result.elapsed < 5
    assert result.peak < 2 * MiB, f"peak {result.peak / MiB:.1f} MiB"


# -- redirects -----------------------------------------------------------------------------------


REDIRECTS = {
    "stream": Reply(status=302, headers=SSE, body=stream()),
    "gzip-stream": Reply(status=307, headers=GZIP_SSE, body=list(gzipped(stream()))),
    "html": Reply(
        status=301,
        headers=(("content-type", "text/html"),),
        body=[b"<html><body>Moved Permanently</body></html>"],
    ),
    "json": Reply(
        status=308,
        headers=(("content-type", "application/json"),),
        body=[json.dumps({"tasks": USERS}).encode()],
        framing="length",
    ),
}


@pytest.mark.parametrize("body", list(REDIRECTS))
async def test_a_redirect_to_another_host_is_not_followed(body: str) -> None:
    async with HostileServer(Reply(body=stream()), host="127.0.0.2") as elsewhere:
        location = elsewhere.url + "/v1/chat/completions"
        template = REDIRECTS[body]

        def redirect(_: Request) -> Reply:
            headers = (*template.headers, ("location", location))
            return Reply(template.status, headers, template.body, template.framing)

        async with HostileServer(redirect) as server:
            result = await extract(server, max_retries=2)
            requests = len(server.requests)
        assert elsewhere.requests == []
        assert elsewhere.connections == 0
    result.failed_with(multitask.APIStatusError, str(template.status))
    assert result.items == []
    assert requests == 1  # a redirect is final: not retried


# -- framing broken after valid bytes: nothing valid lost, and no wait for more ------------------

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)
BAD_CHUNK_SIZE = b"zz\r\n"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)


def broken_after_two_items(split: int | None, *, gzip: bool = False) -> Reply:
    """Two complete items, chunked, then a chunk-size line that is not one, all in one write
    (or in `split`-byte writes); the connection then stays open (a client that waited for
    more would wait for its read timeout)."""
    head, pieces = CHUNKED_HEAD, list(events(opening(USERS[:2])))
    if gzip:
        head = head.replace(b"\r\n\r\n", b"\r\ncontent-encoding: gzip\r\n\r\n")
        pieces = list(gzipped(pieces))[:-1]  # flushed after each piece; the trailer never comes
    wire = head + chunked(*pieces) + BAD_CHUNK_SIZE
    delay = 0.01 if split is not None and split > 1 else 0.0
    return Reply(head=wire, framing="close", then="hang", split=split, split_delay=delay)


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("split", [None, 1, 97], ids=["whole", "1-byte", "97-byte"])
async def test_items_framed_before_a_bad_chunk_size_are_delivered_then_the_error(
    split: int | None, gzip: bool
) -> None:
    """The response reader used to raise for the whole read: written in one piece, both items
    were lost (and lost again by each retry); in 97-byte pieces, one of two."""
    async with HostileServer(broken_after_two_items(split, gzip=gzip)) as server:
        result = await extract(server, max_retries=2, timeout=30)
        requests = len(server.requests)
    result.failed_with(multitask.APIConnectionError, "invalid chunk size", "after 2 item(s)")
    assert result.items == EXPECTED[:2]
    assert requests == 1  # items were delivered: not retried
    assert result.elapsed < 10  # raised at once, not after the read timeout


async def test_a_bad_chunk_size_before_any_item_is_retried() -> None:
    reply = Reply(
        head=CHUNKED_HEAD,
        body=[chunked(b"data: {\n")],
        framing="close",
        tail=BAD_CHUNK_SIZE,
        then="hang",
    )
    async with HostileServer(reply) as server:
        result = await extract(server, max_retries=1, timeout=30)
        requests = len(server.requests)
    result.failed_with(multitask.APIConnectionError, "invalid chunk size")
    assert requests == 2
    assert result.elapsed < 10


@pytest.mark.parametrize(
    ("after", "error", "says"),
    [
        ('{"name":"Ada","age":"not a number"}', multitask.ItemValidationError, "item 2"),
        ('{"name": nope', multitask.MalformedOutputError, "malformed JSON"),
        ('{"name":"x","extra":' + "[" * 600, multitask.MalformedOutputError, "deeper than 512"),
    ],
    ids=["invalid-item", "malformed", "too-deep"],
)
@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
async def test_an_error_held_back_after_items_is_raised_without_waiting_for_more_bytes(
    after: str, error: type[multitask.MultitaskError], says: str, gzip: bool
) -> None:
    """The pipeline hands out the items before a bad spot and keeps the error for the next
    call: the transport (or, for a compressed body, the client's general reader) asks for it
    at once (a server that then stalls used to turn it into a read timeout)."""
    body = [event(opening(USERS[:2]) + after)]
    reply = Reply(body=body, then="hang")
    if gzip:
        reply = Reply(headers=GZIP_SSE, body=list(gzipped(body))[:-1], then="hang")
    async with HostileServer(reply) as server:
        result = await extract(server, timeout=multitask_timeout(read=20))
    result.failed_with(error, says)
    assert result.items == EXPECTED[:2]
    assert result.elapsed < 10


def multitask_timeout(*, read: float) -> Any:
    import httpx2

    return httpx2.Timeout(30.0, read=read)


# -- head rules --------------------------------------------------------------------------------


async def test_folded_header_lines_are_unfolded() -> None:
    """RFC 9112 section 5.2: a user agent replaces an obsolete line folding with a space
    (it was refused, and every request failed)."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream;\r\n charset=utf-8\r\n"
        b"x-note: first\r\n\tsecond\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    reply = Reply(head=head, body=[chunked(*stream())], framing="close", tail=b"0\r\n\r\n")
    async with HostileServer(reply) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == EXPECTED


@pytest.mark.parametrize("coding", ["gzip, chunked", "chunked, chunked", "x-custom"])
async def test_a_transfer_coding_other_than_chunked_is_refused(coding: str) -> None:
    """Bytes in a transfer coding nobody decodes must not be read as the event stream."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: " + coding.encode() + b"\r\nconnection: close\r\n\r\n"
    )
    body = list(gzipped(stream()))
    async with HostileServer(Reply(head=head, body=body, framing="close")) as server:
        result = await extract(server)
    result.failed_with(multitask.APIConnectionError, "unsupported Transfer-Encoding")
    assert result.items == []


async def test_interim_responses_before_the_real_one_are_skipped() -> None:
    head = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
        + CHUNKED_HEAD
    )
    reply = Reply(head=head, body=[chunked(*stream())], framing="close", tail=b"0\r\n\r\n", split=7)
    async with HostileServer(reply) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == EXPECTED


async def test_a_whole_response_split_at_every_byte_is_read() -> None:
    reply = Reply(
        head=CHUNKED_HEAD,
        body=[chunked(*stream())],
        framing="close",
        tail=b"3;ext=1\r\n\n\n\r\n0\r\nx-trailer: 1\r\n\r\n",
        split=1,
    )
    async with HostileServer(reply) as server:
        result = await extract(server)
    assert result.error is None
    assert result.items == EXPECTED


# -- echoed credentials --------------------------------------------------------------------------

#: provider name, base URL suffix, the header its key goes in, client options.
ECHO_VENDORS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "openai": ("openai", "/v1", "authorization", {}),
    "anthropic": ("anthropic", "", "x-api-key", {}),
    "openai-responses": ("openai-responses", "/v1", "authorization", {}),
    "gemini": ("gemini", "", "x-goog-api-key", {}),
    "ollama": ("ollama", "", "authorization", {}),
    "azure-key": ("azure", "", "api-key", {}),
    "azure-ad-token": ("azure", "", "authorization", {"ad_token": True}),
    "groq": ("groq", "/v1", "authorization", {}),
}


def credentials(request: Request) -> str:
    """Every credential header the request carried, as a server would echo them."""
    return " ".join(
        v
        for k, v in request.headers
        if k in ("authorization", "x-api-key", "api-key", "x-goog-api-key")
    )


def mid_stream_error(vendor: str, echoed: str) -> tuple[tuple[tuple[str, str], ...], bytes]:
    message = f"invalid credentials {echoed}"
    if vendor == "anthropic":
        data = {"type": "error", "error": {"type": "authentication_error", "message": message}}
        return SSE, b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
    if vendor == "openai-responses":
        data = {"type": "error", "code": "invalid_api_key", "message": message}
        return SSE, b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
    if vendor == "gemini":
        data = {"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}
        return SSE, b"data: " + json.dumps(data).encode() + b"\n\n"
    if vendor == "ollama":
        return (("content-type", "application/x-ndjson"),), json.dumps(
            {"error": message}
        ).encode() + b"\n"
    data = {"error": {"message": message, "type": "invalid_request_error"}}
    return SSE, b"data: " + json.dumps(data).encode() + b"\n\n"


def echoing(how: str, vendor: str) -> Callable[[Request], Reply]:
    def reply(request: Request) -> Reply:
        echoed = credentials(request)
        assert KEY in echoed  # the key was sent, so a server can echo it
        if how == "status-body":
            body = json.dumps({"error": {"message": f"Incorrect API key: {echoed}"}})
            return Reply(401, (("content-type", "application/json"),), [body.encode()], "length")
        if how == "html-page":
            page = f"<html><body>407 Proxy Authentication Required: {echoed}</body></html>"
            return Reply(407, (("content-type", "text/html"),), [page.encode()], "length")
        if how == "redirect":
            location = "https://elsewhere.example/v1?key=" + echoed.replace(" ", "+")
            return Reply(302, (("location", location),), [], "length")
        if how == "content-type":
            return Reply(200, (("content-type", f"text/plain; key={echoed}"),), [b"x"], "length")
        if how == "header-line":
            head = b"HTTP/1.1 200 OK\r\n" + echoed.encode() + b"\r\n\r\n"
            return Reply(head=head, body=[], framing="close")
        headers, error = mid_stream_error(vendor, echoed)
        return Reply(headers=headers, body=[error])

    return reply


@pytest.mark.parametrize(
    "how", ["status-body", "html-page", "redirect", "content-type", "header-line", "mid-stream"]
)
@pytest.mark.parametrize("vendor", list(ECHO_VENDORS))
async def test_a_key_the_server_echoes_never_reaches_an_exception(
    vendor: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, suffix, _, extra = ECHO_VENDORS[vendor]
    options: dict[str, Any] = {"api_key": KEY}
    if extra.get("ad_token"):
        options = {"provider": multitask.providers.AzureOpenAI(azure_ad_token=KEY)}
    caplog.set_level("DEBUG")
    async with HostileServer(echoing(how, name)) as server:
        if "provider" in options:
            options["provider"].base_url = server.url
        async with multitask.Client(
            f"{name}:m", base_url=server.url + suffix, max_retries=0, timeout=10, **options
        ) as client:
            with anyio.fail_after(30):
                try:
                    await client.extract(User, "text")
                except multitask.MultitaskError as exc:
                    error: BaseException = exc
                else:
                    raise AssertionError("no error")
    text = exception_text(error)
    assert KEY not in text, text
    assert "[redacted]" in text  # the echo was there, and was replaced
    assert KEY not in caplog.text


# -- snapshots of a large item ------------------------------------------------------------------


async def test_a_large_item_in_progress_stops_getting_snapshots_past_the_cap() -> None:
    """Each `ItemUpdated` copies the item in progress (an 800 KB one took 12-69 ms): past
    `max_snapshot_values` it gets none until its `ItemDone`."""

    class Rows(BaseModel):
        rows: list[int]

    answer = '{"tasks":[{"rows":[' + ",".join(str(i) for i in range(400)) + "]}]}"
    async with HostileServer(Reply(body=[*events(answer, 40), FINISH])) as server:
        async with multitask.Client(
            "openai:m", base_url=server.url + "/v1", api_key=KEY, max_retries=0
        ) as client:
            stream = client.extract_events(Rows, "text", min_interval=0, max_snapshot_values=100)
            async with stream:
                got = [e async for e in stream]
    sizes = [len(e.partial["rows"]) for e in got if isinstance(e, multitask.ItemUpdated)]
    assert sizes
    assert max(sizes) < 100  # shown while it held at most 100 values, then not
    done = [e.item for e in got if isinstance(e, multitask.ItemDone)]
    assert done == [Rows(rows=list(range(400)))]
