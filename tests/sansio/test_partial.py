"""Partial items: the sans-IO `PartialTaskParser`, the `PartialExtraction` pipeline, and
`Client.extract_events` against the scripted model server on asyncio and trio."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

import multitask
from multitask import (
    AnswerTooLargeError,
    Finished,
    ItemDone,
    ItemSkipped,
    ItemStarted,
    ItemUpdated,
)
from multitask.lowlevel import PartialExtraction, PartialTaskParser
from multitask.providers import OpenAIChatDecoder
from multitask.testing import Script, ScriptedModelServer

KEY = "sk-test-SECRET-0123456789"


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user number {i}", "age": 20 + i} for i in range(5)]


def feed_all(parser: PartialTaskParser, pieces: list[str]) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.close())
    return events


def chars(text: str) -> list[str]:
    return list(text)


def consistent(partial: Any, final: Any) -> bool:
    """`partial` could be what was written of `final` so far: every complete value equal, at
    most the last one open, strings as prefixes, numbers and literals never cut."""
    if isinstance(final, dict):
        if not isinstance(partial, dict) or not partial.keys() <= final.keys():
            return False
        unequal = [k for k, v in partial.items() if v != final[k]]
        return len(unequal) <= 1 and all(consistent(partial[k], final[k]) for k in unequal)
    if isinstance(final, list):
        if not isinstance(partial, list) or len(partial) > len(final):
            return False
        if not partial:
            return True
        if partial[:-1] != final[: len(partial) - 1]:
            return False
        return consistent(partial[-1], final[len(partial) - 1])
    if isinstance(final, str):
        return isinstance(partial, str) and final.startswith(partial)
    return type(partial) is type(final) and partial == final


def snapshots(events: list[Any], index: int) -> list[Any]:
    return [e.partial for e in events if isinstance(e, ItemUpdated) and e.index == index]


# -- the sans-IO parser ------------------------------------------------------------------------


def test_events_for_a_streamed_answer() -> None:
    answer = json.dumps({"tasks": [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]})
    events = feed_all(PartialTaskParser(), chars(answer))
    kinds = [(type(e).__name__, e.index) for e in events if not isinstance(e, ItemUpdated)]
    assert kinds == [("ItemStarted", 0), ("ItemDone", 0), ("ItemStarted", 1), ("ItemDone", 1)]
    assert [e.item for e in events if isinstance(e, ItemDone)] == json.loads(answer)["tasks"]
    # Updates come between an item's start and its end, and only for that item.
    current = None
    for event in events:
        if isinstance(event, ItemStarted):
            current = event.index
        elif isinstance(event, ItemUpdated):
            assert event.index == current
        elif isinstance(event, ItemDone):
            current = None
    # The age only completes with the closing brace, which completes the item.
    assert snapshots(events, 0)[-1] == {"name": "Ada"}


def test_numbers_and_literals_are_never_half_written() -> None:
    item = {"n": 12345, "f": -1.25e3, "t": True, "b": False, "z": None, "big": 98765432109876}
    answer = json.dumps({"tasks": [item]})
    events = feed_all(PartialTaskParser(), chars(answer))
    seen = snapshots(events, 0)
    assert seen, "a 1-char stream must show the item growing"
    for snap in seen:
        for key, value in snap.items():
            assert value == item[key], f"{key} shown as {value!r}"
            assert type(value) is type(item[key])
    assert {"n": 1} not in seen
    assert {"n": 12} not in seen
    assert [e.item for e in events if isinstance(e, ItemDone)] == [item]


@pytest.mark.parametrize(
    "value",
    [
        "plain text growing",
        'quotes "inside" and \\ backslashes',
        "escapes\nnew\tline and \u00e9 and \u2028",
        "emoji \U0001f600 surrogate pair",
        "",
    ],
)
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_strings_grow_as_prefixes(value: str, ensure_ascii: bool) -> None:
    item = {"s": value, "after": 1}
    answer = json.dumps({"tasks": [item]}, ensure_ascii=ensure_ascii)
    events = feed_all(PartialTaskParser(), chars(answer))
    shown = [snap["s"] for snap in snapshots(events, 0) if "s" in snap]
    assert all(value.startswith(s) for s in shown), shown
    assert shown == sorted(shown, key=len), "strings only grow"
    for prefix in shown:  # no lone surrogate, no half escape
        prefix.encode("utf-8")
    if value:
        assert len(set(shown)) > 1, "the string was shown growing"
    assert [e.item for e in events if isinstance(e, ItemDone)] == [item]


def test_partial_strings_off_shows_strings_only_when_complete() -> None:
    item = {"name": "Ada Lovelace", "tags": ["one", "two"], "age": 36}
    answer = json.dumps({"tasks": [item]})
    events = feed_all(PartialTaskParser(partial_strings=False), chars(answer))
    for snap in snapshots(events, 0):
        if "name" in snap:
            assert snap["name"] == "Ada Lovelace"
        for tag in snap.get("tags", []):
            assert tag in ("one", "two")
    assert {"name": "Ada Lovelace"} in snapshots(events, 0)


def test_one_update_per_feed_only_when_something_changed() -> None:
    parser = PartialTaskParser()
    assert parser.feed('{"tasks": [{"name": "Ad') == [
        ItemStarted(0),
        ItemUpdated(0, {"name": "Ad"}),
    ]
    assert parser.feed("a") == [ItemUpdated(0, {"name": "Ada"})]
    assert parser.feed('", ') == []  # the string closed: nothing new to show
    assert parser.feed('"ag') == []  # a key being written shows nothing
    assert parser.feed('e": 3') == []  # nor does a number not yet complete
    assert parser.feed("6, ") == [ItemUpdated(0, {"name": "Ada", "age": 36})]
    assert parser.feed('"tags": ["x", {"k": [1, 2') == [
        ItemUpdated(0, {"name": "Ada", "age": 36, "tags": ["x", {"k": [1]}]})
    ]
    assert parser.feed("]}]}, 7") == [
        ItemDone(0, {"name": "Ada", "age": 36, "tags": ["x", {"k": [1, 2]}]}),
    ]
    assert parser.in_progress is None
    assert parser.feed("]}") == [ItemStarted(1), ItemDone(1, 7)]
    assert parser.close() == []
    assert parser.error is None


def test_update_false_defers_snapshots_to_the_caller() -> None:
    parser = PartialTaskParser()
    assert parser.feed('{"tasks": [{"a": "x', update=False) == [ItemStarted(0)]
    assert parser.feed("yz", update=False) == []
    assert parser.update() == ItemUpdated(0, {"a": "xyz"})
    assert parser.update() is None  # nothing changed since
    assert parser.snapshot() == {"a": "xyz"}


def test_snapshots_are_copies() -> None:
    parser = PartialTaskParser()
    (_, update) = parser.feed('{"tasks": [{"a": {"b": [1, 2], "c": "x')
    assert isinstance(update, ItemUpdated)
    update.partial["a"]["b"].append(99)
    update.partial["a"]["c"] = "changed"
    events = parser.feed('"}}]}')
    assert events == [ItemDone(0, {"a": {"b": [1, 2], "c": "x"}})]


@pytest.mark.parametrize(
    ("answer", "items"),
    [
        ('[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),
        ('Sure! Here they are:\n```json\n{"tasks": [{"a": 1}]}\n```\nAnything else?', [{"a": 1}]),
        ('{"reasoning": "a \\"tasks\\" list [", "tasks": [{"a": 1}], "note": [2]}', [{"a": 1}]),
        ('{"tasks": ["one", "two \\u00e9"]}', ["one", "two \u00e9"]),
        ('{"tasks": [1, 2.5, true, null, [1, [2]]]}', [1, 2.5, True, None, [1, [2]]]),
        ('{"tasks": [1], "tasks.item": {"x": 2}}', [1]),  # a key TaskParser's prefix confuses
        ('{"tasks": {"item": {"x": 2}}, "tasks": []}', []),
    ],
)
def test_answer_shapes(answer: str, items: list[Any]) -> None:
    for size in (1, 3, len(answer)):
        pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
        parser = PartialTaskParser()
        events = feed_all(parser, pieces)
        assert [e.item for e in events if isinstance(e, ItemDone)] == items
        assert parser.error is None


def test_string_items_are_shown_growing() -> None:
    events = feed_all(PartialTaskParser(), chars('{"tasks": ["hello", "you"]}'))
    assert snapshots(events, 0) == ["h", "he", "hel", "hell", "hello"]
    assert [e for e in events if not isinstance(e, ItemUpdated)] == [
        ItemStarted(0),
        ItemDone(0, "hello"),
        ItemStarted(1),
        ItemDone(1, "you"),
    ]


def test_truncated_answer() -> None:
    parser = PartialTaskParser()
    events = feed_all(parser, ['{"tasks": [{"a": 1}, {"a": "cut', " off"])
    assert [e.item for e in events if isinstance(e, ItemDone)] == [{"a": 1}]
    assert isinstance(parser.error, multitask.IncompleteOutputError)
    assert parser.truncated
    assert parser.error.items_delivered == 1


def test_malformed_json_is_raised_after_the_events_before_it() -> None:
    parser = PartialTaskParser()
    events = parser.feed('{"tasks": [{"a": 1}, {"a": 2} {"a": 3}]}')
    assert ItemDone(0, {"a": 1}) in events
    with pytest.raises(multitask.MalformedOutputError, match="malformed JSON"):
        parser.feed("more")
    assert parser.close() == []
    assert isinstance(parser.error, multitask.MalformedOutputError)


def test_no_tasks_list_and_no_json() -> None:
    parser = PartialTaskParser()
    feed_all(parser, ['{"items": [1, 2]}'])
    assert isinstance(parser.error, multitask.MalformedOutputError)
    parser = PartialTaskParser()
    feed_all(parser, ["I could not find anyone."])
    assert isinstance(parser.error, multitask.MalformedOutputError)
    assert "no JSON" in str(parser.error)


def test_item_size_cap() -> None:
    parser = PartialTaskParser(max_item_bytes=1000)
    parser.feed('{"tasks": [{"a": "')
    for _ in range(19):
        parser.feed("x" * 50)
    with pytest.raises(multitask.ItemTooLargeError):
        parser.feed("x" * 50)


def feed_until_error(parser: PartialTaskParser, pieces: list[str]) -> tuple[list[Any], Any]:
    """The events until an error, and the error: raised by `feed` (after the events before
    it, on the next call) or found by `close`."""
    events: list[Any] = []
    raised: multitask.MultitaskError | None = None
    try:
        for piece in [*pieces, " "]:
            events.extend(parser.feed(piece))
    except multitask.MultitaskError as exc:
        raised = exc
    if raised is None:
        events.extend(parser.close())
        return events, parser.error
    assert parser.done
    assert parser.close() == []
    assert parser.error is raised
    return events, raised


def test_an_item_over_the_limit_in_one_piece_fails_after_the_items_before_it() -> None:
    """The buffer never held more than the limit before the item closed: its size tells."""
    small = [json.dumps(u) for u in USERS[:3]]
    big = json.dumps({"name": "y" * 5_000, "age": 1})
    answer = '{"tasks": [' + ", ".join([*small, big, small[0]]) + "]}"
    for pieces in ([answer], ['{"tasks": [' + ", ".join(small) + ", ", big, ", ", "]}"]):
        parser = PartialTaskParser(max_item_bytes=1000)
        events, error = feed_until_error(parser, pieces)
        assert [e.item for e in events if isinstance(e, ItemDone)] == USERS[:3]
        assert isinstance(error, multitask.ItemTooLargeError)
        assert "item 3 is larger than 1000 characters" in str(error)


@pytest.mark.parametrize(
    ("answer", "whole"),
    [
        ('{"tasks": [{"name": "' + "y" * 2000 + '", "age": 1}]}', False),
        ('{"name": "' + "y" * 2000 + '", "age": 1}', True),
        ('{"tasks": ["' + "y" * 2000 + '"]}', False),  # a string item
        ("[" + json.dumps(list(range(1000))) + "]", False),
    ],
    ids=["object", "whole", "string", "list"],
)
def test_a_first_item_over_the_limit_in_one_piece(answer: str, whole: bool) -> None:
    parser = PartialTaskParser(max_item_bytes=1000, whole=whole, first_index=0)
    events, error = feed_until_error(parser, [answer])
    assert events == [ItemStarted(0)]
    assert isinstance(error, multitask.ItemTooLargeError)
    assert "item 0 is larger than 1000 characters" in str(error)


def test_items_under_the_limit_in_one_piece_over_it_are_delivered() -> None:
    items = [{"name": "y" * 900, "age": i} for i in range(10)]
    parser = PartialTaskParser(max_item_bytes=1000)
    events = feed_all(parser, [json.dumps({"tasks": items})])
    assert [e.item for e in events if isinstance(e, ItemDone)] == items
    assert parser.error is None


@pytest.mark.parametrize(
    "pieces",
    [
        ['{"tasks": [' + ", ".join(['{"n": 1234567890}'] * 20) + "]}"],  # sent to the C parser
        ['{"tasks": [{"s": "', "x" * 60, "x" * 60],  # held back: a string being written
    ],
    ids=["sent", "held"],
)
def test_answer_too_large_is_an_answer_too_large_error(pieces: list[str]) -> None:
    """Over `max_answer_bytes` is `AnswerTooLargeError` (an `ItemTooLargeError` too); one
    item over `max_item_bytes` is an `ItemTooLargeError` and not that."""
    with pytest.raises(AnswerTooLargeError, match="the answer grew past 100 characters") as info:
        feed_all(PartialTaskParser(max_answer_bytes=100), pieces)
    assert isinstance(info.value, multitask.ItemTooLargeError)
    _, error = feed_until_error(PartialTaskParser(max_item_bytes=10), pieces)
    assert isinstance(error, multitask.ItemTooLargeError)
    assert "item 0 is larger than 10 characters" in str(error)
    assert not isinstance(error, AnswerTooLargeError)


def test_an_item_too_deep_to_serialise_over_the_limit_in_one_piece() -> None:
    """20 kB of brackets against a 10 kB limit: measured by its text, not by serialising."""
    answer = '{"tasks": [{"a": 1}, {"extra": ' + "[" * 10_000 + "]" * 10_000 + "}]}"
    parser = PartialTaskParser(max_item_bytes=10_000, max_depth=20_000)
    events = feed_all(parser, [answer])
    assert [e.item for e in events if isinstance(e, ItemDone)] == [{"a": 1}]
    assert isinstance(parser.error, multitask.ItemTooLargeError)
    assert "item 1 is larger than 10000" in str(parser.error)


def nesting(value: Any) -> tuple[int, Any]:
    """How deep `value` nests along its last elements (without recursing), and what is there."""
    depth = 0
    while isinstance(value, (dict, list)) and value:
        value = value[-1] if isinstance(value, list) else list(value.values())[-1]
        depth += 1
    return depth, value


def test_snapshots_of_an_item_nested_ten_thousand_deep() -> None:
    """The item in progress is copied without recursing (Python's stack holds ~1000 calls)."""
    parser = PartialTaskParser(max_depth=20_000, max_snapshot_values=20_000)
    events = parser.feed('{"tasks": [{"a": 1}, {"name": "deep", "extra": ', update=False)
    for _ in range(100):
        parser.feed("[" * 100, update=False)
    parser.feed('{"k": "grow', update=False)
    snapshot = parser.snapshot()
    assert snapshot["name"] == "deep"
    assert nesting(snapshot["extra"]) == (10_001, "grow")
    assert parser.snapshot() is not snapshot
    events += parser.feed('ing"}' + "]" * 10_000, update=False)
    (update,) = parser.feed(', "age": 7, "note": "n')
    assert isinstance(update, ItemUpdated)
    assert update.partial["age"] == 7
    assert update.partial["note"] == "n"
    assert nesting(update.partial["extra"]) == (10_001, "growing")
    events += parser.feed('"}]}')
    done = [e.item for e in events if isinstance(e, ItemDone)]
    assert done[0] == {"a": 1}
    assert (done[1]["name"], done[1]["age"], done[1]["note"]) == ("deep", 7, "n")
    assert nesting(done[1]["extra"]) == (10_001, "growing")
    assert parser.close() == []
    assert parser.error is None


def test_snapshots_of_objects_nested_ten_thousand_deep_are_copies() -> None:
    parser = PartialTaskParser(max_depth=20_000)
    parser.feed('{"tasks": [' + '{"a": ' * 10_000 + "[1, ", update=False)
    first = parser.snapshot()
    assert nesting(first) == (10_001, 1)
    node = first
    while isinstance(node, dict):
        node = node["a"]
    node.append("changed")  # the copy is the caller's: the parser's item is untouched
    parser.feed("2]", update=False)
    second = parser.snapshot()
    assert nesting(second) == (10_001, 2)
    events = parser.feed("}" * 10_000 + "]}")
    assert nesting(events[-1].item) == (10_001, 2)


def test_whole_mode_is_one_item() -> None:
    parser = PartialTaskParser(whole=True, first_index=3)
    events = feed_all(parser, chars('{"a": "bc", "d": [1]}'))
    assert events[0] == ItemStarted(3)
    assert events[-1] == ItemDone(3, {"a": "bc", "d": [1]})
    assert parser.error is None


def test_a_long_string_in_tiny_pieces_is_linear() -> None:
    parser = PartialTaskParser()
    parser.feed('{"tasks": [{"text": "', update=False)
    piece = 'abc\\"'  # with escapes: the slow scanning path
    start = time.perf_counter()
    for _ in range(60_000):  # 300 KB in 5-character pieces
        parser.feed(piece, update=False)
    elapsed = time.perf_counter() - start
    assert len(parser.snapshot()["text"]) == 4 * 60_000
    events = parser.feed('"}]}')
    assert len(events[0].item["text"]) == 4 * 60_000
    assert elapsed < 2.0, f"{elapsed:.2f}s: feeding is not linear"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
items_strategy = st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=5), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=items_strategy,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 1]),
    partial_strings=st.booleans(),
)
def test_snapshots_are_always_consistent_with_the_final_items(
    items: list[dict[str, Any]],
    cuts: list[int],
    ensure_ascii: bool,
    indent: int | None,
    partial_strings: bool,
) -> None:
    answer = json.dumps({"tasks": items}, ensure_ascii=ensure_ascii, indent=indent)
    expected = json.loads(answer)["tasks"]
    points = sorted({c % (len(answer) + 1) for c in cuts} | {0, len(answer)})
    pieces = [answer[a:b] for a, b in itertools.pairwise(points)]
    parser = PartialTaskParser(partial_strings=partial_strings)
    events = feed_all(parser, pieces)
    assert parser.error is None
    assert [e.item for e in events if isinstance(e, ItemDone)] == expected
    assert [e.index for e in events if isinstance(e, ItemStarted)] == list(range(len(items)))
    for index, final in enumerate(expected):
        shown = snapshots(events, index)
        for before, after in itertools.pairwise([*shown, final]):
            assert consistent(before, after), (before, after)
            if not partial_strings:
                assert _no_partial_strings(before, after)


def _no_partial_strings(partial: Any, final: Any) -> bool:
    if isinstance(partial, str):
        return partial == final
    if isinstance(partial, dict):
        return all(_no_partial_strings(v, final[k]) for k, v in partial.items())
    if isinstance(partial, list):
        return all(_no_partial_strings(p, f) for p, f in zip(partial, final, strict=False))
    return True


# -- the sans-IO pipeline ----------------------------------------------------------------------


def pipeline(**options: Any) -> PartialExtraction[User]:
    return PartialExtraction(TypeAdapter(User), OpenAIChatDecoder("content"), **options)


ANSWER = json.dumps({"tasks": USERS})


def test_pipeline_validates_items_and_throttles_updates() -> None:
    extraction = pipeline(min_interval=0.05)
    events: list[Any] = []
    for i, char in enumerate(ANSWER):
        events.extend(extraction.feed_text(char, now=i * 0.01))  # 100 chunks a second
    events.extend(extraction.close())
    extraction.raise_for_outcome()
    done = [e for e in events if isinstance(e, ItemDone)]
    assert [d.item for d in done] == [User(**u) for u in USERS]
    times = [i * 0.01 for i, char in enumerate(ANSWER)]
    assert times  # one update at most every 5 chunks
    updates = [e for e in events if isinstance(e, ItemUpdated)]
    assert len(updates) <= len(ANSWER) / 5 + 1
    assert len(updates) >= len(USERS)


def test_pipeline_without_throttle_updates_on_every_chunk_that_changes_the_item() -> None:
    extraction = pipeline(min_interval=0)
    events: list[Any] = []
    for char in ANSWER:
        events.extend(extraction.feed_text(char, now=0.0))
    updates = [e for e in events if isinstance(e, ItemUpdated)]
    # Every character of every name shows up: "u", "us", "use", ...
    assert len(updates) >= sum(len(u["name"]) for u in USERS)


def test_pipeline_invalid_item_raises_after_the_events_before_it() -> None:
    answer = json.dumps({"tasks": [USERS[0], {"name": "x", "age": "old"}, USERS[1]]})
    extraction = pipeline()
    events = extraction.feed_text(answer, now=0.0)
    assert [type(e) for e in events] == [ItemStarted, ItemDone, ItemStarted]
    with pytest.raises(multitask.ItemValidationError):
        extraction.feed_text("", now=0.0)


def test_pipeline_skips_invalid_items_under_skip() -> None:
    answer = json.dumps({"tasks": [USERS[0], {"name": "x", "age": "old"}, USERS[1]]})
    extraction = pipeline(on_invalid="skip")
    events = extraction.feed_text(answer, now=0.0) + extraction.close()
    extraction.raise_for_outcome()
    skipped = [e for e in events if isinstance(e, ItemSkipped)]
    assert [s.index for s in skipped] == [1]
    assert skipped[0].invalid.raw == {"name": "x", "age": "old"}
    assert [e.index for e in events if isinstance(e, ItemDone)] == [0, 2]


def test_pipeline_reports_a_truncated_answer() -> None:
    extraction = pipeline()
    events = extraction.feed_text(ANSWER[:60], now=0.0) + extraction.close()
    assert any(isinstance(e, ItemDone) for e in events)
    with pytest.raises(multitask.IncompleteOutputError):
        extraction.raise_for_outcome()


def test_pipeline_rejects_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        pipeline(min_interval=-1)


# -- the client, over real HTTP ----------------------------------------------------------------


def openai_client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:gpt-test", base_url=server.openai_base_url, api_key=KEY, **options
    )


def anthropic_client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "anthropic:claude-test", base_url=server.anthropic_base_url, api_key=KEY, **options
    )


async def collect(stream: Any) -> tuple[list[Any], BaseException | None]:
    events: list[Any] = []
    try:
        async with stream:
            async for event in stream:
                events.append(event)
    except multitask.MultitaskError as exc:
        return events, exc
    return events, None


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai_client, anthropic_client])
async def test_events_over_http(make: Any) -> None:
    script = Script(items=USERS, chunk_size=3, tokens_per_second=1000)
    async with ScriptedModelServer(script) as server, make(server) as client:
        events, error = await collect(client.extract_events(User, "text", min_interval=0))
    assert error is None
    assert [e.item for e in events if isinstance(e, ItemDone)] == [User(**u) for u in USERS]
    assert isinstance(events[-1], Finished)
    assert events[-1].usage is not None
    assert events[-1].finish_reason in ("tool_calls", "tool_use")
    for index in range(len(USERS)):
        kinds = [type(e) for e in events if getattr(e, "index", None) == index]
        assert kinds[0] is ItemStarted
        assert kinds[-1] is ItemDone
        assert ItemUpdated in kinds
        final = USERS[index]
        shown = snapshots(events, index)
        for before, after in itertools.pairwise([*shown, final]):
            assert consistent(before, after)


@pytest.mark.anyio
async def test_updates_are_throttled_over_http() -> None:
    script = Script(items=USERS * 2, chunk_size=1, tokens_per_second=3000)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        start = time.perf_counter()
        events, error = await collect(client.extract_events(User, "t", min_interval=0.05))
        elapsed = time.perf_counter() - start
    assert error is None
    updates = [e for e in events if isinstance(e, ItemUpdated)]
    assert len([e for e in events if isinstance(e, ItemDone)]) == 10
    assert len(updates) <= elapsed / 0.05 + 1
    assert len(updates) < 10 * 10  # far fewer than the ~30 chunks each item took


@pytest.mark.anyio
async def test_numbers_are_never_half_written_over_http() -> None:
    script = Script(text='{"tasks": [{"n": 12345, "s": "hello world"}]}', chunk_size=1)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        events, error = await collect(
            client.extract_events(dict[str, Any], "t", min_interval=0, mode="json")
        )
    assert error is None
    shown = snapshots(events, 0)
    assert shown
    assert all(s.get("n", 12345) == 12345 for s in shown)
    strings = [s["s"] for s in shown if "s" in s]
    assert all("hello world".startswith(s) for s in strings)
    assert [len(s) for s in strings] == sorted(len(s) for s in strings)
    assert events[-2] == ItemDone(0, {"n": 12345, "s": "hello world"})


@pytest.mark.anyio
async def test_truncation_is_raised_after_the_complete_items() -> None:
    cut = len(json.dumps({"tasks": USERS[:2]})) + 15
    async with ScriptedModelServer(Script(items=USERS, truncate_after=cut)) as server:
        async with openai_client(server) as client:
            events, error = await collect(client.extract_events(User, "t"))
    assert isinstance(error, multitask.IncompleteOutputError)
    assert len([e for e in events if isinstance(e, ItemDone)]) == 2
    assert not any(isinstance(e, Finished) for e in events)


@pytest.mark.anyio
async def test_http_errors_and_retries_work_as_in_extract_stream() -> None:
    scripts = [Script(status=429, retry_after=0.05), Script(items=USERS[:2])]
    async with ScriptedModelServer(scripts) as server, openai_client(server) as client:
        stream = client.extract_events(User, "t")
        events, error = await collect(stream)
    assert error is None
    assert stream.info.attempts == 2
    assert stream.info.items == 2
    async with ScriptedModelServer(Script(status=401)) as server, openai_client(server) as client:
        events, error = await collect(client.extract_events(User, "t"))
    assert isinstance(error, multitask.APIStatusError)
    assert events == []
    assert KEY not in str(error)


@pytest.mark.anyio
async def test_leaving_early_closes_the_upstream_request() -> None:
    script = Script(items=USERS, chunk_size=2, tokens_per_second=100)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        async with client.extract_events(User, "t") as events:
            async for event in events:
                if isinstance(event, ItemDone):
                    break
        await server.wait_disconnect()
        assert server.requests[0].disconnected
        assert not server.requests[0].completed


@pytest.mark.anyio
async def test_skip_invalid_items_over_http() -> None:
    items = [USERS[0], {"name": "bad", "age": "old"}, USERS[1]]
    async with ScriptedModelServer(Script(items=items)) as server, openai_client(server) as client:
        stream = client.extract_events(User, "t", on_invalid="skip")
        events, error = await collect(stream)
    assert error is None
    assert [e.index for e in events if isinstance(e, ItemSkipped)] == [1]
    assert len(stream.skipped) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "v1", "mode"),
    [
        ("openai:gpt-test", True, "parallel_tools"),
        ("anthropic:claude-test", False, "parallel_tools"),
        ("ollama:llama-test", False, None),  # NDJSON framing
        ("openai-responses:gpt-test", True, None),
    ],
)
async def test_events_for_other_providers_and_modes(model: str, v1: bool, mode: str | None) -> None:
    script = Script(items=USERS, chunk_size=3, tokens_per_second=1000)
    async with ScriptedModelServer(script) as server:
        base_url = server.url + "/v1" if v1 else server.url
        options: dict[str, Any] = {"mode": mode} if mode else {}
        async with multitask.Client(model, base_url=base_url, api_key=KEY) as client:
            events, error = await collect(
                client.extract_events(User, "t", min_interval=0, **options)
            )
    assert error is None
    assert [e.item for e in events if isinstance(e, ItemDone)] == [User(**u) for u in USERS]
    assert sorted(e.index for e in events if isinstance(e, ItemStarted)) == list(range(5))
    assert any(isinstance(e, ItemUpdated) for e in events)
    assert isinstance(events[-1], Finished)


# -- what a snapshot costs -------------------------------------------------------------------


def test_an_item_past_the_snapshot_cap_gets_no_more_updates_until_it_is_done() -> None:
    """A snapshot is a deep copy (12-69 ms for an 800 KB item): past `max_snapshot_values`
    values, `update()` makes none; the item still comes whole, and the next one is shown."""
    parser = PartialTaskParser(max_snapshot_values=100)
    events = parser.feed('{"tasks": [{"rows": [')
    for k in range(60):
        events += parser.feed(f'{{"k": {k}}}, ')
    updates = [e for e in events if isinstance(e, ItemUpdated)]
    assert updates, "shown while small"
    last = updates[-1].partial["rows"]
    assert 40 <= len(last) <= 50  # 1 + 1 + 2 per row: the cap of 100 is passed at row 49
    assert parser.snapshot()["rows"][-1] == {"k": 59}  # asked for, a snapshot is still made
    done = parser.feed('{"k": 60}]}, {"name": "n')
    assert isinstance(done[0], ItemDone)
    assert len(done[0].item["rows"]) == 61
    assert isinstance(done[-1], ItemUpdated)  # the next item is small again
    assert done[-1].partial == {"name": "n"}


def test_the_default_snapshot_cap_is_ten_thousand_values() -> None:
    from multitask._partial import DEFAULT_MAX_SNAPSHOT_VALUES

    assert DEFAULT_MAX_SNAPSHOT_VALUES == 10_000
    parser = PartialTaskParser()
    parser.feed('{"tasks": [[' + "1," * 9_998, update=False)
    assert parser.update() is not None  # 9,999 values
    parser.feed("1,1,", update=False)
    assert parser.update() is None  # 10,001
