"""Provider stream decoders against the team's real wire captures, and synthetic streams.

The captures in `/work/shared/wire/` are weather tool calls and prose, not `{"tasks": [...]}`
answers, so their answer text is checked by driving the decoders directly. Every capture is
then fed to `Extraction.feed_bytes` whole, split in two at (nearly) every byte position, and
one byte at a time: each way must give the same items, answer text and outcome.

Synthetic streams in the same byte format carry a real `{"tasks": [...]}` answer and check
that items come out the moment their closing brace arrives, and that the quirks of
compatible servers are tolerated.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from multitask import (
    IncompleteOutputError,
    MalformedOutputError,
    MultitaskError,
    RefusalError,
    StreamError,
)
from multitask.lowlevel import Extraction, SSEDecoder
from multitask.providers import AnthropicDecoder, OpenAIChatDecoder, ProviderDecoder

DICT = TypeAdapter(dict)

# -- what the captures hold (read off the files) -----------------------------------------------

NO_TASKS = "the answer's JSON object has no 'tasks' list"
NO_JSON = "the answer holds no JSON"


@dataclass(frozen=True)
class Capture:
    """What one capture file holds, and what `Extraction` makes of it."""

    #: The answer as JSON (the first tool call's arguments, or choice 0's content), or None
    #: when the answer text is not whole JSON (see `text`).
    answer: Any
    #: The exact answer text when `answer` is None ('' for no answer at all).
    text: str | None
    #: Message text held back as prose under the "auto" source.
    leftover: str
    finish_reason: str
    usage: tuple[int, int]
    refusal: str
    #: `decoder.outcome_error(0)`'s type, or None.
    outcome: type[MultitaskError] | None
    #: The error `Extraction` (items of type dict) ends with, and a piece of its message.
    error: type[MultitaskError]
    message: str


WEATHER_SF = {"city": "San Francisco", "temperature": 65, "units": "f"}

D6155801 = {
    "location": "San Francisco, CA",
    "weather": {
        "temperature": "18°C",
        "condition": "Partly Cloudy",
        "humidity": "72%",
        "windSpeed": "15 km/h",
        "windDirection": "NW",
    },
    "forecast": [
        {"day": "Monday", "high": "20°C", "low": "14°C", "condition": "Sunny"},
        {"day": "Tuesday", "high": "19°C", "low": "15°C", "condition": "Mostly Cloudy"},
        {"day": "Wednesday", "high": "18°C", "low": "14°C", "condition": "Cloudy"},
    ],
}

E2AAD469_PROSE = (
    "I'm unable to provide real-time weather updates. To get the current weather in San "
    "Francisco, I recommend checking a reliable weather website or a weather app."
)

CAPTURES: dict[str, Capture] = {
    "anthropic/basic_response.sse": Capture(
        None, "", "Hello there!", "end_turn", (11, 6), "", None, MalformedOutputError, NO_JSON
    ),
    "anthropic/incomplete_partial_json_response.sse": Capture(
        None,
        '{"filename": "taxes.txt", "lines_of_text": [\n"# COMPREHENSIVE TAX GUIDE FOR '
        'INDIVIDUALS WITH MULTIPLE W-2s",\n"",\n"## INTRODUCTION",\n"",\n"Filing taxes',
        "",
        "max_tokens",
        (450, 124),
        "",
        IncompleteOutputError,
        IncompleteOutputError,
        "finish reason 'max_tokens'",
    ),
    "anthropic/refusal_response.sse": Capture(
        None,
        "",
        "",
        "refusal",
        (20, 0),
        "This request was refused due to policy.",
        RefusalError,
        RefusalError,
        "This request was refused due to policy.",
    ),
    "anthropic/tool_use_response.sse": Capture(
        {"location": "Paris"},
        None,
        "",
        "tool_use",
        (377, 65),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
    "openai/chat__173417d5.sse": Capture(
        None,
        "",
        "",
        "stop",
        (79, 11),
        "I'm sorry, I can't assist with that request.",
        RefusalError,
        RefusalError,
        "I'm sorry, I can't assist with that request.",
    ),
    "openai/chat__569c877e.sse": Capture(
        None,
        "",
        "",
        "stop",
        (79, 12),
        "I'm very sorry, but I can't assist with that.",
        RefusalError,
        RefusalError,
        "I'm very sorry, but I can't assist with that.",
    ),
    "openai/chat_content_4cc50a61.sse": Capture(
        None,
        '{"',
        "",
        "length",
        (79, 1),
        "",
        IncompleteOutputError,
        IncompleteOutputError,
        "finish reason 'length'",
    ),
    "openai/chat_content_7e5ea4d1.sse": Capture(
        {"city": "San Francisco", "temperature": 61, "units": "f"},
        None,
        "",
        "stop",
        (79, 14),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
    "openai/chat_content_83b060ba.sse": Capture(
        None, "", "Foo!", "stop", (9, 2), "", None, MalformedOutputError, "got 'Foo!'"
    ),
    # n=3: choices 1 and 2 say 61 and 59 degrees; only choice 0 (65) is the answer.
    "openai/chat_content_a491adda.sse": Capture(
        WEATHER_SF, None, "", "stop", (79, 42), "", None, MalformedOutputError, NO_TASKS
    ),
    "openai/chat_content_d6155801.sse": Capture(
        D6155801, None, "", "stop", (19, 177), "", None, MalformedOutputError, NO_TASKS
    ),
    "openai/chat_content_e2aad469.sse": Capture(
        None, "", E2AAD469_PROSE, "stop", (14, 30), "", None, MalformedOutputError, NO_JSON
    ),
    "openai/chat_tools_2018feb6.sse": Capture(
        {"city": "New York City"},
        None,
        "",
        "tool_calls",
        (44, 16),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
    "openai/chat_tools_a247c49c.sse": Capture(
        {"city": "San Francisco", "state": "CA"},
        None,
        "",
        "tool_calls",
        (48, 19),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
    "openai/chat_tools_c6aa7e39.sse": Capture(
        {"city": "Edinburgh", "country": "UK", "units": "c"},
        None,
        "",
        "tool_calls",
        (76, 24),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
    # Two parallel tool calls: the second (get_stock_price, AAPL) is not the answer.
    "openai/chat_tools_f82268f2.sse": Capture(
        {"city": "Edinburgh", "country": "GB", "units": "c"},
        None,
        "",
        "tool_calls",
        (149, 60),
        "",
        None,
        MalformedOutputError,
        NO_TASKS,
    ),
}

NAMES = sorted(CAPTURES)


def decoder_for(name: str) -> ProviderDecoder:
    return AnthropicDecoder() if name.startswith("anthropic/") else OpenAIChatDecoder()


def test_every_capture_is_covered(wire: Path) -> None:
    found = sorted(p.relative_to(wire).as_posix() for p in wire.rglob("*.sse"))
    assert found == sorted(NAMES + list(LLAMACPP))


#: llama-server's own streams (a tiny model under grammar-constrained decoding): whole
#: `{"tasks": [...]}` answers, with the usage chunk's `choices: []` and `timings`.
LLAMACPP: dict[str, tuple[list[dict[str, Any]], str, tuple[int, int]]] = {
    "llamacpp/chat_json_schema.sse": (
        [{"name": "Ste", "age": 9}, {"name": "Ik", "age": 23775}],
        "stop",
        (245, 61),
    ),
    "llamacpp/chat_tools_required.sse": (
        [
            {"name": ",{", "age": 138},
            {"name": "Ri", "age": 9},
            {"name": "Lj", "age": 9},
            {"name": "Dvgme", "age": 4},
            {"name": "Pqxqiqnorum", "age": 5},
            {"name": "Ozm", "age": 5},
        ],
        "tool_calls",
        (1086, 195),
    ),
}


@pytest.mark.parametrize("name", sorted(LLAMACPP))
@pytest.mark.parametrize("piece", [1, 7, 97, 1 << 20])
def test_llamacpp_captures_give_their_items(wire: Path, name: str, piece: int) -> None:
    data = (wire / name).read_bytes()
    items, error, _, finish, usage, *_ = extract(
        name, [data[i : i + piece] for i in range(0, len(data), piece)]
    )
    expected_items, expected_finish, expected_usage = LLAMACPP[name]
    assert error is type(None)
    assert items == expected_items
    assert finish == expected_finish
    assert usage is not None
    assert usage[:2] == expected_usage


# -- the decoders, driven directly ---------------------------------------------------------------


def decode(name: str, data: bytes) -> tuple[ProviderDecoder, str, list[str]]:
    decoder = decoder_for(name)
    events = SSEDecoder().feed(data)
    texts = [decoder.event(event) for event in events]
    return decoder, "".join(texts), [event.event for event in events]


@pytest.mark.parametrize("name", NAMES)
def test_decoder_answer_text(wire: Path, name: str) -> None:
    expected = CAPTURES[name]
    decoder, text, _ = decode(name, (wire / name).read_bytes())
    if expected.answer is not None:
        assert json.loads(text) == expected.answer
    else:
        assert text == expected.text
    assert decoder.leftover() == expected.leftover
    assert decoder.leftover() == ""  # handed out once
    assert decoder.finish_reason == expected.finish_reason
    assert decoder.usage is not None
    assert (decoder.usage.input_tokens, decoder.usage.output_tokens) == expected.usage
    assert decoder.usage.total_tokens == sum(expected.usage)
    assert decoder.refusal == expected.refusal
    outcome = decoder.outcome_error(0)
    if expected.outcome is None:
        assert outcome is None
    else:
        assert type(outcome) is expected.outcome


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("openai/")])
def test_openai_done_marks_the_end(wire: Path, name: str) -> None:
    decoder, _, _ = decode(name, (wire / name).read_bytes())
    assert decoder.ended


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("anthropic/")])
def test_anthropic_message_stop_marks_the_end(wire: Path, name: str) -> None:
    data = (wire / name).read_bytes()
    # The captures were trimmed after `message_stop`'s data line; per the SSE rules an event
    # not followed by a blank line is discarded, so only a stream that ends properly says so.
    assert not decode(name, data)[0].ended
    decoder, _, kinds = decode(name, data.rstrip(b"\n") + b"\n\n")
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert decoder.ended


def test_openai_usage_raw_is_kept(wire: Path) -> None:
    name = "openai/chat_tools_c6aa7e39.sse"
    decoder, _, _ = decode(name, (wire / name).read_bytes())
    assert decoder.usage is not None
    assert decoder.usage.raw["total_tokens"] == 100
    assert decoder.usage.raw["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_openai_parallel_second_call_is_not_the_answer(wire: Path) -> None:
    data = (wire / "openai/chat_tools_f82268f2.sse").read_bytes()
    _, text, _ = decode("openai/chat_tools_f82268f2.sse", data)
    assert b'"name":"get_stock_price"' in data  # the second call is there ...
    assert "ticker" not in text  # ... and ignored


def test_openai_n3_other_choices_are_ignored(wire: Path) -> None:
    data = (wire / "openai/chat_content_a491adda.sse").read_bytes()
    _, text, _ = decode("openai/chat_content_a491adda.sse", data)
    assert b'"index":2' in data
    assert text == '{"city":"San Francisco","temperature":65,"units":"f"}'


def test_anthropic_text_block_before_tool_use_is_ignored(wire: Path) -> None:
    data = (wire / "anthropic/tool_use_response.sse").read_bytes()
    decoder, text, _ = decode("anthropic/tool_use_response.sse", data)
    assert "check the current weather in Paris" in data.decode()
    assert text == '{"location": "Paris"}'
    assert decoder.source == "tool"
    assert decoder.leftover() == ""


def test_anthropic_max_tokens_is_incomplete(wire: Path) -> None:
    name = "anthropic/incomplete_partial_json_response.sse"
    decoder, _, _ = decode(name, (wire / name).read_bytes())
    error = decoder.outcome_error(3)
    assert isinstance(error, IncompleteOutputError)
    assert error.finish_reason == "max_tokens"
    assert error.items_delivered == 3


def test_anthropic_refusal_is_refusal_error(wire: Path) -> None:
    name = "anthropic/refusal_response.sse"
    decoder, _, _ = decode(name, (wire / name).read_bytes())
    error = decoder.outcome_error(0)
    assert isinstance(error, RefusalError)
    assert error.refusal == "This request was refused due to policy."


@pytest.mark.parametrize("name", ["openai/chat__173417d5.sse", "openai/chat__569c877e.sse"])
def test_openai_refusal_is_refusal_error(wire: Path, name: str) -> None:
    decoder, _, _ = decode(name, (wire / name).read_bytes())
    error = decoder.outcome_error(0)
    assert isinstance(error, RefusalError)
    assert error.refusal == CAPTURES[name].refusal


# -- Extraction: whole, split in two, byte by byte -------------------------------------------------


class _Recorder:
    """Mixin that records the answer text a decoder hands to the parser: every event goes
    through `payload`, so it is made with its fast path off (see `ProviderDecoder`)."""

    def __init__(self) -> None:
        super().__init__(fast=False)  # type: ignore[call-arg]
        self.texts: list[str] = []
        self.held = ""

    def payload(self, obj: Any, event: str = "message") -> str:
        text: str = super().payload(obj, event)
        self.texts.append(text)
        return text

    def leftover(self) -> str:
        held: str = super().leftover()
        self.held += held
        return held


class RecordingOpenAI(_Recorder, OpenAIChatDecoder):
    pass


class RecordingAnthropic(_Recorder, AnthropicDecoder):
    pass


def extract(name: str, pieces: list[bytes]) -> tuple[Any, ...]:
    """Feed `pieces` to a fresh `Extraction`; everything observable about how it went."""
    decoder = RecordingAnthropic() if name.startswith("anthropic/") else RecordingOpenAI()
    extraction = Extraction(DICT, decoder)
    items: list[Any] = []
    error: MultitaskError | None = None
    try:
        for piece in pieces:
            items += extraction.feed_bytes(piece)
        items += extraction.close()
        extraction.raise_for_outcome()
    except MultitaskError as exc:
        error = exc
    usage = extraction.usage
    return (
        items,
        type(error),
        str(error),
        extraction.finish_reason,
        (usage.input_tokens, usage.output_tokens, usage.raw) if usage else None,
        decoder.refusal,
        decoder.ended,
        "".join(decoder.texts),
        decoder.held,
    )


_REFERENCE: dict[str, tuple[Any, ...]] = {}


def reference(wire: Path, name: str) -> tuple[Any, ...]:
    if name not in _REFERENCE:
        _REFERENCE[name] = extract(name, [(wire / name).read_bytes()])
    return _REFERENCE[name]


@pytest.mark.parametrize("name", NAMES)
def test_extraction_whole(wire: Path, name: str) -> None:
    expected = CAPTURES[name]
    items, error, message, finish, usage, refusal, _, text, held = reference(wire, name)
    assert items == []  # no capture holds a `tasks` list
    assert error is expected.error
    assert expected.message in message
    assert finish == expected.finish_reason
    assert usage[:2] == expected.usage
    assert refusal == expected.refusal
    if expected.answer is not None:
        assert json.loads(text) == expected.answer
    else:
        assert text == expected.text
    assert held == expected.leftover


def test_extraction_truncated_capture_error_details(wire: Path) -> None:
    name = "openai/chat_content_4cc50a61.sse"
    extraction = Extraction(DICT, OpenAIChatDecoder())
    assert extraction.feed_bytes((wire / name).read_bytes()) == []
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        extraction.raise_for_outcome()
    assert info.value.finish_reason == "length"
    assert info.value.items_delivered == 0


#: Above this size a capture is split at the positions that can matter rather than at all of
#: them, to keep the suite fast: every byte of the first and last two events, in and around
#: every multi-byte character, the `data: ` prefix and line ends of every fourth event, and
#: every 97th byte. Set
#: MULTITASK_EXHAUSTIVE_SPLITS=1 to split every capture at every byte (about a minute).
EXHAUSTIVE_LIMIT = 8 * 1024
EXHAUSTIVE = os.environ.get("MULTITASK_EXHAUSTIVE_SPLITS") == "1"


def split_points(data: bytes) -> list[int]:
    if EXHAUSTIVE or len(data) <= EXHAUSTIVE_LIMIT:
        return list(range(len(data) + 1))
    bounds = [0]  # where each event (its lines and the blank line after) begins
    while (end := data.find(b"\n\n", bounds[-1])) >= 0:
        bounds.append(end + 2)
    if bounds[-1] != len(data):
        bounds.append(len(data))
    points: set[int] = set()
    events = list(itertools.pairwise(bounds))
    for k, (start, end) in enumerate(events):
        if k < 2 or k >= len(events) - 2:
            points.update(range(start, end + 1))  # every byte of this event
            continue
        for i in range(start, end):
            if data[i] >= 0x80:  # in and around a multi-byte character
                points.update(range(i - 1, i + 3))
            elif data[i] == 0x0A and k % 4 == 0:  # around line ends
                points.update((i - 1, i, i + 1))
        if k % 4 == 0:  # the `data: ` prefix
            points.update(range(start, start + 8))
    points.update(range(0, len(data) + 1, 97))
    return sorted(points)


@pytest.mark.parametrize("name", NAMES)
def test_extraction_split_in_two_anywhere(wire: Path, name: str) -> None:
    data = (wire / name).read_bytes()
    expected = reference(wire, name)
    points = split_points(data)
    assert len(points) > min(len(data), 1000)
    for i in points:
        got = extract(name, [data[:i], data[i:]])
        assert got == expected, f"split at byte {i} of {len(data)}: {data[i - 20 : i + 20]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_extraction_byte_by_byte(wire: Path, name: str) -> None:
    data = (wire / name).read_bytes()
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert extract(name, pieces) == reference(wire, name)


@pytest.mark.parametrize("name", NAMES)
def test_extraction_crlf_line_endings(wire: Path, name: str) -> None:
    """The same stream with CRLF line ends, split at every line-end byte, is read the same."""
    data = (wire / name).read_bytes().replace(b"\n", b"\r\n")
    expected = reference(wire, name)
    assert extract(name, [data]) == expected
    cuts = [i for i, byte in enumerate(data) if byte in b"\r\n"][:200]
    for i in cuts:
        assert extract(name, [data[:i], data[i:]]) == expected, f"split at {i}"
        assert extract(name, [data[: i + 1], data[i + 1 :]]) == expected, f"split at {i + 1}"


# -- synthetic streams with a real `tasks` answer --------------------------------------------------


class User(BaseModel):
    name: str
    age: int


USER = TypeAdapter(User)

USERS = [
    {"name": "Ann", "age": 31},
    {"name": "Bob", "age": 42},
    {"name": "Ünal", "age": 7},
]
ARGS = json.dumps({"tasks": USERS}, separators=(",", ":"), ensure_ascii=False)


def _item_ends() -> list[int]:
    """Where each item's closing brace is in ARGS (one past it)."""
    ends, offset = [], 0
    for user in USERS:
        text = json.dumps(user, separators=(",", ":"), ensure_ascii=False)
        offset = ARGS.index(text, offset) + len(text)
        ends.append(offset)
    return ends


ITEM_ENDS = _item_ends()

CHUNK_BASE = {
    "id": "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr",
    "object": "chat.completion.chunk",
    "created": 1727346176,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_7568d46099",
}


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**CHUNK_BASE, "choices": [choice], **extra}


def usage_chunk(prompt: int = 76, completion: int = 24) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return {**CHUNK_BASE, "choices": [], "usage": usage}


def openai_tool_chunks(
    deltas: list[str], finish: str | None = "tool_calls", *, index: bool = True
) -> list[dict[str, Any]]:
    """Chunks shaped exactly like chat_tools_c6aa7e39.sse, carrying `deltas` as arguments."""
    first: dict[str, Any] = {
        "id": "call_c91SqDXlYFuETYv8mUHzz6pp",
        "type": "function",
        "function": {"name": "MultiUser", "arguments": ""},
    }
    if index:
        first = {"index": 0, **first}
    chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})]
    for text in deltas:
        call: dict[str, Any] = {"function": {"arguments": text}}
        if index:
            call = {"index": 0, **call}
        chunks.append(chunk({"tool_calls": [call]}))
    if finish is not None:
        chunks.append(chunk({}, finish))
    chunks.append(usage_chunk())
    return chunks


def openai_sse(chunk_list: list[dict[str, Any]], *, done: bool = True) -> list[bytes]:
    """Each chunk as the bytes of one SSE event, as the captures have them."""
    events = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n".encode() for c in chunk_list]
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def anthropic_sse(events: list[dict[str, Any]]) -> list[bytes]:
    return [
        f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n".encode()
        for e in events
    ]


def anthropic_tool_events(
    deltas: list[str], stop: str = "tool_use", *, prose: str | None = None
) -> list[dict[str, Any]]:
    message = {
        "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 377, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    index = 0
    if prose is not None:
        events += [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": prose},
            },
            {"type": "content_block_stop", "index": 0},
        ]
        index = 1
    block = {
        "type": "tool_use",
        "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "name": "MultiUser",
        "input": {},
    }
    events.append({"type": "content_block_start", "index": index, "content_block": block})
    events += [
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": text},
        }
        for text in deltas
    ]
    events += [
        {"type": "content_block_stop", "index": index},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 65},
        },
        {"type": "message_stop"},
    ]
    return events


def expected_per_piece(deltas: list[str], lead: int, trail: int) -> list[list[dict[str, Any]]]:
    """Which items each piece completes: the one holding the item's closing brace."""
    out: list[list[dict[str, Any]]] = [[] for _ in range(lead)]
    offset = 0
    for text in deltas:
        end = offset + len(text)
        out.append([u for u, e in zip(USERS, ITEM_ENDS, strict=True) if offset < e <= end])
        offset = end
    out += [[] for _ in range(trail)]
    return out


def feed_each(extraction: Extraction[User], events: list[bytes]) -> list[list[dict[str, Any]]]:
    return [[u.model_dump() for u in extraction.feed_bytes(e)] for e in events]


def test_synthetic_answer_layout() -> None:
    assert [ARGS[e - 1] for e in ITEM_ENDS] == ["}", "}", "}"]
    assert ARGS[ITEM_ENDS[-1] :] == "]}"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 400])
def test_openai_tool_stream_yields_each_item_at_its_closing_brace(size: int) -> None:
    deltas = pieces_of(ARGS, size)
    events = openai_sse(openai_tool_chunks(deltas))
    extraction = Extraction(USER, OpenAIChatDecoder())
    got = feed_each(extraction, events)
    assert got == expected_per_piece(deltas, lead=1, trail=3)
    assert extraction.close() == []
    extraction.raise_for_outcome()
    assert extraction.delivered == 3
    assert extraction.finish_reason == "tool_calls"
    assert extraction.usage is not None
    assert (extraction.usage.input_tokens, extraction.usage.output_tokens) == (76, 24)


@pytest.mark.parametrize("size", [1, 4, 9])
def test_anthropic_tool_stream_yields_each_item_at_its_closing_brace(size: int) -> None:
    deltas = pieces_of(ARGS, size)
    events = anthropic_sse(anthropic_tool_events(deltas, prose="I'll list the users."))
    extraction = Extraction(USER, AnthropicDecoder())
    got = feed_each(extraction, events)
    # message_start, text block (start, ping, delta, stop), tool_use start | deltas | stop,
    # message_delta, message_stop
    assert got == expected_per_piece(deltas, lead=6, trail=3)
    assert extraction.close() == []
    extraction.raise_for_outcome()
    assert extraction.finish_reason == "tool_use"
    assert extraction.usage is not None
    assert (extraction.usage.input_tokens, extraction.usage.output_tokens) == (377, 65)


def test_synthetic_stream_split_anywhere_gives_the_same_items() -> None:
    data = b"".join(openai_sse(openai_tool_chunks(pieces_of(ARGS, 4))))
    for i in range(len(data) + 1):
        extraction = Extraction(USER, OpenAIChatDecoder())
        items = extraction.feed_bytes(data[:i]) + extraction.feed_bytes(data[i:])
        items += extraction.close()
        extraction.raise_for_outcome()
        assert [u.model_dump() for u in items] == USERS, i


def run_all(extraction: Extraction[Any], events: list[bytes]) -> list[Any]:
    items: list[Any] = []
    for event in events:
        items += extraction.feed_bytes(event)
    items += extraction.close()
    extraction.raise_for_outcome()
    return items


def test_quirk_tool_calls_without_index() -> None:
    events = openai_sse(openai_tool_chunks(pieces_of(ARGS, 6), index=False))
    assert b'"index":0,"id"' not in b"".join(events)
    items = run_all(Extraction(USER, OpenAIChatDecoder()), events)
    assert [u.model_dump() for u in items] == USERS


def test_quirk_whole_arguments_in_one_chunk() -> None:
    events = openai_sse(openai_tool_chunks([ARGS]))
    extraction = Extraction(USER, OpenAIChatDecoder())
    got = feed_each(extraction, events)
    assert got == [[], USERS, [], [], []]


def test_quirk_whole_arguments_in_the_first_chunk() -> None:
    first = chunk(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "MultiUser", "arguments": ARGS},
                }
            ],
        }
    )
    events = openai_sse([first, chunk({}, "tool_calls")])
    extraction = Extraction(USER, OpenAIChatDecoder())
    assert feed_each(extraction, events) == [USERS, [], []]


def test_quirk_keep_alive_comments() -> None:
    events = openai_sse(openai_tool_chunks(pieces_of(ARGS, 7)))
    noisy = [b": keep-alive\n\n" + e.replace(b"data: ", b": ping\ndata: ", 1) for e in events]
    extraction = Extraction(USER, OpenAIChatDecoder())
    items = run_all(extraction, noisy)
    assert [u.model_dump() for u in items] == USERS
    sse = SSEDecoder()
    assert len(sse.feed(b"".join(noisy))) == len(events)
    assert sse.comments == 2 * len(events)


def test_quirk_usage_on_the_last_content_chunk() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": text}) for text in pieces_of(ARGS, 9)]
    chunks.append(chunk({}, "stop", usage=usage))
    extraction = Extraction(USER, OpenAIChatDecoder())
    items = run_all(extraction, openai_sse(chunks))
    assert [u.model_dump() for u in items] == USERS
    assert extraction.finish_reason == "stop"
    assert extraction.usage is not None
    assert (extraction.usage.input_tokens, extraction.usage.output_tokens) == (12, 34)
    assert extraction.usage.total_tokens == 46


def test_quirk_reasoning_content_is_ignored() -> None:
    thoughts = ["Let me think: {", "the users are [Ann, ", "Bob]}"]
    chunks = [chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    chunks += [chunk({"reasoning_content": t, "content": None}) for t in thoughts]
    chunks += [chunk({"content": text}) for text in pieces_of(ARGS, 5)]
    chunks += [chunk({}, "stop"), usage_chunk()]
    extraction = Extraction(USER, OpenAIChatDecoder())
    got = feed_each(extraction, openai_sse(chunks))
    assert got == expected_per_piece(pieces_of(ARGS, 5), lead=4, trail=3)
    assert extraction.close() == []
    extraction.raise_for_outcome()


def test_content_json_after_prose_with_brackets_in_a_fence() -> None:
    prose = "Here are the users [from the text]:\n```json\n"
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": text}) for text in pieces_of(prose + ARGS + "\n```\nDone.", 6)]
    chunks.append(chunk({}, "stop"))
    items = run_all(Extraction(USER, OpenAIChatDecoder()), openai_sse(chunks))
    assert [u.model_dump() for u in items] == USERS


def test_anthropic_prose_with_brackets_before_tool_use() -> None:
    """A text block before the tool call is prose even when it holds brackets."""
    prose = "I'll record the users [Ann, Bob and Ünal] with {name, age}."
    events = anthropic_sse(anthropic_tool_events(pieces_of(ARGS, 4), prose=prose))
    extraction = Extraction(USER, AnthropicDecoder())
    items = run_all(extraction, events)
    assert [u.model_dump() for u in items] == USERS


def test_anthropic_thinking_block_is_ignored() -> None:
    events = anthropic_tool_events(pieces_of(ARGS, 6))
    thinking = [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": '{"tasks": [{"name": "Eve"'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "abc"},
        },
        {"type": "content_block_stop", "index": 0},
    ]
    for event in events[1:]:
        if "index" in event:
            event["index"] = 1
    items = run_all(
        Extraction(USER, AnthropicDecoder()), anthropic_sse(events[:1] + thinking + events[1:])
    )
    assert [u.model_dump() for u in items] == USERS


def test_openai_truncated_stream_yields_items_then_incomplete() -> None:
    cut = ITEM_ENDS[1] + 5
    events = openai_sse(openai_tool_chunks(pieces_of(ARGS[:cut], 3), finish="length"))
    extraction = Extraction(USER, OpenAIChatDecoder())
    items: list[User] = []
    for event in events:
        items += extraction.feed_bytes(event)
    assert [u.model_dump() for u in items] == USERS[:2]
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        extraction.raise_for_outcome()
    assert info.value.finish_reason == "length"
    assert info.value.items_delivered == 2


def test_openai_mid_stream_error_after_items() -> None:
    cut = ITEM_ENDS[1] + 2
    chunks = openai_tool_chunks(pieces_of(ARGS[:cut], 4), finish=None)[:-1]
    error = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    events = openai_sse([*chunks, error], done=False)
    # All at once: the items come back first, the error on the next call.
    extraction = Extraction(USER, OpenAIChatDecoder())
    items = extraction.feed_bytes(b"".join(events))
    assert [u.model_dump() for u in items] == USERS[:2]
    with pytest.raises(StreamError) as info:
        extraction.feed_bytes(b"data: [DONE]\n\n")
    assert info.value.error_type == "server_error"
    assert "The server had an error" in str(info.value)
    assert info.value.body["type"] == "server_error"
    assert extraction.close() == []
    with pytest.raises(StreamError):
        extraction.raise_for_outcome()
    # Event by event: the error event itself raises, after the items were handed out.
    extraction = Extraction(USER, OpenAIChatDecoder())
    seen: list[User] = []
    for event in events[:-1]:
        seen += extraction.feed_bytes(event)
    assert [u.model_dump() for u in seen] == USERS[:2]
    with pytest.raises(StreamError):
        extraction.feed_bytes(events[-1])
    # ... and close() then says so again.
    assert extraction.close() == []
    with pytest.raises(StreamError):
        extraction.raise_for_outcome()


def test_anthropic_overloaded_error_event() -> None:
    cut = ITEM_ENDS[0] + 3
    events = anthropic_tool_events(pieces_of(ARGS[:cut], 5))[:-3]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    data = anthropic_sse(events)
    assert data[-1].startswith(b"event: error\ndata: ")
    extraction = Extraction(USER, AnthropicDecoder())
    items = extraction.feed_bytes(b"".join(data))
    assert [u.model_dump() for u in items] == USERS[:1]
    assert extraction.close() == []
    with pytest.raises(StreamError) as info:
        extraction.raise_for_outcome()
    assert info.value.error_type == "overloaded_error"
    assert "Overloaded" in str(info.value)
    assert info.value.status_code is None


def test_anthropic_error_event_before_any_item_raises_at_once() -> None:
    data = anthropic_sse(
        [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    )
    extraction = Extraction(USER, AnthropicDecoder())
    with pytest.raises(StreamError) as info:
        extraction.feed_bytes(data[0])
    assert info.value.error_type == "overloaded_error"
