"""Fuzzing the sans-IO core with hypothesis: decoders, providers' stream decoders, TaskParser.

Inputs are arbitrary bytes, arbitrary splits, the team's real captures and the scripted
server's renderings of every provider's stream, mutated (byte flips, insertions, deletions,
truncations, duplicated and shuffled events). The invariants:

* nothing raises but a `multitask.MultitaskError` (and each example ends: a hypothesis deadline
  plus an alarm that fails an example which never returns);
* how the bytes are split never changes the outcome;
* a valid answer cut anywhere gives exactly the items complete before the cut, in order.

`MULTITASK_FUZZ_EXAMPLES` scales the run (default 40 examples per test, about 30 s in all);
`fuzz/fuzz_core.py` is the long run, with atheris. Bugs found are the `xfail(strict=True)`
tests at the end of the file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from multitask import (
    EventTooLargeError,
    IncompleteOutputError,
    MalformedOutputError,
    MultiTask,
    MultitaskError,
    StreamDecodeError,
)
from multitask.lowlevel import NDJSONDecoder, ServerSentEvent, SSEDecoder, TaskParser
from multitask.providers import (
    AnswerSource,
    AnthropicDecoder,
    GeminiDecoder,
    Mode,
    OllamaDecoder,
    OpenAIChatDecoder,
    OpenAIResponsesDecoder,
    ProviderDecoder,
    RequestSpec,
    get_provider,
)
from multitask.testing import Script, _wire

EXAMPLES = int(os.environ.get("MULTITASK_FUZZ_EXAMPLES", "40"))
#: Seconds an example may run before it counts as a hang (inputs are a few KB at most).
HANG_SECONDS = 20.0

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # `wire` is a constant path
    ],
)


class User(BaseModel):
    name: str
    age: int


MULTI = MultiTask(User)
DECODERS: list[type[ProviderDecoder]] = [
    OpenAIChatDecoder,
    AnthropicDecoder,
    OpenAIResponsesDecoder,
    GeminiDecoder,
    OllamaDecoder,
]
SOURCES: list[AnswerSource] = ["tool", "content", "auto", "calls"]
BOM = b"\xef\xbb\xbf"


# -- harness -----------------------------------------------------------------------------------


class Hang(Exception):
    """An example ran past `HANG_SECONDS`."""


@contextlib.contextmanager
def time_limit(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail the example with `Hang` if it runs longer than `seconds` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"an example ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def split(data: st.DataObject, body: bytes) -> list[bytes]:
    """`body` in pieces at drawn points (empty pieces included)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=12), label="cuts"))
    points = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points)]


def split_text(data: st.DataObject, text: str) -> list[str]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="cuts"))
    points = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


@dataclass
class Outcome:
    """What an extraction gave: its items, and the error that ended it (None: success)."""

    items: list[User]
    error: MultitaskError | None

    @property
    def kind(self) -> type[MultitaskError] | None:
        return None if self.error is None else type(self.error)


def extract(decoder: ProviderDecoder, chunks: list[bytes]) -> Outcome:
    """Feed `chunks` to an `Extraction` until it raises, close it, and check the error contract.

    Only `MultitaskError`s are caught: anything else fails the test.
    """
    extraction = MULTI.extraction(decoder)
    items: list[User] = []
    error: MultitaskError | None = None
    for chunk in chunks:
        try:
            items += extraction.feed_bytes(chunk)
        except MultitaskError as exc:
            error = exc
            break
    assert all(isinstance(item, User) for item in items)
    tail = extraction.close()
    if error is not None:
        assert tail == []  # nothing comes out after the error was raised
        with pytest.raises(type(error)):
            extraction.raise_for_outcome()
        return Outcome(items, error)
    items += tail
    try:
        extraction.raise_for_outcome()
    except MultitaskError as exc:
        return Outcome(items, exc)
    return Outcome(items, None)


# -- known bugs, tolerated where fuzzing would trip over them ---------------------------------


class KnownShapeBug(Exception):
    """A decoder met a well-formed JSON event of an unexpected shape (see the xfail tests)."""


SHAPE_ERRORS = (AttributeError, KeyError, IndexError, TypeError)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_TOLERANT: dict[type[ProviderDecoder], type[ProviderDecoder]] = {}


def tolerant(cls: type[ProviderDecoder]) -> type[ProviderDecoder]:
    """`cls`, but a payload that trips the known shape bug raises `KnownShapeBug`.

    Byte mutations of real streams now and then make an event that is valid JSON of the wrong
    shape (`"delta"` becomes `"delt"`); the decoders then raise KeyError / TypeError / ...
    (test_decoders_turn_any_event_shape_into_multitask_errors). The fuzz tests below reject
    exactly those examples, so that they keep hunting other bugs. Once the bug is fixed that
    test passes, fails as strict, and this wrapper should go.
    """

    def payload(self: ProviderDecoder, obj: Any, event: str = "message") -> str:
        try:
            text = cls.payload(self, obj, event)
        except SHAPE_ERRORS as exc:
            raise KnownShapeBug(repr(obj)[:200]) from exc
        if (
            not isinstance(text, str)
            or not isinstance(self.refusal, str)
            or not _hashable(self.finish_reason)
            or not all(isinstance(t, str) and _hashable(k) for k, t in self.calls)
        ):
            raise KnownShapeBug(repr(obj)[:200])
        return text

    if cls not in _TOLERANT:
        _TOLERANT[cls] = type(f"Tolerant{cls.__name__}", (cls,), {"payload": payload})
    return _TOLERANT[cls]


def known_bug(exc: BaseException) -> bool:
    """Whether `exc` is one of the bugs the xfail tests at the end of this file show."""
    if isinstance(exc, KnownShapeBug):
        return True
    if isinstance(exc, UnicodeDecodeError):  # test_lone_low_surrogate_escape_in_the_answer
        frames = traceback.extract_tb(exc.__traceback__)
        return any(f.name == "_send" and f.filename.endswith("_taskparser.py") for f in frames)
    return False


def extract_tolerant(decoder: ProviderDecoder, chunks: list[bytes]) -> Outcome:
    """`extract`, rejecting the example if it trips a known bug."""
    try:
        return extract(decoder, chunks)
    except Exception as exc:
        if known_bug(exc):
            reject()
        raise


def tasks_probe_bug(
    a: tuple[list[Any], type[MultitaskError] | None],
    b: tuple[list[Any], type[MultitaskError] | None],
    data: str | bytes,
) -> bool:
    """Whether two outcomes differ only by test_tasks_key_found_by_substring: no items either
    way, and one took a "tasks" seen outside the answer's object for its list."""
    found = "tasks" in data if isinstance(data, str) else b"tasks" in data
    kinds = {a[1], b[1]}
    return found and not a[0] and not b[0] and kinds == {None, MalformedOutputError}


# -- reference decoders --------------------------------------------------------------------------


def reference_sse(body: bytes) -> tuple[list[ServerSentEvent], int, int]:
    """The WHATWG event-stream algorithm over a whole body: its events, the peak load of a
    line, and the peak size of an event's data.

    The load of a line is its length plus the data already held for its event: what the
    decoder compares with its cap while the line is unfinished. The size of an event's data
    is its data lines' lengths plus one each. An unfinished last line is dropped, as at the
    end of a stream; its load still counts (the decoder holds it).
    """
    if body.startswith(BOM):
        body = body[3:]
    lines = re.split(rb"\r\n|\r|\n", body)
    events: list[ServerSentEvent] = []
    data: list[str] = []
    size = 0
    event_type = ""
    last_id = ""
    retry: int | None = None
    peak = data_peak = 0
    for line in lines[:-1]:
        peak = max(peak, len(line) + size)
        if not line:
            if data:
                events.append(
                    ServerSentEvent("\n".join(data), event_type or "message", last_id, retry)
                )
            data, size, event_type = [], 0, ""
            continue
        if line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
            size += len(value) + 1
            data_peak = max(data_peak, size)
        elif name == b"event":
            event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value and all(48 <= b <= 57 for b in value):
            retry = int(value)
    peak = max(peak, len(lines[-1]) + size)
    return events, peak, data_peak


def reference_ndjson(body: bytes) -> list[ServerSentEvent]:
    """One event per non-blank line; a last line without its newline counts too."""
    return [
        ServerSentEvent(line.decode("utf-8", "replace"))
        for line in body.split(b"\n")
        if line.strip()
    ]


def decode_sse(chunks: list[bytes], cap: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder() if cap is None else SSEDecoder(max_event_bytes=cap)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.end()


def decode_ndjson(chunks: list[bytes], cap: int | None = None) -> list[ServerSentEvent]:
    decoder = NDJSONDecoder() if cap is None else NDJSONDecoder(max_event_bytes=cap)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.end()


# -- strategies ----------------------------------------------------------------------------------

_eol = st.sampled_from([b"\n", b"\r", b"\r\n"])
_field = st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"dat", b"Data", b"data "])
_value = (
    st.binary(max_size=40)
    | st.text(max_size=20).map(str.encode)
    | st.sampled_from(
        [b"", b" ", b"  x", b"123", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"[DONE]", b"{}"]
    )
)


@st.composite
def sse_like(draw: st.DrawFn) -> bytes:
    """Bytes that look like an event stream: field lines, comments and blank lines."""
    out = [BOM] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 16))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            line = b""
        elif kind == 1:
            line = b":" + draw(_value)
        else:
            sep = draw(st.sampled_from([b":", b": ", b"", b"::"]))
            line = draw(_field) + sep + draw(_value)
        out.append(line + draw(_eol))
    if draw(st.booleans()):
        out.append(draw(_value))  # an unfinished last line
    return b"".join(out)


_bytes = st.binary(max_size=600) | sse_like()


def _json_strings() -> st.SearchStrategy[str]:
    special = st.sampled_from(['"', "\\", "{", "}", "[", "]", ",", ":", "\n", "`", "é", "\u2028"])
    return st.text(st.characters(codec="utf-8") | special, max_size=10)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)  # wider ints: test_integers_wider_than_64_bits
    | st.floats(allow_nan=False, allow_infinity=False)
    | _json_strings()
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_strings(), inner, max_size=3),
    max_leaves=8,
)
_users: st.SearchStrategy[list[dict[str, Any]]] = st.lists(
    st.builds(dict, name=_json_strings(), age=st.integers(0, 150)), min_size=0, max_size=5
)


# -- seeds: real captures, and every provider's stream as the scripted server renders it -------

SEED_USERS = [
    {"name": "Ada Lovelace", "age": 36},
    {"name": 'Al}an "T" [x]', "age": 41},
    {"name": "Grâce\nH\\opper", "age": 85},
]


def request_body(provider: _wire.Provider, mode: Mode) -> dict[str, Any]:
    """The JSON body the provider sends for `mode` (what the scripted server answers to)."""
    spec = RequestSpec("m", MULTI, mode, "system", [{"role": "user", "content": "t"}])
    return dict(get_provider(provider, base_url="http://x", api_key="k").request(spec).json)


def rendered(provider: _wire.Provider, mode: Mode, script: Script) -> bytes:
    """The body of the stream the scripted server sends for `script`, deterministically."""
    plan = _wire.stream_plan(
        provider,
        request_body(provider, mode),
        script,
        ids=_wire.Ids(7),
        now=0,
        model="m",
    )
    return plan.body


def provider_modes() -> list[tuple[_wire.Provider, Mode]]:
    return [
        (name, cast(Mode, mode))
        for name in _wire.PROVIDERS
        for mode in sorted(get_provider(name, base_url="http://x", api_key="k").modes)
    ]


PROVIDER_MODES = provider_modes()


@cache
def seeds(wire: Path, framing: str) -> tuple[bytes, ...]:
    """Streams to mutate: the captures (as NDJSON lines too) and the rendered streams."""
    captures = [p.read_bytes() for p in sorted(wire.glob("*/*.sse"))]
    out: list[bytes] = []
    if framing == "sse":
        out += captures
    else:  # each capture event's data as one line
        out += [b"".join(e.data.encode() + b"\n" for e in decode_sse([c])) for c in captures]
    script = Script(items=SEED_USERS, chunk_size=5)
    for provider, mode in PROVIDER_MODES:
        if (provider == "ollama") == (framing == "ndjson"):
            out.append(rendered(provider, mode, script))
    return tuple(out)


def pieces(body: bytes, ndjson: bool) -> list[bytes]:
    """`body` cut into its events (SSE) or lines (NDJSON), separators kept."""
    if ndjson:
        return body.splitlines(keepends=True)
    return [p for p in re.split(rb"(?<=\n\n)|(?<=\r\n\r\n)", body) if p]


_interesting = st.sampled_from([*b'{}[]",:\\ \n\r0-.eEtrufalsn', 0, 0xFF, 0xEF])


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, ndjson: bool) -> bytes:
    """`seed` after 1 to 4 mutations: byte flips, insertions, deletions, truncations,
    duplicated, dropped or shuffled events."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "drop", "shuffle"])
        )
        if op in ("flip", "insert", "delete", "truncate"):
            at = draw(st.integers(0, len(data)))
            if op == "flip" and at < len(data):
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                data[at:at] = bytes([draw(st.integers(0, 255) | _interesting)])
            elif op == "delete":
                del data[at : at + draw(st.integers(1, 8))]
            elif op == "truncate":
                del data[at:]
            continue
        parts = pieces(bytes(data), ndjson)
        if not parts:
            continue
        i = draw(st.integers(0, len(parts) - 1))
        if op == "dup":
            parts.insert(i, parts[i])
        elif op == "drop":
            del parts[i]
        else:  # shuffle a window of up to 6 events
            window = parts[i : i + 6]
            parts[i : i + 6] = draw(st.permutations(window))
        data = bytearray(b"".join(parts))
    return bytes(data)


# -- SSE and NDJSON decoders -------------------------------------------------------------------


@FUZZ
@given(body=_bytes, data=st.data())
def test_sse_decoder_matches_the_reference_on_any_bytes_any_split(
    body: bytes, data: st.DataObject
) -> None:
    expected, _, _ = reference_sse(body)
    with time_limit():
        assert decode_sse(split(data, body)) == expected
        assert decode_sse([body]) == expected


@FUZZ
@given(body=_bytes, cap=st.integers(1, 64), data=st.data())
def test_sse_event_cap_is_the_only_error(body: bytes, cap: int, data: st.DataObject) -> None:
    """Under a cap, the decoder either gives the reference's events or raises
    EventTooLargeError, and only when a line plus its event's data really went past it."""
    expected, peak, data_peak = reference_sse(body)
    with time_limit():
        try:
            events = decode_sse(split(data, body), cap)
        except EventTooLargeError:
            assert peak > cap
            return
    assert events == expected
    assert data_peak <= cap  # an event's data past the cap always raises


@FUZZ
@given(body=_bytes | sse_like().map(lambda b: b.replace(b"\r", b"")), data=st.data())
def test_ndjson_decoder_matches_the_reference_on_any_bytes_any_split(
    body: bytes, data: st.DataObject
) -> None:
    with time_limit():
        assert decode_ndjson(split(data, body)) == reference_ndjson(body)
        cap = data.draw(st.integers(1, 64), label="cap")
        try:
            events = decode_ndjson(split(data, body), cap)
        except EventTooLargeError:
            assert max(len(line) for line in body.split(b"\n")) > cap
            return
        assert events == reference_ndjson(body)


# -- TaskParser ----------------------------------------------------------------------------------


def parse(
    chunks: list[str], *, whole: bool = False
) -> tuple[list[Any], type[MultitaskError] | None]:
    """Items and the error type, feeding until a feed raises, then closing."""
    parser = TaskParser(whole=whole)
    items: list[Any] = []
    for chunk in chunks:
        try:
            items += parser.feed(chunk)
        except MultitaskError as exc:
            items += parser.close()
            return items, type(exc)
        except Exception as exc:
            if known_bug(exc):
                reject()
            raise
    items += parser.close()  # never raises
    return items, None if parser.error is None else type(parser.error)


@st.composite
def answer_like(draw: st.DrawFn) -> str:
    """Text near a JSON answer: a valid document mutated, or JSON-ish noise."""
    if draw(st.booleans()):
        tokens = st.sampled_from(
            [
                '{"tasks":',
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                '"',
                '"a"',
                "1",
                "-0.5e3",
                "true",
                "null",
                "\\",
                "\\u00e9",
                "\\ud83d\\ude00",
                " ",
                "\n",
                "```json\n",
                "```",
                "tasks",
                "x",
            ]
        )
        return "".join(draw(st.lists(tokens, max_size=40)))
    text = json.dumps({"tasks": draw(st.lists(_json_values, max_size=4))})
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chars)))
        op = draw(st.integers(0, 2))
        if op == 0 and at < len(chars):
            del chars[at]
        elif op == 1:
            chars.insert(at, draw(st.sampled_from(list('{}[]",:\\ 0e-.atrue'))))
        else:
            del chars[at:]
    prose = draw(st.sampled_from(["", "Sure!\n", "```json\n", "I found [2] people:\n", "{"]))
    return prose + "".join(chars)


@FUZZ
@given(text=answer_like() | _json_strings(), whole=st.booleans(), data=st.data())
def test_taskparser_any_text_any_split(text: str, whole: bool, data: st.DataObject) -> None:
    """Only MultitaskErrors, and the split never changes the items or the outcome."""
    with time_limit():
        at_once = parse([text], whole=whole)
        for pieces_ in (split_text(data, text), list(text)):
            outcome = parse(pieces_, whole=whole)
            if outcome != at_once and tasks_probe_bug(outcome, at_once, text):
                reject()
            assert outcome == at_once


@dataclass(frozen=True)
class Document:
    """A rendered answer: its text, where the JSON starts and ends, and where each item ends."""

    text: str
    items: list[Any]
    json_start: int
    json_end: int
    ends: list[int]  # where each item's text ends (exclusive)

    def complete_before(self, cut: int) -> list[Any]:
        """The items complete within `text[:cut]`: a number needs the character after it."""
        out = []
        for item, end in zip(self.items, self.ends, strict=True):
            numeric = isinstance(item, (int, float)) and not isinstance(item, bool)
            if cut > end or (cut == end and not numeric):
                out.append(item)
            else:
                break
        return out


@st.composite
def documents(draw: st.DrawFn) -> Document:
    """`{..., "tasks": [...], ...}` or a bare array, laid out in one of several ways."""
    items = draw(st.lists(_json_values, max_size=6))
    compact = draw(st.booleans())
    ws = st.sampled_from(["", " ", "\n  ", "\t"])
    item_seps = (",", ":") if compact else (", ", ": ")
    texts = [
        json.dumps(item, separators=item_seps, ensure_ascii=draw(st.booleans())) for item in items
    ]
    extra = st.dictionaries(
        _json_strings().filter(lambda k: k not in ("tasks", "tasks.item")), _json_values, max_size=2
    )
    bare = draw(st.booleans())
    head = (
        "["
        if bare
        else "{"
        + "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in draw(extra).items())
        + '"tasks"'
        + draw(ws)
        + ":"
        + draw(ws)
        + "["
    )
    prose = draw(st.sampled_from(["", "  \n", "Here they are:\n", "```json\n"]))
    text = prose + head
    ends: list[int] = []
    for i, item_text in enumerate(texts):
        text += (draw(ws) + "," if i else "") + draw(ws) + item_text
        ends.append(len(text))
    text += draw(ws) + "]"
    if not bare:
        text += "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in draw(extra).items()) + "}"
    json_end = len(text)
    text += draw(st.sampled_from(["", "\n", "\n```", "\nThat is all {"]))
    return Document(text, items, len(prose), json_end, ends)


@FUZZ
@given(document=documents(), data=st.data())
def test_taskparser_cut_anywhere_gives_exactly_the_complete_items(
    document: Document, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(document.text)), label="cut")
    prefix = document.text[:cut]
    with time_limit():
        parser = TaskParser()
        items: list[Any] = []
        for piece in split_text(data, prefix):
            items += parser.feed(piece)  # a valid prefix never raises
        items += parser.close()
    assert items == document.complete_before(cut)
    assert parser.items_emitted == len(items)
    if cut >= document.json_end:
        assert parser.error is None
    elif cut <= document.json_start:
        assert isinstance(parser.error, MalformedOutputError)  # no JSON yet
    else:
        assert isinstance(parser.error, IncompleteOutputError)
        assert parser.error.items_delivered == len(items)
        assert parser.truncated


# -- Extraction with every provider's decoder ------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@FUZZ
@given(body=_bytes, data=st.data())
def test_extraction_any_bytes(
    decoder: type[ProviderDecoder], source: AnswerSource, body: bytes, data: st.DataObject
) -> None:
    with time_limit():
        whole = extract_tolerant(tolerant(decoder)(source), [body])
        pieces_ = extract_tolerant(tolerant(decoder)(source), split(data, body))
    same_as_whole(pieces_, whole, body)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@FUZZ
@given(data=st.data())
def test_extraction_mutated_streams(
    decoder: type[ProviderDecoder], source: AnswerSource, wire: Path, data: st.DataObject
) -> None:
    """Real captures and rendered streams, mutated, whole and split: same items, same outcome."""
    ndjson = decoder.framing == "ndjson"
    seed = data.draw(st.sampled_from(seeds(wire, decoder.framing)), label="seed")
    body = data.draw(mutated(seed, ndjson), label="body")
    with time_limit():
        whole = extract_tolerant(tolerant(decoder)(source), [body])
        pieces_ = extract_tolerant(tolerant(decoder)(source), split(data, body))
    same_as_whole(pieces_, whole, body)


def same_as_whole(split_: Outcome, whole: Outcome, body: bytes) -> None:
    """The split feed gave what the whole feed gave (bar the known "tasks" probe bug)."""
    a, b = (split_.items, split_.kind), (whole.items, whole.kind)
    if a != b and tasks_probe_bug(a, b, body):
        reject()
    assert a == b


@dataclass(frozen=True)
class Step:
    """The state of a stream after one of its events: where the event ended in the body, the
    items complete so far, and whether the answer is absent, partial or complete."""

    offset: int
    items: list[User]
    answer: str  # "none", "partial" or "complete"


def complete_users(text: str) -> tuple[list[User], bool]:
    """The users complete in a prefix of `{"tasks": [...]}` text, and whether it is all there.

    Independent of ijson: `json` decodes one item at a time after the list's bracket.
    """
    try:
        return [User(**u) for u in json.loads(text)["tasks"]], True
    except ValueError:
        pass
    start = text.find("[")
    if start < 0:
        return [], False
    decoder = json.JSONDecoder()
    users: list[User] = []
    at = start + 1
    while True:
        while at < len(text) and text[at] in " \t\n\r,":
            at += 1
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return users, False
        users.append(User(**value))


def steps(provider: _wire.Provider, mode: Mode, body: bytes) -> list[Step]:
    """Replay `body` event by event with a probe decoder; the items come from `json`."""
    ndjson = provider == "ollama"
    framing: SSEDecoder | NDJSONDecoder = NDJSONDecoder() if ndjson else SSEDecoder()
    probe = get_provider(provider, base_url="http://x", api_key="k").decoder(mode)
    answer = ""
    calls: dict[Any, str] = {}
    out: list[Step] = []
    end = 0
    for piece in pieces(body, ndjson):
        end += len(piece)
        events = framing.feed(piece)
        assert len(events) == 1, piece  # each rendered piece is one event
        # An event dispatches at its blank line's first line end: after CR LF CR, the LF
        # that follows changes nothing.
        offset = end - 1 if piece.endswith(b"\r\n\r\n") else end
        for event in events:
            answer += probe.event(event)
            for key, text in probe.calls:
                calls[key] = calls.get(key, "") + text
            probe.calls = []
            if mode == "parallel_tools":
                done = [json.loads(t) for t in calls.values() if _is_json(t)]
                users = [User(**u) for u in done]
                state = (
                    "none" if not calls else "complete" if len(done) == len(calls) else "partial"
                )
            else:
                users, complete = complete_users(answer)
                state = "none" if not answer else "complete" if complete else "partial"
            out.append(Step(offset, users, state))
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("provider", "mode"), PROVIDER_MODES)
@FUZZ
@given(users=_users, chunk_size=st.integers(1, 9), data=st.data())
def test_extraction_cut_stream_gives_exactly_the_complete_items(
    provider: _wire.Provider,
    mode: Mode,
    users: list[dict[str, Any]],
    chunk_size: int,
    data: st.DataObject,
) -> None:
    """A provider's valid stream cut at any byte: the items of the events before the cut."""
    body = rendered(provider, mode, Script(items=users, chunk_size=chunk_size))
    history = steps(provider, mode, body)
    assert history[-1].items == [User(**u) for u in users]
    # A parallel answer with no items has no tool call (with tool_choice "required" the APIs
    # always make one): it reads as an answer that never began.
    assert history[-1].answer == ("none" if mode == "parallel_tools" and not users else "complete")
    cut = data.draw(st.integers(0, len(body)), label="cut")
    before = [s for s in history if s.offset <= cut]
    state = before[-1] if before else Step(0, [], "none")
    decoder = get_provider(provider, base_url="http://x", api_key="k").decoder(mode)
    with time_limit():
        outcome = extract(decoder, split(data, body[:cut]))
    line = body[state.offset : cut]
    if provider == "ollama" and line.strip() and not body[cut:].startswith(b"\n"):
        # A line cut short is read at the end of the stream, and is not JSON.
        assert outcome.items == state.items
        assert isinstance(outcome.error, StreamDecodeError)
        return
    if provider == "ollama" and line.strip():  # the whole line but its newline: it counts
        state = next(s for s in history if s.offset == cut + 1)
    assert outcome.items == state.items
    if state.answer == "complete":
        assert outcome.error is None
    elif state.answer == "partial":
        assert isinstance(outcome.error, IncompleteOutputError)
        assert outcome.error.items_delivered == len(state.items)
    else:  # the answer never began
        assert isinstance(outcome.error, (MalformedOutputError, IncompleteOutputError))


@pytest.mark.parametrize(("provider", "mode"), PROVIDER_MODES)
@FUZZ
@given(users=_users, data=st.data())
def test_extraction_mutation_keeps_the_items_before_it(
    provider: _wire.Provider, mode: Mode, users: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Damage at byte p never takes back the items of the events that ended before p."""
    body = rendered(provider, mode, Script(items=users, chunk_size=4))
    at = data.draw(st.integers(0, len(body)), label="at")
    op = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="op")
    damaged = bytearray(body)
    if op == "flip" and at < len(body):
        damaged[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif op == "insert":
        damaged[at:at] = bytes([data.draw(st.integers(0, 255) | _interesting, label="byte")])
    else:
        del damaged[at : at + data.draw(st.integers(1, 16), label="length")]
    kept = [s for s in steps(provider, mode, body) if s.offset <= at]
    expected = kept[-1].items if kept else []
    plain = get_provider(provider, base_url="http://x", api_key="k").decoder(mode)
    decoder = tolerant(type(plain))(plain.source)  # the same decoder, as `mode` makes it
    with time_limit():
        outcome = extract_tolerant(decoder, split(data, bytes(damaged)))
    assert outcome.items[: len(expected)] == expected


# -- bugs found ------------------------------------------------------------------------------------

SHAPES: list[tuple[type[ProviderDecoder], AnswerSource, dict[str, Any]]] = [
    (OpenAIChatDecoder, "tool", {"choices": [1]}),
    (OpenAIChatDecoder, "tool", {"choices": {"0": {}}}),
    (OpenAIChatDecoder, "tool", {"choices": [{"delta": "x"}]}),
    (OpenAIChatDecoder, "tool", {"usage": 5}),
    (OpenAIChatDecoder, "content", {"choices": [{"delta": {"content": ["x"]}}]}),
    (OpenAIChatDecoder, "tool", {"choices": [{"finish_reason": ["length"]}]}),
    (AnthropicDecoder, "tool", {"type": "content_block_delta", "index": 0}),
    (AnthropicDecoder, "tool", {"type": "content_block_delta", "delta": "x"}),
    (AnthropicDecoder, "tool", {"type": "message_start", "message": [1]}),
    (
        AnthropicDecoder,
        "content",
        {"type": "content_block_start", "index": [], "content_block": {"type": "text"}},
    ),
    (OpenAIResponsesDecoder, "tool", {"type": "response.completed", "response": [1]}),
    (OpenAIResponsesDecoder, "tool", {"type": "response.failed", "response": {"error": "boom"}}),
    (
        OpenAIResponsesDecoder,
        "calls",
        {"type": "response.function_call_arguments.delta", "item_id": {}, "delta": "{"},
    ),
    (GeminiDecoder, "content", {"candidates": [1]}),
    (GeminiDecoder, "content", {"promptFeedback": [1]}),
    (GeminiDecoder, "content", {"candidates": [{"content": {"parts": [1]}}]}),
    (OllamaDecoder, "content", {"message": [1]}),
    (OllamaDecoder, "tool", {"message": {"tool_calls": [1]}}),
]


def event_bytes(decoder: type[ProviderDecoder], obj: Any) -> bytes:
    data = json.dumps(obj).encode()
    return data + b"\n" if decoder.framing == "ndjson" else b"data: " + data + b"\n\n"


@pytest.mark.parametrize(
    ("decoder", "source", "obj"),
    SHAPES,
    ids=[f"{d.__name__}-{s}-{json.dumps(o)[:40]}" for d, s, o in SHAPES],
)
def test_decoders_turn_any_event_shape_into_multitask_errors(
    decoder: type[ProviderDecoder], source: AnswerSource, obj: dict[str, Any]
) -> None:
    outcome = extract(decoder(source), [event_bytes(decoder, obj)])
    assert outcome.items == []


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@settings(FUZZ, report_multiple_bugs=False)
@given(
    objs=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "choices",
                    "delta",
                    "index",
                    "message",
                    "content",
                    "usage",
                    "candidates",
                    "error",
                    "response",
                    "finish_reason",
                    "tool_calls",
                    "content_block",
                    "parts",
                    "done",
                    "item_id",
                ]
            ),
            _json_values,
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    )
)
@example(
    objs=[
        {"choices": [1]},
        {"type": "content_block_delta", "delta": "x"},
        {"type": "response.completed", "response": [1]},
        {"candidates": [1]},
        {"message": [1]},
    ]
)
def test_any_json_event_gives_only_multitask_errors(
    decoder: type[ProviderDecoder], source: AnswerSource, objs: list[dict[str, Any]]
) -> None:
    with time_limit():
        extract(decoder(source), [event_bytes(decoder, o) for o in objs])


@pytest.mark.parametrize(
    "feed",
    [
        lambda text: TaskParser().feed(text),
        lambda text: MULTI.extraction(OpenAIChatDecoder("content")).feed_text(text),
        lambda text: MULTI.extraction(OpenAIChatDecoder("content")).feed_payload(
            json.loads(json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}))
        ),
    ],
    ids=["TaskParser.feed", "Extraction.feed_text", "Extraction.feed_payload"],
)
def test_lone_surrogate_in_the_answer(feed: Callable[[str], Any]) -> None:
    with contextlib.suppress(MultitaskError):
        feed('{"tasks": [{"name": "\ud800", "age": 1}]}')


def test_retry_field_with_thousands_of_digits() -> None:
    events = SSEDecoder().feed(b"retry: " + b"9" * 5000 + b"\ndata: x\n\n")
    assert [e.data for e in events] == ["x"]


@pytest.mark.xfail(
    strict=True,
    raises=MalformedOutputError,
    reason="TaskParser uses ijson with use_float=True, so yajl parses integers as int64: a "
    "valid integer past 2**63 is 'integer overflow', MalformedOutputError",
)
def test_integers_wider_than_64_bits() -> None:
    parser = TaskParser()
    items = parser.feed('{"tasks": [{"id": 12345678901234567890}]}') + parser.close()
    assert items == [{"id": 12345678901234567890}]
    assert parser.error is None


def test_lone_low_surrogate_escape_in_the_answer() -> None:
    answer = '{"tasks": [{"name": "Ada", "age": 36}, {"name": "\\udc00", "age": 1}]}'
    chunk = {"choices": [{"index": 0, "delta": {"content": answer}}]}
    outcome = extract(
        OpenAIChatDecoder("content"), [b"data: " + json.dumps(chunk).encode() + b"\n\n"]
    )
    assert outcome.items[:1] == [User(name="Ada", age=36)]


@pytest.mark.parametrize(
    "chunks",
    [
        ['{"answer": {"tasks": [{"name": "Ada", "age": 36}]}}'],
        ['{"status": "tasks"}'],
        ['{"answer": 1} Note: no "tasks" here.'],
    ],
    ids=["nested-key", "string-value", "prose-after"],
)
def test_tasks_key_found_by_substring(chunks: list[str]) -> None:
    assert parse(chunks) == ([], MalformedOutputError)
    # The same text split after the JSON closed does say so: the outcome depends on the split.
    assert parse(["".join(chunks)]) == parse(list("".join(chunks)))


def test_usage_counts_of_the_wrong_type() -> None:
    chunk = {"choices": [], "usage": {"prompt_tokens": "12", "completion_tokens": 3}}
    outcome = extract(OpenAIChatDecoder("tool"), [event_bytes(OpenAIChatDecoder, chunk)])
    assert outcome.items == []
    extraction = MULTI.extraction(OpenAIChatDecoder("tool"))
    extraction.feed_bytes(event_bytes(OpenAIChatDecoder, chunk))
    usage = extraction.usage
    assert usage is None or usage.total_tokens >= 0
