"""The per-event fast paths give exactly what the general paths give, on any input.

* `SSEDecoder.feed` and `frames` cut events of the common shape out of the bytes by slicing;
  the reference is the same decoder reading every byte line by line (`GeneralSSE`).
* A provider decoder that learned a template (`ProviderDecoder.template`) reads an event by
  parsing its answer string alone; the reference is its twin made with the switch off
  (`fast=False`), which never learns one.
* `Extraction.feed_bytes` reads a whole event by that template extended over the SSE framing;
  the reference is the general per-event path (`ServerSentEvent`s, each event parsed whole).
* Every provider's wire format, read with the switch on and off (`fast=True`, `fast=False`,
  `MULTITASK_FASTPATH=0`): the same items, usage, finish reasons and errors.

Every comparison is per feed: what came out, or the error raised (type and message), and the
decoders' state after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from multitask import EventTooLargeError, MultiTask, MultitaskError
from multitask._fastpath import Template, drop_member
from multitask._sse import Frame
from multitask.lowlevel import Extraction, ServerSentEvent, SSEDecoder
from multitask.providers import (
    AnswerSource,
    AnthropicDecoder,
    GeminiDecoder,
    Mode,
    OpenAIChatDecoder,
    ProviderDecoder,
    RequestSpec,
    get_provider,
)
from multitask.testing import Script, _wire

FAST = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class User(BaseModel):
    name: str
    age: int


MULTI = MultiTask(User)


class GeneralSSE(SSEDecoder):
    """The SSE decoder with its fast path off: every byte is read line by line."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        if self._error is not None:
            raise self._error
        return self._checked(self._lines(data))

    def frames(self, data: bytes) -> list[Frame]:
        return [(e.event, e.data) for e in self.feed(data)]


def outcome(fn: Callable[[], Any]) -> Any:
    """What `fn()` returned, or the error it raised (its type and message)."""
    try:
        return ("ok", fn())
    except MultitaskError as exc:
        return ("error", type(exc), str(exc))


# -- SSE ----------------------------------------------------------------------------------------

_names = st.sampled_from([b"content_block_delta", b"ping", b"", b" x", b"a:b", b"\xff", b"\xc3"])
_values = (
    st.binary(max_size=24)
    | st.sampled_from([b"", b"{}", b"[DONE]", b'{"a":"b"}', b"caf\xc3\xa9", b"\xef\xbb\xbf"])
    | st.lists(st.sampled_from([b"a", b"\r", b"\n", b" ", b":", b"\xff", b"\xc3"]), max_size=6).map(
        b"".join
    )
)


@st.composite
def _common_event(draw: st.DrawFn) -> bytes:
    head = b"event: " + draw(_names) + b"\n" if draw(st.booleans()) else b""
    return head + b"data: " + draw(_values) + b"\n\n"


_odd_piece = st.sampled_from(
    [
        b"\n",
        b"\r\n",
        b": keep-alive\n\n",
        b"id: 7\n",
        b"id: 8\ndata: x\n\n",
        b"retry: 10\n",
        b"data: a\ndata: b\n\n",
        b"data:x\n\n",
        b"event: e\n\n",
        b"event: e\r\ndata: x\r\n\r\n",
        b"data: y\r\r",
        b"data",
        b"\xef\xbb\xbf",
        b"event: e\n",
        b"data: partial",
    ]
)


@st.composite
def sse_stream(draw: st.DrawFn) -> list[bytes]:
    """Feeds of an event stream: mostly whole events of the common shape, one per feed, with
    odd events, merged feeds and split feeds among them."""
    pieces = draw(st.lists(_common_event() | _odd_piece, max_size=14))
    feeds: list[bytes] = []
    for piece in pieces:
        how = draw(st.integers(0, 5))
        if how == 0 and feeds:
            feeds[-1] += piece  # two events in one feed
        elif how == 1 and len(piece) > 1:
            cut = draw(st.integers(1, len(piece) - 1))
            feeds += [piece[:cut], piece[cut:]]
        else:
            feeds.append(piece)
    return feeds


@st.composite
def segmented_stream(draw: st.DrawFn) -> list[bytes]:
    """The same events cut at arbitrary points, as a network delivers them: most feeds end
    inside an event, and the next feed carries its rest and the start of the one after."""
    body = b"".join(draw(st.lists(_common_event() | _odd_piece, max_size=14)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=20))))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def _frames_as_text(frames: list[Frame]) -> list[tuple[str, str]]:
    return [(n, v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for n, v in frames]


@FAST
@given(feeds=sse_stream() | segmented_stream(), cap=st.none() | st.integers(1, 40))
def test_sse_feed_matches_the_general_reading(feeds: list[bytes], cap: int | None) -> None:
    limit = {} if cap is None else {"max_event_bytes": cap}
    fast, general = SSEDecoder(**limit), GeneralSSE(**limit)
    for data in feeds:
        got = outcome(lambda d=data: fast.feed(d))
        assert got == outcome(lambda d=data: general.feed(d))
        if got[0] == "error":
            return
        assert (fast.last_event_id, fast.comments) == (general.last_event_id, general.comments)
        assert fast.idle == general.idle
    assert fast.end() == general.end()


@FAST
@given(feeds=sse_stream() | segmented_stream(), cap=st.none() | st.integers(1, 40))
def test_sse_frames_match_the_general_reading(feeds: list[bytes], cap: int | None) -> None:
    limit = {} if cap is None else {"max_event_bytes": cap}
    fast, general = SSEDecoder(**limit), GeneralSSE(**limit)
    for data in feeds:
        got = outcome(lambda d=data: _frames_as_text(fast.frames(d)))
        assert got == outcome(lambda d=data: general.frames(d))
        if got[0] == "error":
            return
        assert fast.comments == general.comments
    assert fast.end() == general.end()
    assert fast.comments == general.comments


def test_sse_idle_between_events_only() -> None:
    decoder = SSEDecoder()
    assert not decoder.idle  # a byte order mark may still come
    assert decoder.feed(b"data: a\n\n") == [ServerSentEvent("a")]
    assert decoder.idle
    assert decoder.feed(b"data: b") == []
    assert not decoder.idle
    events = decoder.feed(b"\n\nevent: x\ndata: c\n\n")
    assert events == [ServerSentEvent("b"), ServerSentEvent("c", "x")]
    assert decoder.idle
    assert decoder.head == b"data: "  # the last event read alone began so
    assert decoder.frames(b"event: x\ndata: d\n\n") == [("x", b"d")]
    assert decoder.head == b"event: x\ndata: "


def test_sse_a_line_too_long_raises_first_as_when_read_whole() -> None:
    """The error a feed raises does not depend on where the fast path cut it."""
    for feed in (b"data: \x00\n\n\ndata", b"data: abc\n\ndata: x\n\nevent: long"):
        for cap in range(1, len(feed) + 2):
            fast, general = SSEDecoder(max_event_bytes=cap), GeneralSSE(max_event_bytes=cap)
            assert outcome(lambda: fast.feed(feed)) == outcome(lambda: general.feed(feed))  # noqa: B023


def test_sse_frames_keep_the_common_shape_as_bytes() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": hello\n\n")
    assert decoder.frames(b'data: {"a":1}\n\n') == [("message", b'{"a":1}')]
    assert decoder.frames(b"data: a\ndata: b\n\n") == [("message", "a\nb")]
    assert decoder.frames(b"data: x\r\n\r\n") == [("message", "x")]
    assert decoder.frames(b"data: x\ry\n\n") == [("message", "x")]  # y: a field, unknown
    assert decoder.frames(b"event: e\rdata: y\n\n") == [("e", "y")]
    assert decoder.frames(b"event: e\ndata: 1\n\ndata: 2\n\ndata: 3") == [
        ("e", b"1"),
        ("message", b"2"),
    ]
    assert decoder.frames(b"\n\n") == [("message", b"3")]  # split between feeds: bytes too


SPLIT = b'data: {"a":1}\n\nevent: e\ndata: {"b":2}\n\n'


@pytest.mark.parametrize("cut", range(1, len(SPLIT)))
def test_sse_frames_of_an_event_split_anywhere_stay_bytes(cut: int) -> None:
    decoder = SSEDecoder()
    decoder.frames(b"data: warm\n\n")  # past the start of the stream
    frames = decoder.frames(SPLIT[:cut]) + decoder.frames(SPLIT[cut:])
    if not SPLIT[:cut].endswith(b"\n") or SPLIT[:cut].endswith(b"\n\n"):
        # (a cut just after a line's end leaves that line to the general reading)
        assert frames == [("message", b'{"a":1}'), ("e", b'{"b":2}')]
    assert [(n, v if isinstance(v, str) else v.decode()) for n, v in frames] == [
        ("message", '{"a":1}'),
        ("e", '{"b":2}'),
    ]


# -- decoder templates ---------------------------------------------------------------------------


def _request(provider: str, mode: Mode) -> dict[str, Any]:
    spec = RequestSpec("m", MULTI, mode, "system", [{"role": "user", "content": "t"}])
    return dict(get_provider(provider, base_url="http://x", api_key="k").request(spec).json)


USERS = [{"name": f'user "{k}" \\ é', "age": k} for k in range(6)]

#: name: (decoder class, answer source, provider, mode)
CASES: dict[str, tuple[type[ProviderDecoder], AnswerSource, str, Mode]] = {
    "openai-tool": (OpenAIChatDecoder, "tool", "openai", "tools"),
    "openai-auto": (OpenAIChatDecoder, "auto", "openai", "tools"),
    "openai-content": (OpenAIChatDecoder, "content", "openai", "json_schema"),
    "anthropic-tool": (AnthropicDecoder, "tool", "anthropic", "tools"),
    "anthropic-content": (AnthropicDecoder, "content", "anthropic", "json"),
}


@cache
def stream(case: str, chunk_size: int = 4) -> tuple[bytes, ...]:
    """The events (one SSE event each) of a rendered stream of `USERS`."""
    _, _, provider, mode = CASES[case]
    script = Script(items=USERS, chunk_size=chunk_size)
    plan = _wire.stream_plan(
        provider, _request(provider, mode), script, ids=_wire.Ids(3), now=0, model="m"
    )
    return tuple(c.data for c in plan.chunks)


def twins(case: str) -> tuple[ProviderDecoder, ProviderDecoder]:
    """A decoder for `case`, and its reference twin, the switch off: it never learns a
    template."""
    cls, source, _, _ = CASES[case]
    learner, reference = cls(source, fast=True), cls(source, fast=False)
    assert reference._learn == 0
    return learner, reference


#: What the fast path keeps in a decoder, and nothing else does.
FAST_STATE = ("template", "_learn", "fast", "_ignored")


def state(decoder: ProviderDecoder) -> dict[str, Any]:
    """Everything a decoder holds, but its fast path's."""
    return {k: v for k, v in vars(decoder).items() if k not in FAST_STATE}


def same(
    learner: ProviderDecoder, reference: ProviderDecoder, data: bytes | str, name: str
) -> None:
    got = outcome(lambda: learner.data(data, name))
    assert got == outcome(lambda: reference.data(data, name))
    assert state(learner) == state(reference)


def payloads(events: tuple[bytes, ...]) -> list[tuple[str, bytes | str]]:
    decoder = SSEDecoder()
    return [frame for event in events for frame in decoder.frames(event)]


@pytest.mark.parametrize("case", list(CASES))
def test_a_template_is_learned_and_reads_as_the_whole_event_does(case: str) -> None:
    learner, reference = twins(case)
    for name, value in payloads(stream(case)):
        same(learner, reference, value, name)
    assert learner.template is not None
    assert reference.template is None


_escapes = st.sampled_from(
    [
        b'"',
        b"\\",
        b'\\"',
        b"\\\\",
        b"\\u",
        b"\\ud800",
        b"\\udc00",
        b"\\ud83d\\ude00",
        b"\\u00e9",
        b"\\n",
        b"\\x",
        b"\n",
        b"\r",
        b"\t",
        b"\x00",
        b"\x7f",
        b"\xff",
        b"\xc3",
        b"\xc3\xa9",
        b"\xed\xa0\x80",
        b"a",
        b"}",
        b'"}}',
        b'","x":"',
        b"\\u0001~\\\\",
    ]
)
_fragments = (
    st.binary(max_size=16)
    | st.text(max_size=12).map(lambda t: json.dumps(t)[1:-1].encode())
    | st.text(max_size=12).map(
        lambda t: json.dumps(t, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
    )
    | st.lists(_escapes, max_size=8).map(b"".join)
)


@pytest.mark.parametrize("case", list(CASES))
@FAST
@given(fragments=st.lists(_fragments, min_size=1, max_size=6), data=st.data())
def test_any_string_in_a_template_reads_as_the_whole_event_does(
    case: str, fragments: list[bytes], data: st.DataObject
) -> None:
    """Events of the learned shape with any bytes where the answer string is, and the rest of
    the real stream after them."""
    learner, reference = twins(case)
    frames = payloads(stream(case))
    start = data.draw(st.integers(0, len(frames) - 1), label="start")
    for name, value in frames[:start]:
        same(learner, reference, value, name)
    if learner.template is None:
        for name, value in frames[start:]:
            same(learner, reference, value, name)
        return
    prefix, suffix = learner.template.prefix, learner.template.suffix
    for fragment in fragments:
        same(learner, reference, prefix + fragment + suffix, "message")
    for name, value in frames[start:]:
        same(learner, reference, value, name)


@pytest.mark.parametrize("case", list(CASES))
@FAST
@given(data=st.data())
def test_mutated_events_read_as_the_whole_events_do(case: str, data: st.DataObject) -> None:
    """Real events with a byte flipped, inserted or deleted anywhere (the template's shape
    broken in any place): the learner and the reference agree all along."""
    learner, reference = twins(case)
    frames = payloads(stream(case))
    for name, value in frames:
        if isinstance(value, bytes) and value and data.draw(st.integers(0, 3)) == 0:
            at = data.draw(st.integers(0, len(value) - 1), label="at")
            op = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="op")
            byte = data.draw(st.integers(0, 255) | st.sampled_from(list(b'"\\{}[],:')))
            if op == "flip":
                value = value[:at] + bytes([value[at] ^ (1 << (byte % 8))]) + value[at + 1 :]
            elif op == "insert":
                value = value[:at] + bytes([byte]) + value[at:]
            else:
                value = value[:at] + value[at + 1 :]
        same(learner, reference, value, name)


def test_captured_streams_read_the_same_with_templates(wire: Path) -> None:
    for path in sorted(wire.glob("*/*.sse")):
        cls: type[ProviderDecoder] = (
            AnthropicDecoder if path.parent.name == "anthropic" else OpenAIChatDecoder
        )
        for source in ("tool", "content", "auto", "calls"):
            learner = cls(source, fast=True)  # type: ignore[arg-type]
            reference = cls(source, fast=False)  # type: ignore[arg-type]
            events = SSEDecoder()
            for name, value in events.frames(path.read_bytes()):
                got = outcome(lambda: learner.data(value, name))  # noqa: B023
                assert got == outcome(lambda: reference.data(value, name))  # noqa: B023
                assert state(learner) == state(reference)


def test_openai_tool_template_spans_the_arguments_string() -> None:
    learner, _ = twins("openai-tool")
    for name, value in payloads(stream("openai-tool")):
        learner.data(value, name)
    assert learner.template is not None
    assert learner.template.prefix.endswith(b'"arguments":"')
    assert learner.template.suffix.startswith(b'"}}]}')


def test_the_fast_hook_is_declared_not_guessed() -> None:
    """A decoder reads by template when it has a fast hook and its switch is on: a subclass
    that overrides `payload` or `read` keeps the hook it inherits (and reads the same)."""

    class Recording(OpenAIChatDecoder):
        def payload(self, obj: Any, event: str = "message") -> str:
            return super().payload(obj, event)

    class Declining(OpenAIChatDecoder):
        answer_fragment = None  # type: ignore[assignment]

    events = payloads(stream("openai-tool"))
    for cls, learns in ((Recording, True), (OpenAIChatDecoder, True), (Declining, False)):
        learner, reference = cls("tool"), cls("tool", fast=False)
        for name, value in events:
            same(learner, reference, value, name)
        assert (learner.template is not None) is learns, cls
        assert reference.template is None
    assert GeminiDecoder.answer_fragment is None  # no hook: never learns
    assert GeminiDecoder("tool")._learn == 0
    assert OpenAIChatDecoder("tool", fast=False)._learn == 0
    assert OpenAIChatDecoder("tool")._learn > 0


def test_the_switch_is_read_from_the_environment_once() -> None:
    code = (
        "import multitask._fastpath as f\n"
        "from multitask.providers import AnthropicDecoder, OpenAIChatDecoder\n"
        "print(f.ENABLED, OpenAIChatDecoder().fast, AnthropicDecoder(fast=True).fast)\n"
    )
    for value, expected in (
        ("0", "False False True"),
        ("1", "True True True"),
        ("", "True True True"),
    ):
        env = {**os.environ, "MULTITASK_FASTPATH": value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == expected.split(), value


def test_a_template_owns_its_slicing() -> None:
    template = Template(b'{"a":"', b'","b":1}')
    assert template.answer(b'{"a":"x\\"y","b":1}') == 'x"y'
    assert template.answer(b'{"a":"","b":1}') == ""
    assert template.answer(b'{"a":"x"y","b":1}') is None  # not one string: read it whole
    assert template.answer(b'{"a":","b":1}') is None  # prefix and suffix overlap
    assert template.answer(b'{"a":"x","b":2}') is None
    framed = template.framed(b"data: ")
    assert framed == Template(b'data: {"a":"', b'","b":1}\n\n')
    assert framed.answer(b'data: {"a":"x","b":1}\n\n') == "x"


def test_no_template_from_an_event_that_carries_more_than_its_fragment() -> None:
    """A chunk with a refusal beside its content: an empty content would let the refusal
    through, so the chunk is no template (and the refusal is read when it matters)."""
    learner, reference = OpenAIChatDecoder("content"), OpenAIChatDecoder("content", fast=False)

    def chunk(content: str, refusal: str | None = None) -> bytes:
        delta: dict[str, Any] = {"content": content}
        if refusal is not None:
            delta["refusal"] = refusal
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        return json.dumps({"id": "c", "choices": [choice]}, separators=(",", ":")).encode()

    for data in [chunk('{"tasks"', "no"), chunk(": [", "no"), chunk("", "no"), chunk("]}")]:
        same(learner, reference, data, "message")
    assert learner.refusal == "no"
    usage = b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"a":1}}'
    learner = OpenAIChatDecoder("content")
    learner.data(usage, "message")
    assert learner.template is None


def test_a_shape_error_ends_the_template() -> None:
    """After an event of a wrong shape (here a finish reason that is a number, which stays),
    every event is read whole, as the reference reads it: each one raises."""
    learner, reference = twins("openai-tool")
    frames = payloads(stream("openai-tool"))
    for name, value in frames[:20]:
        same(learner, reference, value, name)
    assert learner.template is not None
    prefix, suffix = learner.template.prefix, learner.template.suffix
    bad = prefix + b"x" + suffix.replace(b'"finish_reason":null', b'"finish_reason":5')
    assert bad != prefix + b"x" + suffix
    for data in [bad, prefix + b"y" + suffix, *[v for _, v in frames[20:]]]:
        same(learner, reference, data, "message")
    assert learner.template is None


def test_the_learning_budget_bounds_a_stream_that_never_repeats() -> None:
    decoder = OpenAIChatDecoder("tool")
    events = payloads(stream("openai-tool"))
    for k, (name, value) in enumerate(events[1:-1]):  # not the first, nor [DONE]
        assert isinstance(value, bytes)
        # a field that changes at every event (as OpenAI's `obfuscation` does)
        decoder.data(value[:-1] + b',"o":"' + str(k).encode() + b'"}', name)
    assert decoder._learn == 0


# -- the pipeline ------------------------------------------------------------------------------


def reference_extraction(case: str, **limits: Any) -> Extraction[User]:
    """The general per-event path: SSE read line by line, each event parsed whole."""
    _, reference = twins(case)
    extraction = MULTI.extraction(reference, **limits)
    extraction.events = GeneralSSE(**limits)
    extraction._sse = None
    return extraction


def fast_extraction(case: str, **limits: Any) -> Extraction[User]:
    learner, _ = twins(case)
    return MULTI.extraction(learner, **limits)


@st.composite
def feeds_of(draw: st.DrawFn, events: tuple[bytes, ...]) -> list[bytes]:
    """The events as feeds: mostly one each, some mutated, merged or split."""
    feeds: list[bytes] = []
    for event in events:
        if draw(st.integers(0, 19)) == 0:
            feeds.append(draw(_odd_piece))  # something pending before the event, maybe
        how = draw(st.integers(0, 9))
        if how == 0:
            at = draw(st.integers(0, len(event) - 1))
            byte = draw(st.sampled_from(list(b'"\\{}[],:a\n\r\x00\xff')))
            event = event[:at] + bytes([byte]) + event[at + 1 :]
        elif how == 1:
            at = draw(st.integers(0, len(event)))
            event = event[:at] + draw(_escapes) + event[at:]
        how = draw(st.integers(0, 9))
        if how == 0 and feeds:
            feeds[-1] += event
        elif how == 1:
            cut = draw(st.integers(0, len(event)))
            feeds += [event[:cut], event[cut:]]
        else:
            feeds.append(event)
    if draw(st.booleans()):
        feeds = feeds[: draw(st.integers(0, len(feeds)))]  # cut off
    return feeds


@pytest.mark.parametrize("case", list(CASES))
@FAST
@given(data=st.data(), cap=st.none() | st.integers(100, 400), chunk_size=st.integers(1, 9))
def test_extraction_reads_any_feeds_as_the_general_path_does(
    case: str, data: st.DataObject, cap: int | None, chunk_size: int
) -> None:
    limits = {} if cap is None else {"max_event_bytes": cap}
    feeds = data.draw(feeds_of(stream(case, chunk_size)), label="feeds")
    fast, reference = fast_extraction(case, **limits), reference_extraction(case, **limits)
    for piece in feeds:
        got = outcome(lambda: fast.feed_bytes(piece))  # noqa: B023
        assert got == outcome(lambda: reference.feed_bytes(piece))  # noqa: B023
        if got[0] == "error":
            break
    assert fast.close() == reference.close()
    assert outcome(fast.raise_for_outcome) == outcome(reference.raise_for_outcome)
    assert (fast.usage, fast.finish_reason, fast.delivered) == (
        reference.usage,
        reference.finish_reason,
        reference.delivered,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_extraction_of_a_whole_stream_uses_the_template(case: str) -> None:
    extraction = fast_extraction(case)
    items = [x for event in stream(case) for x in extraction.feed_bytes(event)]
    items += extraction.close()
    extraction.raise_for_outcome()
    assert items == [User(**u) for u in USERS]
    assert extraction._template is not None
    prefix, suffix = extraction._template.prefix, extraction._template.suffix
    assert prefix.startswith((b"data: ", b"event: "))
    assert suffix.startswith(b'"')
    assert suffix.endswith(b"\n\n")


def test_extraction_whose_decoder_reads_whole_events_takes_the_general_path() -> None:
    class Seen(OpenAIChatDecoder):
        WHOLE_EVENTS = True

        def event(self, event: ServerSentEvent) -> str:
            self.seen = getattr(self, "seen", 0) + 1
            return super().event(event)

    decoder = Seen("tool")
    extraction = MULTI.extraction(decoder)
    events = stream("openai-tool")
    items = [x for event in events for x in extraction.feed_bytes(event)] + extraction.close()
    assert items == [User(**u) for u in USERS]
    assert decoder.seen == len(events)


def test_event_too_large_on_the_fast_path() -> None:
    events = stream("openai-tool")
    fast = fast_extraction("openai-tool", max_event_bytes=400)
    for event in events[:20]:
        fast.feed_bytes(event)
    assert fast._template is not None
    big = events[20].replace(b'"arguments":"', b'"arguments":"' + b" " * 400)
    with pytest.raises(EventTooLargeError):
        fast.feed_bytes(big)


# -- OpenAI's `obfuscation` member: dropped, so that one template reads every event ----------

_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@cache
def obfuscated(case: str, chunk_size: int = 4) -> tuple[bytes, ...]:
    """`stream(case)` as OpenAI sends it by default: each chunk ends with an `obfuscation`
    member of random padding (a different length and value at every event)."""
    out = []
    for k, event in enumerate(stream(case, chunk_size)):
        head, sep, rest = event.partition(b"data: {")
        if not sep or not rest.endswith(b"}\n\n"):
            out.append(event)  # [DONE]
            continue
        pad = "".join(_PAD[(k * 7 + i * 13) % len(_PAD)] for i in range(k % 17))
        out.append(head + sep + rest[:-3] + f',"obfuscation":"{pad}"'.encode() + b"}\n\n")
    return tuple(out)


def plain_reference(case: str, **limits: Any) -> Extraction[User]:
    """The general path, reading every member (no template, nothing dropped)."""
    extraction = reference_extraction(case, **limits)
    assert extraction.decoder._ignored is None  # the switch off: nothing dropped
    return extraction


OPENAI_CASES = [case for case in CASES if case.startswith("openai")]


@pytest.mark.parametrize("case", OPENAI_CASES)
def test_an_obfuscated_stream_is_read_by_one_template(case: str) -> None:
    events = obfuscated(case)
    assert len({e[-30:] for e in events}) > len(events) // 2  # the ends do differ
    extraction = fast_extraction(case)
    items = [x for event in events for x in extraction.feed_bytes(event)] + extraction.close()
    extraction.raise_for_outcome()
    assert items == [User(**u) for u in USERS]
    assert extraction._template is not None
    assert b"obfuscation" not in extraction._template.suffix
    assert extraction.decoder._learn >= 6  # learned once or twice, not once per event


@pytest.mark.parametrize("case", OPENAI_CASES)
@FAST
@given(data=st.data(), cap=st.none() | st.integers(100, 400), chunk_size=st.integers(1, 9))
def test_obfuscated_feeds_read_as_the_general_path_reads_them(
    case: str, data: st.DataObject, cap: int | None, chunk_size: int
) -> None:
    limits = {} if cap is None else {"max_event_bytes": cap}
    feeds = data.draw(feeds_of(obfuscated(case, chunk_size)), label="feeds")
    fast, reference = fast_extraction(case, **limits), plain_reference(case, **limits)
    for piece in feeds:
        got = outcome(lambda: fast.feed_bytes(piece))  # noqa: B023
        assert got == outcome(lambda: reference.feed_bytes(piece))  # noqa: B023
        if got[0] == "error":
            break
    assert fast.close() == reference.close()
    assert outcome(fast.raise_for_outcome) == outcome(reference.raise_for_outcome)
    assert (fast.usage, fast.finish_reason, fast.delivered) == (
        reference.usage,
        reference.finish_reason,
        reference.delivered,
    )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


def _parsed(data: bytes) -> Any:
    try:
        return ("ok", json.loads(data))
    except ValueError:
        return ("invalid", None)


@FAST
@given(
    obj=st.dictionaries(st.text(max_size=4), _json_values, max_size=4),
    pad=st.text(st.sampled_from('aZ9 ~!#[]"\\/\x00\x1f\x7fé€'), max_size=6),
    before=st.sampled_from(["", " ", "\n"]),
    byte=st.none() | st.tuples(st.integers(0, 200), st.sampled_from(list(b'"\\{},:a \x00\xff'))),
)
def test_dropping_the_member_keeps_what_the_json_means(
    obj: dict[str, Any], pad: str, before: str, byte: tuple[int, int] | None
) -> None:
    """With or without the member, the text is valid JSON or not alike, and means the same
    but for that member; a value that is not plain (quotes, escapes, controls, non-ASCII)
    or an empty object keeps it. Also with a byte changed anywhere."""
    body = json.dumps(obj, ensure_ascii=False)[:-1]  # without its closing brace
    data = f'{body}{before},"obfuscation":"{pad}"}}'.encode()
    if byte is not None:
        at = byte[0] % len(data)
        data = data[:at] + bytes([byte[1]]) + data[at + 1 :]
    member = b',"obfuscation":"'
    dropped = drop_member(data, member, len(data) - 1) if data.endswith(b'"}') else data
    before_drop, after_drop = _parsed(data), _parsed(dropped)
    assert before_drop[0] == after_drop[0], (data, dropped)
    if dropped != data and before_drop[0] == "ok":
        mine = dict(before_drop[1])
        mine.pop("obfuscation", None)
        theirs = dict(after_drop[1])
        theirs.pop("obfuscation", None)
        assert mine == theirs
    if byte is None and obj and before == "" and pad.isascii() and pad.isprintable():
        plain = '"' not in pad and "\\" not in pad
        assert (dropped != data) == plain  # a plain value is dropped, and only that


# -- the switch: every provider's wire format, read with it on and off --------------------------

#: Every wire format the scripted server speaks (Azure's is OpenAI's, with its own errors).
WIRE_PROVIDERS = ("openai", "azure", "anthropic", "openai-responses", "gemini", "ollama")
BAD_USER = {"name": "bad", "age": "old"}
SWITCH_SCRIPTS: dict[str, Script] = {
    "plain": Script(items=USERS, chunk_size=3),
    "usage": Script(items=USERS, chunk_size=5, usage=(3, 4)),
    "truncated": Script(items=USERS, chunk_size=4, truncate_after=70),
    "filtered": Script(
        items=USERS, chunk_size=4, truncate_after=50, finish_reason="content_filter"
    ),
    "refused": Script(items=USERS, chunk_size=4, truncate_after=30, refusal="no, sorry"),
    "error event": Script(items=USERS, chunk_size=4, error_after=60),
    "invalid item": Script(items=[USERS[0], BAD_USER, USERS[1]], chunk_size=6),
    "one chunk": Script(items=USERS, chunk_size=10_000),
}


def _modes(provider: str) -> list[Mode]:
    modes = get_provider(provider, base_url="http://x", api_key="k").modes
    return sorted(m for m in modes if m != "functions")  # type: ignore[return-value]


def _wire_events(provider: str, mode: Mode, script: Script) -> tuple[bytes, ...]:
    spec = RequestSpec("m", MULTI, mode, "system", [{"role": "user", "content": "t"}])
    request = dict(get_provider(provider, base_url="http://x", api_key="k").request(spec).json)
    plan = _wire.stream_plan(provider, request, script, ids=_wire.Ids(3), now=0, model="m")
    return tuple(c.data for c in plan.chunks)


def _parsed_events(provider: str, events: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """The events' JSON, as an SDK would hand it over (`[DONE]` and the like dropped)."""
    body = b"".join(events)
    if provider == "ollama":
        datas: list[bytes | str] = [line for line in body.split(b"\n") if line.strip()]
    else:
        datas = [value for _, value in SSEDecoder().frames(body + b"\n\n")]
    out = []
    for data in datas:
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _read(provider: str, mode: Mode, feed: str, pieces: list[Any], fast: bool) -> Any:
    """Everything observable about reading `pieces` with the switch `fast`."""
    decoder = get_provider(provider, base_url="http://x", api_key="k").decoder(mode)
    decoder = type(decoder)(decoder.source, fast=fast)  # type: ignore[call-arg]
    assert decoder.fast is fast
    extraction = MULTI.extraction(decoder, on_invalid="skip" if feed == "skip" else "raise")
    method = extraction.feed_payload if feed == "payload" else extraction.feed_bytes
    seen = []
    for piece in pieces:
        seen.append(outcome(lambda p=piece: method(p)))
        if seen[-1][0] == "error":
            break
    seen.append(outcome(extraction.close))
    seen.append(outcome(extraction.raise_for_outcome))
    usage = extraction.usage
    return (
        seen,
        (usage.input_tokens, usage.output_tokens) if usage else None,
        extraction.finish_reason,
        extraction.delivered,
        [(s.index, s.raw, str(s.error)) for s in extraction.skipped],
        state(decoder),
    )


def _pieces(events: tuple[bytes, ...], size: int) -> list[bytes]:
    body = b"".join(events)
    return [body[k : k + size] for k in range(0, len(body), size)]


@pytest.mark.parametrize("provider", WIRE_PROVIDERS)
@pytest.mark.parametrize("script", list(SWITCH_SCRIPTS))
def test_the_switch_changes_nothing_but_the_path(provider: str, script: str) -> None:
    """Items, usage, finish reasons, skipped items and errors are the same with the fast
    paths on and off, fed whole events, the whole body at once, pieces cut anywhere (as a
    network cuts them), or parsed events."""
    for mode in _modes(provider):
        events = _wire_events(provider, mode, SWITCH_SCRIPTS[script])
        feeds: dict[str, list[Any]] = {
            "events": list(events),
            "body": [b"".join(events)],
            "pieces of 7": _pieces(events, 7),
            "pieces of 173": _pieces(events, 173),
            "payload": _parsed_events(provider, events),
            "skip": list(events),
        }
        for feed, pieces in feeds.items():
            on = _read(provider, mode, feed, pieces, fast=True)
            off = _read(provider, mode, feed, pieces, fast=False)
            assert on == off, (provider, mode, feed)


def test_the_fast_path_is_taken_where_it_exists() -> None:
    """With the switch on, the whole-event template reads most events of the providers that
    have a fast hook (OpenAI chat, Anthropic); with it off, none."""
    for provider, mode in (("openai", "tools"), ("anthropic", "tools"), ("openai", "json_schema")):
        events = _wire_events(provider, mode, SWITCH_SCRIPTS["plain"])
        for fast in (True, False):
            decoder = get_provider(provider, base_url="http://x", api_key="k").decoder(mode)
            decoder = type(decoder)(decoder.source, fast=fast)  # type: ignore[call-arg]
            extraction = MULTI.extraction(decoder)
            for event in events:
                extraction.feed_bytes(event)
            assert (extraction._template is not None) is fast
            assert (decoder.template is not None) is fast
