"""Tests for `multitask._taskparser`: streaming the `tasks` items out of a JSON answer."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multitask._preamble as preamble_module
import multitask._taskparser as taskparser_module
from multitask import (
    AnswerTooLargeError,
    IncompleteOutputError,
    ItemTooLargeError,
    MalformedOutputError,
    MultitaskError,
)
from multitask.lowlevel import TaskParser


def parse(fragments: Iterable[str], **kwargs: Any) -> tuple[list[Any], TaskParser]:
    """Feed every fragment, then close; return all items and the parser."""
    parser = TaskParser(**kwargs)
    items: list[Any] = []
    for fragment in fragments:
        items += parser.feed(fragment)
    items += parser.close()
    return items, parser


def feed_all(parser: TaskParser, fragments: Iterable[str], items: list[Any]) -> None:
    """Feed the fragments one by one, collecting the items into `items` (kept if it raises)."""
    for fragment in fragments:
        items.extend(parser.feed(fragment))


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (so 1 != 1.0 != True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def assert_whole(text: str, expected: list[Any], **kwargs: Any) -> None:
    """The text parses to `expected` with no error, fed whole, in 1-, 2-, 3- and 7-char pieces."""
    for size in (len(text) or 1, 1, 2, 3, 7):
        items, parser = parse(chunked(text, size), **kwargs)
        assert same(items, expected), (size, items)
        assert parser.error is None, (size, parser.error)
        assert parser.truncated is False
        assert parser.done is True
        assert parser.items_emitted == len(expected)


# -- the basic shapes ------------------------------------------------------------------------


def test_public_export_and_defaults() -> None:
    assert taskparser_module.TaskParser is TaskParser  # the sans-IO tier's
    assert taskparser_module.DEFAULT_MAX_ITEM_BYTES == 1024 * 1024
    assert taskparser_module.DEFAULT_MAX_ANSWER_BYTES == 64 * 1024 * 1024


def test_tasks_items_in_order() -> None:
    text = '{"tasks": [{"n": 1}, {"n": 2}, {"n": 3}]}'
    assert_whole(text, [{"n": 1}, {"n": 2}, {"n": 3}])
    _, parser = parse([text])
    assert parser.bare_array is False


def test_fresh_parser_state() -> None:
    parser = TaskParser()
    assert parser.error is None
    assert parser.truncated is False
    assert parser.done is False
    assert parser.bare_array is False
    assert parser.items_emitted == 0


def test_items_come_out_during_feed_not_only_at_close() -> None:
    parser = TaskParser()
    assert parser.feed('{"tasks": [{"n": 1}') == [{"n": 1}]
    assert parser.items_emitted == 1
    assert parser.feed(", ") == []
    assert parser.feed('{"n": 2}, {"n"') == [{"n": 2}]
    assert parser.feed(": 3}]}") == [{"n": 3}]
    assert parser.items_emitted == 3
    assert parser.close() == []
    assert parser.error is None


def test_other_keys_before_and_after_tasks_with_tricky_strings() -> None:
    text = (
        '{"title": "a [ { ] } x", "quote": "say \\"tasks\\": [1]", "slash": "\\\\", '
        '"nested": {"tasks": [99], "list": [[], {}], "s": "}]"}, '
        '"tasks": [{"a": "}"}, {"b": "]\\\\"}, {"c": "\\"}\\""}], '
        '"after": "]}{[", "more": [1, {"x": "\\\\\\""}]}'
    )
    expected = json.loads(text)["tasks"]
    assert expected == [{"a": "}"}, {"b": "]\\"}, {"c": '"}"'}]
    assert_whole(text, expected)


def test_keys_after_tasks_are_not_items() -> None:
    assert_whole('{"tasks": [1], "other": [2, 3], "x": {"tasks": [4]}}', [1])


def test_bare_top_level_array() -> None:
    text = '[{"n": 1}, {"n": 2}]'
    assert_whole(text, [{"n": 1}, {"n": 2}])
    _, parser = parse([text])
    assert parser.bare_array is True


def test_bare_array_of_objects_holding_tasks_keys() -> None:
    assert_whole('[{"tasks": [1]}, {"tasks": []}]', [{"tasks": [1]}, {"tasks": []}])


def test_whitespace_everywhere() -> None:
    text = ' \n\t {\n\t"tasks"\n :\r\n [ \n{ "a" : 1 } ,\n\t{"b":[ 1 , 2 ]}\n ] \n}\n \n'
    assert_whole(text, [{"a": 1}, {"b": [1, 2]}])


def test_prose_before_json() -> None:
    text = 'Sure! Here are the tasks you asked for.\n\n{"tasks": [{"a": 1}, {"a": 2}]}'
    assert_whole(text, [{"a": 1}, {"a": 2}])


def test_prose_before_indented_json() -> None:
    assert_whole('Result:\n   {"tasks": [1, 2]}', [1, 2])
    assert_whole("Result:\n\t[1, 2]", [1, 2])


def test_prose_then_line_starting_with_brace() -> None:
    text = 'I thought about it (a lot).\nHere it is:\n{\n  "tasks": [\n    {"a": 1}\n  ]\n}'
    assert_whole(text, [{"a": 1}])


def test_items_stream_after_prose_before_close() -> None:
    parser = TaskParser()
    assert parser.feed("Here you go:\n") == []
    assert parser.feed('{"tasks": [{"a": 1}, ') == [{"a": 1}]
    assert parser.feed('{"a": 2}]}') == [{"a": 2}]


def test_json_fence_with_text_after() -> None:
    text = (
        'Here:\n```json\n{"tasks": [{"a": 1}, {"a": 2}]}\n```\n'
        'Let me know if you need {more} or [fewer] "tasks".'
    )
    assert_whole(text, [{"a": 1}, {"a": 2}])


def test_fence_at_start() -> None:
    assert_whole('```json\n{"tasks": [1, 2]}\n```', [1, 2])


def test_fence_without_language_tag() -> None:
    assert_whole('```\n{"tasks": ["x"]}\n```\nDone.', ["x"])
    assert_whole("Items:\n```\n[1, 2]\n```", [1, 2])


def test_fence_items_stream_as_they_close() -> None:
    parser = TaskParser()
    assert parser.feed("```js") == []
    assert parser.feed("on\n") == []
    assert parser.feed('{"tasks": [{"a": 1}') == [{"a": 1}]
    assert parser.feed("]}\n``") == []
    assert parser.feed("`\nbye {") == []
    assert parser.close() == []
    assert parser.error is None


def test_inline_json_after_prose_found_at_close() -> None:
    parser = TaskParser()
    assert parser.feed('Sure: {"tasks": [1, 2]}') == []
    assert parser.close() == [1, 2]
    assert parser.error is None
    assert parser.items_emitted == 2


@pytest.mark.parametrize(
    ("text", "begins"),
    [
        ('{"tasks": [1]}', True),
        ("  [1, 2]", True),
        ('Here they are:\n{"tasks": [1]}', True),
        ("Here they are:\n\t  [1, 2]", True),
        ('```json\n{"tasks": [1]}\n```', True),
        ("Sure.\n```\n[1]\n```", True),
        ("I will list them [all] {now}", False),
        ("no JSON here\nat all", False),
    ],
)
def test_json_start_is_the_rule_the_preamble_follows(text: str, begins: bool) -> None:
    """`JSON_START` (what a decoder asks of message text) agrees with `Preamble` (what the
    parsers skip): JSON begins where a line opens an object or array, or after a fence."""
    assert bool(preamble_module.JSON_START.search(text)) is begins
    assert bool(preamble_module.Preamble(1000).find(text)) is begins


def test_text_after_json_ignored() -> None:
    parser = TaskParser()
    assert parser.feed('{"tasks": [1, 2]}\nThat is all "folks" {') == [1, 2]
    assert parser.done is True  # the text after the value showed the value closed
    assert parser.feed(' "tasks": [3]}') == []
    assert parser.close() == []
    assert parser.error is None


def test_second_json_value_ignored() -> None:
    assert_whole('{"tasks": [1, 2]} {"tasks": [3]}', [1, 2])


def test_feed_empty_strings() -> None:
    parser = TaskParser()
    assert parser.feed("") == []
    assert parser.feed('{"tasks": [') == []
    assert parser.feed("") == []
    assert parser.feed("1,") == [1]
    assert parser.feed("") == []
    assert parser.feed("2]}") == [2]
    assert parser.feed("") == []
    assert parser.close() == []
    assert parser.error is None


def test_unicode_items() -> None:
    text = '{"tasks": ["日本語", "\u2028\u2029\u0085", "😀", "\\ud83d\\ude00", {"é": "\\u00e9"}]}'
    assert_whole(text, ["日本語", "\u2028\u2029\u0085", "😀", "😀", {"é": "é"}])


@pytest.mark.parametrize(
    ("text", "expected", "truncated"),
    [
        ("[]", [], False),
        ('{"tasks": [1]}', [1], False),
        ('{"tasks": [1, 2', [1], True),
        ("[1, 2]\n```\nok", [1, 2], False),
    ],
)
def test_empty_fragments_before_close(text: str, expected: list[Any], truncated: bool) -> None:
    # An empty fragment must not reach the C parser: b"" there means "end of input".
    parser = TaskParser()
    items = parser.feed(text)
    assert parser.feed("") == []
    assert parser.feed("") == []
    items += parser.close()
    assert items == expected
    assert parser.truncated is truncated
    assert (parser.error is None) is not truncated


# -- answers that are not what they should be ---------------------------------------------


def test_prose_without_json_is_malformed_at_close() -> None:
    parser = TaskParser()
    assert parser.feed("I'm sorry, ") == []
    assert parser.feed("I can't help with that.") == []
    assert parser.close() == []
    assert isinstance(parser.error, MalformedOutputError)
    assert not isinstance(parser.error, IncompleteOutputError)
    assert "holds no JSON" in str(parser.error)
    assert "I'm sorry" in str(parser.error)
    assert parser.truncated is False
    assert parser.done is True


def test_empty_answer_is_malformed() -> None:
    for text in ("", "   \n "):
        items, parser = parse([text])
        assert items == []
        assert isinstance(parser.error, MalformedOutputError)


def test_object_without_tasks_is_malformed() -> None:
    for size in (100, 1):
        items, parser = parse(chunked('{"items": [1, 2], "task": [3]}', size))
        assert items == []
        assert isinstance(parser.error, MalformedOutputError)
        assert "no 'tasks' list" in str(parser.error)
        assert parser.truncated is False


def test_empty_tasks_list_is_fine() -> None:
    assert_whole('{"tasks": []}', [])
    assert_whole("[]", [])
    assert_whole('{"before": 1, "tasks": [], "after": [1]}', [])


def test_close_is_idempotent_enough() -> None:
    parser = TaskParser()
    parser.feed('{"tasks": [1]}')
    assert parser.close() == []
    assert parser.error is None
    assert parser.close() == []
    assert parser.error is None


# -- truncation ----------------------------------------------------------------------------


def test_truncated_inside_the_list() -> None:
    parser = TaskParser()
    assert parser.feed('{"tasks": [{"a": 1}, {"a": 2}, {"a": ') == [{"a": 1}, {"a": 2}]
    assert parser.close() == []
    assert isinstance(parser.error, IncompleteOutputError)
    assert parser.error.items_delivered == 2
    assert "2 complete item" in str(parser.error)
    assert parser.truncated is True
    assert parser.done is True


@pytest.mark.parametrize(
    ("text", "delivered"),
    [
        ('{"tasks": [1, 2, "abc', [1, 2]),
        ('{"tasks": [1, 2, 3', [1, 2]),  # "3" might have been "35": not an item yet
        ('{"tasks": [1, 2, 3.', [1, 2]),
        ('{"tasks": [1, 2, [3, 4]', [1, 2, [3, 4]]),
        ('{"tasks": [1, 2, {"a": [1', [1, 2]),
        ('{"tasks": [1, "a\\', [1]),
        ('{"tasks": [', []),
        ('{"tasks": ', []),
        ('{"tas', []),
        ("[1, 2, ", [1, 2]),
    ],
)
def test_truncation_points(text: str, delivered: list[Any]) -> None:
    for size in (len(text), 1):
        items, parser = parse(chunked(text, size))
        assert same(items, delivered), (size, items)
        assert isinstance(parser.error, IncompleteOutputError), (size, parser.error)
        assert parser.error.items_delivered == len(delivered)
        assert parser.truncated is True


def test_truncated_in_later_key_after_list_closed() -> None:
    parser = TaskParser()
    assert parser.feed('{"tasks": [{"a": 1}, {"a": 2}], "summary": "two ite') == [
        {"a": 1},
        {"a": 2},
    ]
    assert parser.close() == []
    assert isinstance(parser.error, IncompleteOutputError)
    assert parser.error.items_delivered == 2
    assert parser.truncated is True


# -- malformed JSON ----------------------------------------------------------------------------


_SPAN = re.compile(r"within characters (\d+)-(\d+)")


def test_malformed_after_items_in_one_piece() -> None:
    text = '{"tasks": [{"a": 1}, {"a": 2}, {"a": x}]}'
    bad = text.index("x")
    parser = TaskParser()
    # The items before the bad spot come first ...
    assert parser.feed(text) == [{"a": 1}, {"a": 2}]
    assert parser.items_emitted == 2
    # ... and the error on the next call.
    with pytest.raises(MalformedOutputError) as info:
        parser.feed("more")
    error = info.value
    assert not isinstance(error, IncompleteOutputError)
    assert isinstance(error, MultitaskError)
    assert "after 2 item(s)" in str(error)
    span = _SPAN.search(str(error))
    assert span is not None, str(error)
    start, end = int(span[1]), int(span[2])
    assert error.offset == start
    assert start <= bad < end
    # close() reports it too, without raising.
    assert parser.close() == []
    assert parser.error is error


def test_malformed_after_items_then_close() -> None:
    parser = TaskParser()
    assert parser.feed('{"tasks": [1, 2, }') == [1, 2]
    assert parser.close() == []
    assert isinstance(parser.error, MalformedOutputError)
    assert not isinstance(parser.error, IncompleteOutputError)
    assert parser.truncated is False


def test_malformed_fed_in_pieces_says_where() -> None:
    text = '{"tasks": [{"a": 1}, {"a": 2}, {"a": tru}]}'
    bad = text.index("}", text.index("tru"))  # "tru" is only wrong once "}" follows
    parser = TaskParser()
    items: list[Any] = []
    feed_all(parser, text[:bad], items)  # no error yet
    with pytest.raises(MalformedOutputError) as info:
        parser.feed(text[bad])  # raised by the very feed holding the bad spot
    assert items == [{"a": 1}, {"a": 2}]
    span = _SPAN.search(str(info.value))
    assert span is not None
    assert int(span[1]) <= bad < int(span[2])
    assert info.value.offset == int(span[1])
    assert "after 2 item(s)" in str(info.value)


def test_malformed_offset_counts_from_json_start_in_characters() -> None:
    prose = "Voilà — the tasks:\n"
    json_text = '{"tasks": ["é", "日本", ]}'
    parser = TaskParser()
    items = parser.feed(prose + json_text[:-3])
    assert items == ["é", "日本"]
    with pytest.raises(MalformedOutputError) as info:
        parser.feed(json_text[-3:])
    span = _SPAN.search(str(info.value))
    assert span is not None
    assert int(span[1]) <= json_text.index("]") < int(span[2]) <= len(json_text)


def test_malformed_with_no_items_raises_at_once() -> None:
    parser = TaskParser()
    with pytest.raises(MalformedOutputError, match="malformed JSON"):
        parser.feed('{"tasks": [}')


@pytest.mark.parametrize(
    "text",
    [
        '{"tasks": [1,]}',
        '{"tasks": [01]}',
        "{'tasks': [1]}",
        '{"tasks": [NaN]}',
        '{"tasks" [1]}',
        '{"tasks": [1 2]}',
        '{"tasks": ["a\x01"]}',
    ],
)
def test_malformed_documents(text: str) -> None:
    for size in (len(text), 1):
        parser = TaskParser()
        error: MultitaskError | None
        try:
            for fragment in chunked(text, size):
                parser.feed(fragment)
            parser.close()
            error = parser.error
        except MultitaskError as exc:
            error = exc
        assert isinstance(error, MalformedOutputError), (size, error)
        assert not isinstance(error, IncompleteOutputError)


# -- scalar and object items -------------------------------------------------------------------


def test_scalar_items_types() -> None:
    text = (
        '{"tasks": ["a", "", 0, -7, 12345678901234, 1.5, -0.25, 1e3, 2E-2, 3.0, true, false, '
        'null, [1, [2.5, ["x"]]], [], {}, {"k": [1]}]}'
    )
    expected = [
        "a",
        "",
        0,
        -7,
        12345678901234,
        1.5,
        -0.25,
        1000.0,
        0.02,
        3.0,
        True,
        False,
        None,
        [1, [2.5, ["x"]]],
        [],
        {},
        {"k": [1]},
    ]
    assert_whole(text, expected)
    items, _ = parse([text])
    assert [type(x) for x in items[2:10]] == [int, int, int, float, float, float, float, float]


def test_scalar_items_fed_bytewise_come_out_at_their_end() -> None:
    text = '{"tasks": ["a,b", 12, 3.5, true, [1, 2], "q\\"}"]}'
    parser = TaskParser(scalar_items=True)
    seen: list[tuple[int, Any]] = []
    for i, char in enumerate(text):
        seen += [(i, item) for item in parser.feed(char)]
    assert parser.close() == []
    assert parser.error is None
    ends = [
        text.index('"', text.index("a,b") + 3),  # the closing quote
        text.index(",", text.index("12")),  # the comma after the number
        text.index(",", text.index("3.5")),
        text.index(",", text.index("true")),
        text.index("]", text.index("[1, 2")),
        len(text) - 3,  # the closing quote of the last string
    ]
    assert seen == list(zip(ends, ["a,b", 12, 3.5, True, [1, 2], 'q"}'], strict=True))


def test_object_items_with_scalar_items_false() -> None:
    text = '{"tasks": [{"a": "x,\\"y"}, {"b": [1, {"c": null}]}, {}]}'
    assert_whole(text, [{"a": 'x,"y'}, {"b": [1, {"c": None}]}, {}], scalar_items=False)


def test_scalar_items_false_still_delivers_scalars_by_list_end() -> None:
    parser = TaskParser(scalar_items=False)
    assert parser.feed('{"tasks": [1, "a", 2.5') == []
    assert parser.feed("]}") == [1, "a", 2.5]
    assert parser.close() == []
    assert parser.error is None


_OBJECT_ITEMS = [
    '{"a": 1}',
    '{"b": {"c": [1, {"d": "}"}]}}',
    '{"e": "\\"}\\\\", "f": "\\\\"}',
    "{}",
    '{"g": "日本}", "h": [[], {}]}',
    '{\n  "i": {\n    "j": "]"\n  }\n}',
]


@pytest.mark.parametrize("scalar_items", [True, False])
def test_item_returned_by_the_feed_holding_its_closing_brace(scalar_items: bool) -> None:
    prefix = '{"intro": "{ [ }", "tasks": ['
    text = prefix
    ends: list[int] = []
    for n, source in enumerate(_OBJECT_ITEMS):
        if n:
            text += ", "
        text += source
        ends.append(len(text) - 1)
    text += '], "tail": "}"}'
    assert all(text[end] == "}" for end in ends)
    parser = TaskParser(scalar_items=scalar_items)
    seen: list[tuple[int, Any]] = []
    for i, char in enumerate(text):
        seen += [(i, item) for item in parser.feed(char)]
    assert parser.close() == []
    assert parser.error is None
    assert seen == list(zip(ends, [json.loads(s) for s in _OBJECT_ITEMS], strict=True))


@pytest.mark.parametrize("scalar_items", [True, False])
def test_items_returned_when_brace_ends_the_fragment(scalar_items: bool) -> None:
    text = '{"tasks": [' + ", ".join(_OBJECT_ITEMS) + "]}"
    fragments: list[str] = []
    start = 0
    for source in _OBJECT_ITEMS:
        end = text.index(source, start) + len(source)
        fragments.append(text[start:end])
        start = end
    fragments.append(text[start:])
    parser = TaskParser(scalar_items=scalar_items)
    for fragment, source in zip(fragments[:-1], _OBJECT_ITEMS, strict=True):
        assert fragment.endswith("}")
        assert parser.feed(fragment) == [json.loads(source)]
    assert parser.feed(fragments[-1]) == []
    assert parser.close() == []
    assert parser.error is None


# -- whole=True: the answer is one item ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "b": [1, {"c": "}"}]}', "[1, 2]", '{"tasks": [1]}', '  {"x": "y"}\n'],
)
def test_whole_answer_is_one_item_returned_at_its_closing_bracket(text: str) -> None:
    end = text.rstrip().rindex("}" if text.lstrip().startswith("{") else "]")
    parser = TaskParser(whole=True)
    seen: list[tuple[int, Any]] = []
    for i, char in enumerate(text):
        seen += [(i, item) for item in parser.feed(char)]
    assert parser.close() == []
    assert parser.error is None
    assert parser.bare_array is False
    assert parser.items_emitted == 1
    assert seen == [(end, json.loads(text))]


def test_whole_answer_after_prose_then_trailing_text() -> None:
    assert_whole('Sure:\n{"x": 1}\nbye {', [{"x": 1}], whole=True)


def test_whole_answer_truncated() -> None:
    items, parser = parse(['{"a": 1, "b": [1, 2'], whole=True)
    assert items == []
    assert isinstance(parser.error, IncompleteOutputError)
    assert "inside the item" in str(parser.error)
    assert parser.error.items_delivered == 0


@pytest.mark.parametrize(
    "text", ['{"tasks": [1], "tasks.item": {"x": 2}}', '{"tasks": {"item": {"x": 2}}}']
)
def test_top_level_key_named_tasks_dot_item(text: str) -> None:
    # ijson's prefixes joined keys with '.', so these were read as items; the structure is not.
    items, _ = parse([text])
    assert {"x": 2} not in items


# -- size limits ---------------------------------------------------------------------------


def test_item_too_large() -> None:
    text = '{"tasks": [{"a": 1}, {"big": "' + "x" * 500 + '"}, {"a": 3}]}'
    parser = TaskParser(max_item_bytes=100)
    items: list[Any] = []
    with pytest.raises(ItemTooLargeError, match="item 1 is larger than 100") as info:
        feed_all(parser, chunked(text, 10), items)
    assert items == [{"a": 1}]
    assert isinstance(info.value, MalformedOutputError)
    assert isinstance(info.value, MultitaskError)


def test_item_under_limit_passes() -> None:
    text = '{"tasks": [{"s": "' + "x" * 60 + '"}, {"s": "' + "y" * 60 + '"}]}'
    items, parser = parse(chunked(text, 5), max_item_bytes=100)
    assert items == [{"s": "x" * 60}, {"s": "y" * 60}]
    assert parser.error is None


def test_scalar_item_too_large() -> None:
    parser = TaskParser(max_item_bytes=50)
    assert parser.feed('["short", ') == ["short"]
    with pytest.raises(ItemTooLargeError):
        feed_all(parser, chunked('"' + "z" * 200 + '"]', 4), [])


def test_answer_too_large_items_before_stand() -> None:
    item = '{"n": 1234567890}'
    text = '{"tasks": [' + ", ".join([item] * 20) + "]}"
    parser = TaskParser(max_answer_bytes=100)
    items: list[Any] = []
    with pytest.raises(ItemTooLargeError, match="grew past 100") as info:
        feed_all(parser, chunked(text, 8), items)
    assert 3 <= len(items) <= 5
    assert items == [{"n": 1234567890}] * len(items)
    assert parser.items_emitted == len(items)
    assert isinstance(info.value, MalformedOutputError)


@pytest.mark.parametrize("size", [8, 1000])
def test_answer_too_large_is_an_answer_too_large_error(size: int) -> None:
    """Over `max_answer_bytes` is `AnswerTooLargeError`, which `except ItemTooLargeError`
    still catches; one item over `max_item_bytes` is an `ItemTooLargeError` and not that."""
    text = '{"tasks": [' + ", ".join(['{"n": 1234567890}'] * 20) + "]}"
    with pytest.raises(AnswerTooLargeError, match="grew past 100") as info:
        feed_all(TaskParser(max_answer_bytes=100), chunked(text, size), [])
    assert isinstance(info.value, ItemTooLargeError)
    with pytest.raises(ItemTooLargeError, match="item 0 is larger than 10") as item:
        feed_all(TaskParser(max_item_bytes=10), chunked(text, size), [])
    assert not isinstance(item.value, AnswerTooLargeError)


def test_answer_under_limit_passes() -> None:
    text = '{"tasks": [1, 2, 3]}'
    items, parser = parse(chunked(text, 3), max_answer_bytes=len(text))
    assert items == [1, 2, 3]
    assert parser.error is None


def test_prose_without_json_too_long() -> None:
    parser = TaskParser(max_item_bytes=100)
    with pytest.raises(ItemTooLargeError, match="no JSON found"):
        feed_all(parser, ["blah blah "] * 50, [])


# -- cost ----------------------------------------------------------------------------------


class _CountingSend:
    """Stands in for the C parser coroutine, counting what it is handed."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self.calls = 0
        self.bytes = 0

    def send(self, data: bytes) -> Any:
        self.calls += 1
        self.bytes += len(data)
        return self._coro.send(data)

    def close(self) -> Any:
        return self._coro.close()


@pytest.mark.parametrize(
    "value",
    [
        "y" * 65536,
        'a\\\\b\\"c\\nd\\u00e9 {}[],:' * 3000,  # escapes and brackets inside the string
        "日本語テキスト" * 9000,
    ],
)
@pytest.mark.parametrize("scalar_items", [True, False])
def test_long_string_fed_in_tiny_pieces_reaches_c_parser_a_bounded_number_of_times(
    value: str, scalar_items: bool
) -> None:
    text = '{"tasks": [{"id": 1, "text": "' + value + '"}, {"id": 2}]}'
    assert len(text) > 60000
    parser = TaskParser(scalar_items=scalar_items)
    assert parser.feed(text[:1]) == []  # "{" starts the C parser but is only buffered
    counter = _CountingSend(parser._coro)
    parser._coro = counter
    items: list[Any] = []
    for fragment in chunked(text[1:], 3):
        items += parser.feed(fragment)
    items += parser.close()
    assert parser.error is None
    assert items == json.loads(text)["tasks"]
    assert counter.calls <= 20  # not once per fragment (~20000 of them)
    assert counter.bytes == len(text.encode())  # every byte handed over exactly once


def test_long_key_before_tasks_reaches_c_parser_a_bounded_number_of_times() -> None:
    text = '{"intro": "' + "w" * 65536 + '", "tasks": [1, 2]}'
    parser = TaskParser()
    assert parser.feed(text[:1]) == []
    counter = _CountingSend(parser._coro)
    parser._coro = counter
    items: list[Any] = []
    for fragment in chunked(text[1:], 3):
        items += parser.feed(fragment)
    items += parser.close()
    assert items == [1, 2]
    assert parser.error is None
    assert counter.calls <= 20
    assert counter.bytes == len(text)


def test_many_items_fed_in_pieces_each_byte_sent_once() -> None:
    text = '{"tasks": [' + ", ".join(f'{{"n": {n}, "s": "{n}"}}' for n in range(2000)) + "]}"
    parser = TaskParser()
    assert parser.feed(text[:1]) == []
    counter = _CountingSend(parser._coro)
    parser._coro = counter
    items: list[Any] = []
    for fragment in chunked(text[1:], 4):
        items += parser.feed(fragment)
    items += parser.close()
    assert items == [{"n": n, "s": str(n)} for n in range(2000)]
    assert counter.bytes == len(text)


class _CountingPattern:
    """Stands in for a compiled regex, counting how many characters its searches covered."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self.scanned = 0

    def search(self, string: str, pos: int = 0) -> re.Match[str] | None:
        self.scanned += len(string) - pos
        return self._pattern.search(string, pos)


def test_long_prose_fed_in_tiny_pieces_is_scanned_linearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fence = _CountingPattern(preamble_module._FENCE)
    opener = _CountingPattern(preamble_module._LINE_OPENER)
    monkeypatch.setattr(preamble_module, "_FENCE", fence)
    monkeypatch.setattr(preamble_module, "_LINE_OPENER", opener)
    line = "Let me think about this step by step, carefully (really) and at length.\n"
    prose = line * 400  # ~30 KB
    text = prose + '```json\n{"tasks": [1, 2]}\n```\n'
    items, parser = parse(chunked(text, 3))
    assert items == [1, 2]
    assert parser.error is None
    # Each search covers at most the last line plus the new piece, not the whole preamble.
    assert fence.scanned < 50 * len(prose)
    assert opener.scanned < 50 * len(prose)


# -- property: any JSON document, any split -------------------------------------------------

_special_chars = st.sampled_from(
    ['"', "\\", "{", "}", "[", "]", ",", ":", "\u2028", "\u2029", "\x00", "\n", "\t", "`", "é"]
)
_text = st.text(st.characters(codec="utf-8") | _special_chars, max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
# "tasks.item" is left out: test_top_level_key_named_tasks_dot_item has it.
_other_keys = st.dictionaries(
    _text.filter(lambda k: k not in ("tasks", "tasks.item")), _json_values, max_size=3
)


@st.composite
def _documents(draw: st.DrawFn) -> tuple[str, list[Any], bool]:
    tasks = draw(st.lists(_json_values, max_size=6))
    bare = draw(st.booleans())
    document: Any
    if bare:
        document = tasks
    else:
        before = draw(_other_keys)
        after = draw(_other_keys)
        document = {**before, "tasks": tasks}
        document.update({k: v for k, v in after.items() if k not in document})
    text = json.dumps(
        document,
        indent=draw(st.sampled_from([None, 0, 1, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (", ", ": "), (" , ", " :\n ")])),
        ensure_ascii=draw(st.booleans()),
    )
    loaded = json.loads(text)
    expected = loaded if bare else loaded["tasks"]
    prefix, suffix = draw(
        st.sampled_from(
            [("", ""), (" \n", "\n"), ("Here:\n", ""), ("```json\n", "\n```\nBye {."), ("", " ")]
        )
    )
    return prefix + text + suffix, expected, bare


@settings(max_examples=250, deadline=None)
@given(document=_documents(), data=st.data())
def test_property_any_document_any_split(
    document: tuple[str, list[Any], bool], data: st.DataObject
) -> None:
    text, expected, bare = document

    size = data.draw(st.integers(1, 16))
    items, parser = parse(chunked(text, size))
    assert same(items, expected)
    assert parser.error is None
    assert parser.bare_array is bare
    assert parser.items_emitted == len(expected)

    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=24)))
    points = [0, *cuts, len(text)]
    items, parser = parse(text[a:b] for a, b in itertools.pairwise(points))
    assert same(items, expected)
    assert parser.error is None
