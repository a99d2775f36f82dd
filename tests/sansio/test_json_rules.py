"""Where yajl (the C parser under ijson) reads JSON differently from RFC 8259, and how both task
parsers read it instead: unpaired surrogate escapes, form feed and vertical tab, nesting depth
and the memory it takes. Every case runs through `TaskParser` and `PartialTaskParser`, the
text whole, one character at a time and split at every point.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from multitask import (
    IncompleteOutputError,
    ItemDone,
    ItemUpdated,
    MalformedOutputError,
    MultitaskError,
)
from multitask._jsontext import mend_surrogates
from multitask._taskparser import DEFAULT_MAX_DEPTH
from multitask.lowlevel import PartialTaskParser, TaskParser

Parse = Callable[[list[str]], tuple[list[Any], MultitaskError | None]]


def task_parser(pieces: list[str], **options: Any) -> tuple[list[Any], MultitaskError | None]:
    parser = TaskParser(**options)
    items: list[Any] = []
    try:
        for piece in pieces:
            items += parser.feed(piece)
        items += parser.close()
    except MultitaskError as exc:
        return items, exc
    return items, parser.error


def partial_parser(
    pieces: list[str], **options: Any
) -> tuple[list[Any], MultitaskError | None, list[Any]]:
    """The items, the error, and every snapshot of an item in progress."""
    parser = PartialTaskParser(**options)
    items: list[Any] = []
    snapshots: list[Any] = []
    try:
        for piece in pieces:
            for event in parser.feed(piece):
                if isinstance(event, ItemDone):
                    items.append(event.item)
                elif isinstance(event, ItemUpdated):
                    snapshots.append(event.partial)
        for event in parser.close():
            if isinstance(event, ItemDone):
                items.append(event.item)
    except MultitaskError as exc:
        return items, exc, snapshots
    return items, parser.error, snapshots


def splits(text: str) -> list[list[str]]:
    """`text` whole, one character at a time, and cut in two at every point."""
    return [[text], list(text)] + [[text[:k], text[k:]] for k in range(1, len(text))]


# -- unpaired surrogate escapes ------------------------------------------------------------------

SURROGATES = {
    # yajl paired a high surrogate with the escape after it, whatever it was.
    r'"\ud83d\u00e9"': "?é",
    r'"\uD888\u1234"': "?\u1234",
    r'"\ud83d\ud83d\ude00"': "?\U0001f600",
    r'"\uDd1e\uD834"': "??",
    # As a lone one already was: `?`.
    r'"\ud83d"': "?",
    r'"a\ud83dx"': "a?x",
    r'"\ude00"': "?",  # (a lone low surrogate was a UnicodeDecodeError, then malformed)
    r'"\ud83d\n"': "?\n",
    r'"\\ud83d\u00e9"': "\\ud83dé",  # an escaped backslash, then text: no surrogate at all
    # Pairs are pairs, in either case.
    r'"\ud83d\ude00"': "\U0001f600",
    r'"\uD834\uDd1e"': "\U0001d11e",
    r'"x\ud83d\ude39\ud83d\udc8d"': "x\U0001f639\U0001f48d",
}


@pytest.mark.parametrize(("string", "value"), list(SURROGATES.items()), ids=list(SURROGATES))
def test_an_unpaired_surrogate_escape_is_a_question_mark_in_both_parsers(
    string: str, value: str
) -> None:
    text = '{"tasks": [' + string + ", " + string + "]}"
    for pieces in splits(text):
        assert task_parser(pieces) == ([value, value], None), pieces
        items, error, snapshots = partial_parser(pieces)
        assert (items, error) == ([value, value], None), pieces
        # Strings grow as prefixes: every snapshot of the string is a start of its value.
        for snapshot in snapshots:
            assert value.startswith(snapshot), (pieces, snapshot, value)


@pytest.mark.parametrize(("string", "value"), list(SURROGATES.items()), ids=list(SURROGATES))
def test_an_unpaired_surrogate_escape_in_a_field_grows_as_a_prefix(string: str, value: str) -> None:
    text = '{"tasks": [{"a": ' + string + ', "b": 1}]}'
    for pieces in [list(text), *splits(text)[2:]]:
        items, error, snapshots = partial_parser(pieces)
        assert (items, error) == ([{"a": value, "b": 1}], None)
        for snapshot in snapshots:
            if "a" in snapshot:
                assert value.startswith(snapshot["a"]), (pieces, snapshot)


def test_a_lone_surrogate_character_is_a_question_mark_in_snapshots_too() -> None:
    """A lone surrogate in the text itself (not an escape) is encoded as `?` for the C
    parser; snapshots show the same, rather than the surrogate and then `?`."""
    text = '{"tasks": [{"a": "x\ud83dy"}]}'
    items, error, snapshots = partial_parser(list(text))
    assert (items, error) == ([{"a": "x?y"}], None)
    assert all("x?y".startswith(s.get("a", "")) for s in snapshots)


def test_mend_surrogates_holds_back_what_the_next_piece_may_change() -> None:
    assert mend_surrogates(r"ab\ud83d", final=False) == ("ab", 2)
    assert mend_surrogates(r"ab\ud83d\ud", final=False) == ("ab", 2)
    assert mend_surrogates(r"ab\u00", final=False) == ("ab", 2)
    assert mend_surrogates("ab\\", final=False) == ("ab", 2)
    assert mend_surrogates("ab\\\\", final=False) == ("ab\\\\", 4)
    assert mend_surrogates(r"ab\ud83dx", final=False) == ("ab?x", 9)
    assert mend_surrogates(r"\ude00\ud83d", final=True) == ("??", 12)


# -- form feed and vertical tab ------------------------------------------------------------------

WHITESPACE = ["\f", "\v", "\u00a0", "\u2028", "\ufeff"]


@pytest.mark.parametrize("char", WHITESPACE, ids=["ff", "vt", "nbsp", "line-sep", "bom"])
@pytest.mark.parametrize(
    "template",
    ['{"tasks": [[%s]]}', '{"tasks": [1,%s2]}', '{%s"tasks": []}', '{"tasks": ["a%sb"]}'],
    ids=["in-list", "between-items", "before-key", "in-string"],
)
def test_only_rfc_8259_whitespace_is_whitespace(template: str, char: str) -> None:
    if '["a' in template and char not in "\f\v":
        pytest.skip("any character but a control character may be in a string")
    text = template % char
    with pytest.raises(ValueError, match=r"Expecting|Invalid control"):
        json.loads(text)
    for pieces in splits(text):
        items, error = task_parser(pieces)
        assert isinstance(error, MalformedOutputError), (pieces, items)
        assert not isinstance(error, IncompleteOutputError)
        items, error, _ = partial_parser(pieces)
        assert isinstance(error, MalformedOutputError), (pieces, items)
    if char in "\f\v":
        assert "not JSON whitespace" in str(task_parser([text])[1])


def test_a_form_feed_after_items_comes_after_them() -> None:
    items, error = task_parser(['{"tasks": [1, 2, \f3]}'])
    assert items == [1, 2]
    assert isinstance(error, MalformedOutputError)


def test_a_form_feed_in_prose_after_the_json_is_prose() -> None:
    assert task_parser(['{"tasks": [1]}\f\v and that is all']) == ([1], None)
    items, error, _ = partial_parser(['{"tasks": [1]}\f\v and that is all'])
    assert (items, error) == ([1], None)


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r"])
def test_rfc_8259_whitespace_is_whitespace(space: str) -> None:
    text = '{%s"tasks"%s:%s[%s1%s,%s[%s]%s]%s}' % ((space,) * 9)
    assert task_parser([text]) == ([1, []], None)
    assert partial_parser([text])[:2] == ([1, []], None)


# -- nesting depth -------------------------------------------------------------------------------


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("whole", [False, True])
def test_the_depth_limit_counts_every_open_container(whole: bool) -> None:
    """`max_depth` is the most containers open at once, the answer's object included."""
    inner = 5 - (0 if whole else 2)  # {"tasks": [ ... ]} holds two of them
    text = nested(inner) if whole else '{"tasks": [' + nested(inner) + "]}"
    value = json.loads(text)
    item = value if whole else value["tasks"][0]
    assert task_parser([text], max_depth=5, whole=whole) == ([item], None)
    assert partial_parser([text], max_depth=5, whole=whole)[:2] == ([item], None)
    deeper = nested(inner + 1) if whole else '{"tasks": [' + nested(inner + 1) + "]}"
    for result in (
        task_parser([deeper], max_depth=5, whole=whole),
        partial_parser([deeper], max_depth=5, whole=whole)[:2],
    ):
        items, error = result
        assert items == []
        assert isinstance(error, MalformedOutputError)
        assert "nested deeper than 5 levels" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        '{"tasks": [1, {"a": ' + "[" * 600 + "]" * 600 + "}]}",
        '{"tasks": [1, ' + nested(600) + "]}",
        '{"tasks": [1], "meta": ' + nested(600) + "}",
        "[1, " + nested(600) + "]",
    ],
    ids=["in-a-field", "as-an-item", "outside-the-list", "bare-array"],
)
def test_nesting_past_the_default_depth_fails_after_the_items_before_it(text: str) -> None:
    assert DEFAULT_MAX_DEPTH == 512
    for pieces in (
        [text],
        [text[:10], text[10:]],
        [text[i : i + 7] for i in range(0, len(text), 7)],
    ):
        for items, error in (task_parser(pieces), partial_parser(pieces)[:2]):
            assert items == [1]
            assert isinstance(error, MalformedOutputError)
            assert "nested deeper than 512 levels (after 1 item(s))" in str(error)
    # With the limit raised, it is read.
    assert task_parser([text], max_depth=700)[1] is None
    assert partial_parser([text], max_depth=700)[1] is None


def peak_memory(parse: Callable[[], object]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        parse()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("which", ["task", "partial"])
def test_memory_is_linear_in_the_nesting_depth(which: str) -> None:
    """ijson's `items_coro` kept a prefix path (`tasks.item.item...`) per open container:
    memory grew with the square of the depth, about a gigabyte for 20,000 levels."""
    make = TaskParser if which == "task" else PartialTaskParser

    def feed(levels: int) -> Callable[[], object]:
        def run() -> None:
            parser = make(max_depth=10**6)
            parser.feed('{"tasks": [' + "[" * levels)
            parser.close()
            assert isinstance(parser.error, IncompleteOutputError)

        return run

    small, large = peak_memory(feed(10_000)), peak_memory(feed(40_000))
    assert large < 16 * 2**20, large  # (the quadratic prefixes took 2.4 GB here)
    assert large < 6 * small, (small, large)  # four times the depth: about four times


def test_a_megabyte_of_brackets_in_one_piece_is_refused_in_bounded_memory() -> None:
    """The C parser's events for one piece are held in a list: a piece is handed over in
    slices, so the refusal comes after at most one slice of them."""
    text = '{"tasks": [' + "[" * (1 << 20) + "]"
    for make in (TaskParser, PartialTaskParser):
        parser = make(max_item_bytes=2 << 20)

        def feed_twice(parser: Any = parser) -> None:
            parser.feed(text)  # (PartialTaskParser: ItemStarted first, then the error)
            parser.feed(" ")

        def run(feed_twice: Callable[[], None] = feed_twice) -> None:
            with pytest.raises(MalformedOutputError, match="nested deeper than 512"):
                feed_twice()

        assert peak_memory(run) < 16 * 2**20


def test_items_are_still_built_as_ijson_built_them() -> None:
    """The builder that replaced `items_coro`: the same values, types and key order."""
    items = [
        {"b": 1, "a": [1.5, -0.0, 1e300, True, None, "s", {"x": {}}], "c": []},
        [[], {}, [[1]], ""],
        "text",
        -7,
        0.25,
        False,
        None,
        {"dup": 1, "dup": 2},  # noqa: F601  (the last one wins, as in json.loads)
    ]
    text = json.dumps({"before": {"x": [1, {"tasks": [9]}]}, "tasks": items, "after": [1]})
    expected = json.loads(text)["tasks"]
    for pieces in [[text], list(text), [text[i : i + 5] for i in range(0, len(text), 5)]]:
        got, error = task_parser(pieces)
        assert error is None
        assert got == expected
        assert [list(i) if isinstance(i, dict) else None for i in got] == [
            list(i) if isinstance(i, dict) else None for i in expected
        ]
        assert [type(i) for i in got] == [type(i) for i in expected]
        assert partial_parser(pieces)[:2] == (expected, None)


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('{"tasks": [1], "tasks": [2]}', [1, 2]),
        ('{"other": [1], "tasks": [2]}', [2]),
        ('{"tasks": {"item": 1}}', []),
        ('[[1], {"tasks": [2]}]', [[1], {"tasks": [2]}]),
    ],
)
def test_only_the_root_objects_tasks_lists_hold_items(text: str, items: list[Any]) -> None:
    for pieces in [[text], list(text)]:
        got, _ = task_parser(pieces)
        assert got == items
        assert partial_parser(pieces)[0] == items


def test_splits_cover_every_cut() -> None:
    assert len(splits("abc")) == 4
    assert all("".join(p) == "abc" for p in splits("abc"))
    assert list(itertools.chain.from_iterable(splits("ab")[1])) == ["a", "b"]
