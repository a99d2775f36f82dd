"""`Pipeline.feed_payload` reads an event of the common shape by the decoder's fast hook
(`answer_fragment`), without `read`; the reference is the same pipeline with the decoder's
switch off (`fast=False`), every event read by `read` within `_feed`.

Both are fed the same payloads: real captures (`../shared/wire`), streams the test server
renders (finish reasons, refusals, cuts, error events, compatible servers' quirks, parallel
calls), the same as the SDKs' `model_dump()` gives them, and all of these mutated (keys added,
removed or changed anywhere, events added or dropped, every event changed alike). Every
comparison is per feed: what came out, or the error raised (type and message), the decoders'
state, and that the payload is left as it was; then `close`, `raise_for_outcome`, usage,
finish reason, items and skipped items.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from multitask import MultiTask, MultitaskError
from multitask.lowlevel import PartialExtraction, Pipeline, SSEDecoder
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
from multitask.testing import QUIRKS, Script, _wire

FAST = settings(
    max_examples=80,
    deadline=timedelta(seconds=5),
    # `wire` is a fixed path: nothing to reset between examples.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class User(BaseModel):
    name: str
    age: int


MULTI = MultiTask(User)
DECODERS: dict[str, type[ProviderDecoder]] = {
    "openai": OpenAIChatDecoder,
    "anthropic": AnthropicDecoder,
}
SOURCES: tuple[AnswerSource, ...] = ("tool", "content", "auto", "calls")
Payload = dict[str, Any]


class Quick:
    """Wraps a pipeline's fast hook, counting the events it read."""

    def __init__(self, quick: Callable[[Mapping[str, Any]], str | None]) -> None:
        self.quick = quick
        self.read = 0

    def __call__(self, payload: Mapping[str, Any]) -> str | None:
        text = self.quick(payload)
        self.read += text is not None
        return text


def pipelines(
    provider: str, source: AnswerSource, *, events: bool = False, **options: Any
) -> tuple[Pipeline[Any, Any], Pipeline[Any, Any]]:
    """A pipeline with the quick path (its `_quick` counting), and a twin with the switch
    off, for the reference (fed by `general`)."""
    cls = DECODERS[provider]
    made: list[Pipeline[Any, Any]] = []
    for fast_path in (True, False):
        decoder = cls(source, fast=fast_path)  # type: ignore[call-arg]
        if events:
            pipeline: Pipeline[Any, Any] = PartialExtraction(
                TypeAdapter(User), decoder, min_interval=0, **options
            )
            pipeline._now = 0.0  # type: ignore[attr-defined]
        else:
            pipeline = MULTI.extraction(decoder, **options)
        made.append(pipeline)
    fast, reference = made
    assert fast._quick is not None
    assert reference._quick is None
    fast._quick = Quick(fast._quick)
    return fast, reference


def general(pipeline: Pipeline[Any, Any], payload: Any) -> list[Any]:
    """The general path: `read` then `_answer`, within `_feed` (`feed_payload` not flat)."""
    return pipeline._feed(lambda p, out: pipeline._answer(pipeline.decoder.read(p), out), payload)


def outcome(fn: Callable[[], Any]) -> Any:
    """What `fn()` returned, or the error it raised (its type and message)."""
    try:
        return ("ok", fn())
    except (MultitaskError, RuntimeError) as exc:
        return ("error", type(exc), str(exc))


def state(decoder: ProviderDecoder) -> dict[str, Any]:
    """Everything a decoder holds, but its fast path's."""
    return {
        k: v
        for k, v in vars(decoder).items()
        if k not in ("template", "_learn", "fast", "_ignored")
    }


def compare(fast: Pipeline[Any, Any], reference: Pipeline[Any, Any], payloads: list[Any]) -> None:
    """Feed both every payload (on after an error, and after the end), comparing as they go."""
    for payload in payloads:
        before = copy.deepcopy(payload)
        got = outcome(lambda p=payload: fast.feed_payload(p))
        assert payload == before  # read, not changed
        assert got == outcome(lambda p=payload: general(reference, p))
        assert state(fast.decoder) == state(reference.decoder)
    assert outcome(fast.close) == outcome(reference.close)
    assert outcome(fast.raise_for_outcome) == outcome(reference.raise_for_outcome)
    assert (fast.usage, fast.finish_reason, fast.delivered) == (
        reference.usage,
        reference.finish_reason,
        reference.delivered,
    )
    assert [(s.index, s.raw, str(s.error)) for s in fast.skipped] == [
        (s.index, s.raw, str(s.error)) for s in reference.skipped
    ]
    if payloads:  # fed after the end: both refuse alike
        last = payloads[-1]
        assert outcome(lambda: fast.feed_payload(last)) == outcome(lambda: general(reference, last))


# -- payloads ------------------------------------------------------------------------------------


def parse_events(body: bytes) -> list[Payload]:
    """Each SSE event's data parsed as JSON (what an SDK hands over); `[DONE]` dropped."""
    out = []
    for _, data in SSEDecoder().frames(body + b"\n\n"):
        try:
            out.append(json.loads(data))
        except ValueError:
            continue
    return out


def _request(provider: str, mode: Mode) -> dict[str, Any]:
    spec = RequestSpec("m", MULTI, mode, "system", [{"role": "user", "content": "t"}])
    return dict(get_provider(provider, base_url="http://x", api_key="k").request(spec).json)


#: provider: the modes its streams are rendered in
MODES: dict[str, tuple[Mode, ...]] = {
    "openai": ("tools", "json_schema", "parallel_tools"),
    "anthropic": ("tools", "json", "parallel_tools"),
}


def rendered(provider: str, mode: Mode, script: Script) -> list[Payload]:
    plan = _wire.stream_plan(
        provider, _request(provider, mode), script, ids=_wire.Ids(3), now=0, model="m"
    )
    return parse_events(b"".join(c.data for c in plan.chunks))


USERS: list[Any] = [{"name": f'user "{k}" \\ é', "age": k} for k in range(5)]
BAD = {"name": "bad", "age": "old"}


@st.composite
def scripts(draw: st.DrawFn, provider: str) -> Script:
    """Mostly streams that end well; each odd option one time in eight."""

    def odd(values: st.SearchStrategy[Any]) -> Any:
        return draw(values) if draw(st.integers(0, 7)) == 4 else None  # (0: what shrinks)

    cut = st.integers(1, 300)
    items = draw(st.lists(st.sampled_from(USERS), max_size=6))
    if draw(st.integers(0, 7)) == 4:
        items.insert(draw(st.integers(0, len(items))), BAD)
    return Script(
        items=items,
        text=odd(st.sampled_from(['{"tasks": [{"name": "x", "age": 1}', "nope"])),
        chunk_size=draw(st.integers(1, 9)),
        truncate_after=odd(cut),
        drop_after=odd(cut),
        error_after=odd(cut),
        finish_reason=odd(st.sampled_from(["length", "content_filter", "refusal", "max_tokens"])),
        refusal=odd(st.just("no, sorry")),
        usage=odd(st.just((3, 4))),
        quirks=frozenset(draw(st.lists(st.sampled_from(sorted(QUIRKS)), max_size=2)))
        if provider == "openai"
        else frozenset(),
        interleave=draw(st.integers(1, 3)),
    )


def sdk_dumps(provider: str, payloads: list[Payload]) -> list[Payload]:
    """The payloads as the SDK objects `from_streaming_response` takes would dump them (every
    field there, None where unset); one the SDK rejects is kept as it was."""
    if provider == "openai":
        from openai.types.chat import ChatCompletionChunk

        load: Callable[[Any], Any] = ChatCompletionChunk.model_validate
    else:
        from anthropic.types import RawMessageStreamEvent

        load = TypeAdapter(RawMessageStreamEvent).validate_python
    out = []
    for payload in payloads:
        try:
            out.append(load(payload).model_dump())
        except Exception:
            out.append(payload)
    return out


def retarget(payloads: list[Payload], answer: str) -> list[Payload]:
    """The capture with `answer` spread, in order, over the first tool call's non-empty
    fragments (`arguments`, `partial_json`), or if it has none over its text fragments
    (`content`, `text`): so that the capture's answer holds items."""
    out = copy.deepcopy(payloads)
    tool: list[tuple[dict[str, Any], str]] = []
    text: list[tuple[dict[str, Any], str]] = []
    for payload in out:
        deltas = [payload.get("delta"), *[c.get("delta") for c in payload.get("choices") or ()]]
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            for call in delta.get("tool_calls") or ():
                if call.get("index", 0) == 0 and call["function"].get("arguments"):
                    tool.append((call["function"], "arguments"))
            tool += [(delta, "partial_json")] if delta.get("partial_json") else []
            text += [(delta, key) for key in ("content", "text") if delta.get(key)]
    slots = tool or text
    size = -(-len(answer) // max(len(slots), 1))
    for k, (where, key) in enumerate(slots):
        where[key] = answer[k * size : (k + 1) * size]
    return out


ANSWER = json.dumps({"tasks": USERS[:3]})


@cache
def captures(wire: Path, provider: str) -> list[list[Payload]]:
    pattern = "chat_*.sse" if provider == "openai" else "*.sse"
    streams = [
        parse_events(path.read_bytes()) for path in sorted(wire.glob(f"{provider}/{pattern}"))
    ]
    assert streams
    return streams


# -- mutations -----------------------------------------------------------------------------------

_KEYS = [
    "choices",
    "usage",
    "error",
    "index",
    "finish_reason",
    "delta",
    "tool_calls",
    "function",
    "arguments",
    "id",
    "name",
    "content",
    "refusal",
    "function_call",
    "role",
    "type",
    "partial_json",
    "text",
    "input",
    "content_block",
    "stop_reason",
    "message",
    "obfuscation",
]
_VALUES = st.sampled_from(
    [
        None,
        0,
        1,
        2,
        -1,
        "",
        "x",
        '{"tasks": [',
        '"}]}',
        "length",
        "stop",
        "tool_calls",
        "content_filter",
        "input_json_delta",
        "text_delta",
        "content_block_delta",
        "message_delta",
        "tool_use",
        True,
        False,
        1.5,
        [],
        {},
        [{}],
        [None],
        {"prompt_tokens": 3, "completion_tokens": 4},
        {"message": "boom", "type": "overloaded_error"},
        {"arguments": 5},
        {"arguments": '{"ta'},
        [{"index": 1, "function": {"arguments": "{}"}}],
        [{"id": "call_b", "function": {"arguments": "[1"}}],
    ]
)

#: Whole events to splice into a stream: what the common shape is not.
_EXTRA_EVENTS: list[Payload] = [
    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"choices": [{"index": 0, "delta": {"refusal": "no"}, "finish_reason": None}]},
    {"choices": [{"index": 1, "delta": {"content": "[1]"}}]},
    {"error": {"message": "boom", "code": "server_error"}},
    {"choices": [{"index": 0, "delta": {"content": '{"tasks": ['}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": "{"}},
                        {"index": 1, "function": {"arguments": "}"}},
                    ]
                },
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {"function_call": {"arguments": "{"}}}]},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens"},
        "usage": {"output_tokens": 7},
    },
    {"type": "content_block_start", "index": 5, "content_block": {"type": "text", "text": "["}},
    {"type": "content_block_start", "index": 6, "content_block": {"type": "tool_use", "input": {}}},
    {"type": "content_block_delta", "index": 6, "delta": {"type": "input_json_delta"}},
    {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": "{"}},
    {"type": "content_block_delta", "index": 5, "delta": {"type": "text_delta", "text": "]"}},
    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    {"type": "ping"},
]


def _containers(value: Any) -> list[Any]:
    """Every dict and list in a JSON value."""
    out = []
    if isinstance(value, dict | list):
        out.append(value)
        for child in value.values() if isinstance(value, dict) else value:
            out += _containers(child)
    return out


@st.composite
def mutated(draw: st.DrawFn, payloads: list[Payload]) -> list[Any]:
    """The events, some changed anywhere inside, some dropped, duplicated or added."""
    out: list[Any] = []
    rarity = draw(st.sampled_from([2, 8, 30]), label="one event in")
    for original in payloads:
        how = draw(st.integers(0, 5)) if draw(st.integers(1, rarity)) == 2 else 6
        if how == 0:
            out.append(copy.deepcopy(draw(st.sampled_from(_EXTRA_EVENTS))))
        elif how == 1:
            continue  # dropped
        elif how == 2:
            out.append(original)  # twice
        payload = copy.deepcopy(original)
        for _ in range(draw(st.integers(1, 2)) if how in (3, 4, 5) else 0):
            node = draw(st.sampled_from(_containers(payload)))
            op = draw(st.sampled_from(["set", "delete", "grow"]))
            if isinstance(node, dict):
                if op == "delete" and node:
                    del node[draw(st.sampled_from(sorted(node)))]
                else:
                    key = draw(st.sampled_from([*sorted(node), *_KEYS]))
                    node[key] = copy.deepcopy(draw(_VALUES))
            elif op == "delete" and node:
                del node[draw(st.integers(0, len(node) - 1))]
            elif op == "grow" and node:
                twin = copy.deepcopy(draw(st.sampled_from(node)))
                if isinstance(twin, dict) and "index" in twin:
                    twin["index"] = draw(st.sampled_from([0, 1, 2, None, "0"]))
                node.append(twin)  # another tool call, choice, ...
            else:
                node.append(copy.deepcopy(draw(_VALUES)))
        out.append(payload)
    return out


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(DECODERS))
@pytest.mark.parametrize("source", SOURCES)
def test_captures_read_as_the_general_path_does(
    wire: Path, provider: str, source: AnswerSource
) -> None:
    for capture in captures(wire, provider):
        for payloads in (capture, retarget(capture, ANSWER)):
            for stream in (payloads, sdk_dumps(provider, payloads)):
                compare(*pipelines(provider, source), stream)
                compare(*pipelines(provider, source, events=True), stream)


@pytest.mark.parametrize("provider", list(DECODERS))
@pytest.mark.parametrize("source", SOURCES)
@FAST
@given(data=st.data())
def test_mutated_captures_read_as_the_general_path_does(
    wire: Path, provider: str, source: AnswerSource, data: st.DataObject
) -> None:
    streams = captures(wire, provider)
    payloads = streams[data.draw(st.integers(0, len(streams) - 1), label="capture")]
    if data.draw(st.booleans(), label="retarget"):
        payloads = retarget(payloads, ANSWER)
    if data.draw(st.booleans(), label="sdk"):
        payloads = sdk_dumps(provider, payloads)
    compare(*pipelines(provider, source), data.draw(mutated(payloads), label="payloads"))


@pytest.mark.parametrize("provider", list(DECODERS))
@FAST
@given(data=st.data())
def test_rendered_streams_read_as_the_general_path_does(provider: str, data: st.DataObject) -> None:
    mode = data.draw(st.sampled_from(MODES[provider]), label="mode")
    payloads = rendered(provider, mode, data.draw(scripts(provider), label="script"))
    if data.draw(st.booleans(), label="sdk"):
        payloads = sdk_dumps(provider, payloads)
    if data.draw(st.booleans(), label="mutate"):
        payloads = data.draw(mutated(payloads), label="payloads")
    matching: AnswerSource = {"tools": "tool", "parallel_tools": "calls"}.get(mode, "content")
    source = data.draw(st.sampled_from([matching, matching, "auto", *SOURCES]), label="source")
    options = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "on_invalid": st.sampled_from(["raise", "skip"]),
                "max_item_bytes": st.integers(30, 200),
            },
        ),
        label="options",
    )
    events = data.draw(st.booleans(), label="events")
    if events:
        options.pop("on_invalid", None)
    compare(*pipelines(provider, source, events=events, **options), payloads)


@pytest.mark.parametrize(
    ("provider", "mode", "source"),
    [
        ("openai", "tools", "tool"),
        ("openai", "tools", "auto"),
        ("openai", "json_schema", "content"),
        ("anthropic", "tools", "tool"),
        ("anthropic", "tools", "auto"),
        ("anthropic", "json", "content"),
    ],
)
def test_the_common_shape_takes_the_quick_path(
    provider: str, mode: Mode, source: AnswerSource
) -> None:
    for script in (
        Script(items=USERS, chunk_size=3),
        Script(items=USERS, chunk_size=3, usage=(1, 2)),
    ):
        payloads = rendered(provider, mode, script)
        for stream in (payloads, sdk_dumps(provider, payloads)):
            fast, reference = pipelines(provider, source)
            compare(fast, reference, stream)
            assert fast.delivered == len(USERS)
            quick = fast._quick
            assert isinstance(quick, Quick)
            assert quick.read >= len(stream) - 8  # all but the events around the answer


def test_the_quick_path_is_not_taken_in_parallel_mode() -> None:
    for provider in DECODERS:
        payloads = rendered(provider, "parallel_tools", Script(items=USERS, interleave=2))
        fast, reference = pipelines(provider, "calls")
        compare(fast, reference, payloads)
        assert fast.delivered == len(USERS)
        assert isinstance(fast._quick, Quick)
        assert fast._quick.read == 0


def test_an_error_pends_after_the_items_before_it() -> None:
    """The quick path keeps an error for the next call when items came before it."""
    payloads = rendered("openai", "tools", Script(items=[USERS[0], BAD, USERS[1]], chunk_size=200))
    fast, reference = pipelines("openai", "tool")
    compare(fast, reference, payloads)
    assert fast.delivered == 1
    assert isinstance(fast._quick, Quick)
    assert fast._quick.read > 0


def test_which_decoders_have_a_quick_path() -> None:
    """The hook is declared: a decoder has it when its class defines `answer_fragment` and
    its switch is on, whatever else a subclass overrides."""

    class Recording(OpenAIChatDecoder):
        def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
            return super().payload(obj, event)

    class Declining(Recording):
        answer_fragment = None  # type: ignore[assignment]

    class Holding(AnthropicDecoder):
        def _content(self, text: str) -> str:
            return super()._content(text)

    assert MULTI.extraction(OpenAIChatDecoder("tool"))._quick is not None
    assert MULTI.extraction(AnthropicDecoder("auto"))._quick is not None
    assert MULTI.extraction(Recording("tool"))._quick is not None  # inherits the hook
    assert MULTI.extraction(Holding("tool"))._quick is not None
    assert MULTI.extraction(Declining("tool"))._quick is None  # declares it has none
    assert MULTI.extraction(OpenAIChatDecoder("tool", fast=False))._quick is None  # switch off
    assert MULTI.extraction(GeminiDecoder("tool"))._quick is None  # has none


def test_a_subclass_that_only_overrides_payload_reads_the_same() -> None:
    class Recording(OpenAIChatDecoder):
        def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
            return super().payload(obj, event)

    fast = MULTI.extraction(Recording("tool"))
    reference = MULTI.extraction(Recording("tool", fast=False))
    fast._quick = Quick(fast._quick)  # type: ignore[arg-type]
    compare(fast, reference, rendered("openai", "tools", Script(items=USERS, chunk_size=3)))
    assert fast._quick.read > 0


@cache
def _openai_tool_events() -> list[Payload]:
    return rendered("openai", "tools", Script(items=USERS, chunk_size=5))


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update(usage={"prompt_tokens": 9, "completion_tokens": 9}),
        lambda p: p["choices"][0].update(finish_reason="length"),
        lambda p: p["choices"][0].update(index=1),
        lambda p: p["choices"][0]["delta"].update(refusal="no"),
        lambda p: p["choices"][0]["delta"]["tool_calls"][0].update(index=1),
        lambda p: p["choices"][0]["delta"]["tool_calls"][0].pop("index"),
        lambda p: p["choices"][0]["delta"]["tool_calls"].append({"index": 1}),
        lambda p: p["choices"][0]["delta"]["tool_calls"][0]["function"].update(arguments=7),
        lambda p: p["choices"][0]["delta"].update(tool_calls={"0": {}}),
        lambda p: p["choices"].append({"index": 0, "delta": {"content": "x"}}),
    ],
)
def test_one_odd_event_among_common_ones(change: Callable[[Payload], None]) -> None:
    payloads = copy.deepcopy(_openai_tool_events())
    change(payloads[len(payloads) // 2])
    compare(*pipelines("openai", "tool"), payloads)


def _calls(payload: Payload) -> list[Any]:
    return [
        call
        for choice in payload.get("choices") or ()
        for call in (choice.get("delta") or {}).get("tool_calls") or ()
    ]


def _deltas(payload: Payload) -> list[Any]:
    return [choice.get("delta") or {} for choice in payload.get("choices") or ()]


def _no_index(payload: Payload) -> None:
    payload.pop("index", None)  # Anthropic's blocks
    for call in _calls(payload):
        call.pop("index", None)


def _no_index_nor_id(payload: Payload) -> None:
    for call in _calls(payload):
        call.pop("index", None)
        call.pop("id", None)


def _function_call_beside_content(payload: Payload) -> None:
    for delta in _deltas(payload):
        if delta.get("content"):
            delta["function_call"] = {"arguments": "{"}


def _content_beside_tool_calls(payload: Payload) -> None:
    for delta in _deltas(payload):
        if delta.get("tool_calls"):
            delta["content"] = "["


def _retyped(payload: Payload) -> None:
    if payload.get("type") == "content_block_delta":
        payload["type"] = "content_block_stop"


def _untyped(payload: Payload) -> None:
    payload.pop("type", None)


def _usage_everywhere(payload: Payload) -> None:
    payload["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "output_tokens": 2}


TRANSFORMS: dict[str, Callable[[Payload], None]] = {
    "no index": _no_index,
    "no index nor id": _no_index_nor_id,
    "function_call beside content": _function_call_beside_content,
    "content beside tool calls": _content_beside_tool_calls,
    "retyped": _retyped,
    "untyped": _untyped,
    "usage everywhere": _usage_everywhere,
}


@pytest.mark.parametrize("provider", list(DECODERS))
@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_streams_changed_throughout_read_as_the_general_path_does(
    wire: Path, provider: str, transform: str
) -> None:
    """Every event of a stream changed alike: what a compatible server might do."""
    streams = [
        rendered(provider, mode, Script(items=USERS, chunk_size=7)) for mode in MODES[provider]
    ]
    for capture in captures(wire, provider):
        streams += [capture, retarget(capture, ANSWER)]
    for stream in streams:
        changed = copy.deepcopy(stream)
        for payload in changed:
            TRANSFORMS[transform](payload)
        for source in SOURCES:
            compare(*pipelines(provider, source), changed)
