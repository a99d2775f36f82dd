"""Tests for `multitask._sse`: the WHATWG event-stream parsing rules, fed in pieces of any size."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multitask._sse as sse_module
import multitask.providers
from multitask import EventTooLargeError, MultitaskError, StreamDecodeError
from multitask.lowlevel import NDJSONDecoder, ServerSentEvent, SSEDecoder

Event = ServerSentEvent


def decode(*chunks: bytes, **kwargs: int) -> list[ServerSentEvent]:
    """Feed the chunks in order, then end the stream; return every event."""
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.end()
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- the basics ------------------------------------------------------------------------------


def test_public_exports() -> None:
    """The decoder and its event are the sans-IO tier's; the event is the providers' too."""
    assert sse_module.SSEDecoder is SSEDecoder
    assert sse_module.ServerSentEvent is ServerSentEvent
    assert multitask.providers.ServerSentEvent is ServerSentEvent
    assert sse_module.DEFAULT_MAX_EVENT_BYTES == 16 * 1024 * 1024


def test_event_defaults() -> None:
    event = ServerSentEvent("x")
    assert (event.data, event.event, event.id, event.retry) == ("x", "message", "", None)


def test_single_data_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: hello\n\n") == [Event("hello")]
    assert decoder.end() == []


def test_feed_returns_only_completed_events() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\n") == [Event("one")]
    assert decoder.feed(b"data: two\n\ndata: three\n\ndata: fo") == [Event("two"), Event("three")]
    assert decoder.feed(b"ur\n\n") == [Event("four")]


def test_event_field_names_the_event() -> None:
    assert decode(b"event: update\ndata: 1\n\n") == [Event("1", "update")]


def test_event_type_does_not_persist_after_dispatch() -> None:
    events = decode(b"event: update\ndata: 1\n\ndata: 2\n\n")
    assert events == [Event("1", "update"), Event("2", "message")]


def test_field_order_within_event_does_not_matter() -> None:
    assert decode(b"data: 1\nevent: late\n\n") == [Event("1", "late")]


def test_last_event_type_wins() -> None:
    assert decode(b"event: a\nevent: b\ndata: x\n\n") == [Event("x", "b")]


def test_empty_event_field_means_message() -> None:
    assert decode(b"event:\ndata: x\n\n") == [Event("x", "message")]


def test_id_field_sets_id_and_persists() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id == ""
    assert decoder.feed(b"id: 7\ndata: a\n\n") == [Event("a", id="7")]
    assert decoder.last_event_id == "7"
    # The last event id is kept for later events that do not set one.
    assert decoder.feed(b"data: b\n\n") == [Event("b", id="7")]
    assert decoder.feed(b"id: 8\ndata: c\n\n") == [Event("c", id="8")]
    assert decoder.last_event_id == "8"


def test_empty_id_resets_last_event_id() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 7\ndata: a\n\n")
    assert decoder.feed(b"id\ndata: b\n\n") == [Event("b", id="")]
    assert decoder.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: good\ndata: a\n\n")
    assert decoder.feed(b"id: b\x00ad\ndata: b\n\n") == [Event("b", id="good")]
    assert decoder.last_event_id == "good"


def test_id_without_data_still_sets_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n\n") == []
    assert decoder.last_event_id == "42"
    assert decoder.feed(b"data: x\n\n") == [Event("x", id="42")]


def test_last_event_id_waits_for_the_blank_line_that_ends_its_block() -> None:
    """WHATWG: `id:` sets the last event ID *buffer*; the event source's last event ID is
    set from it when the block is dispatched (it moved as soon as the line was read)."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n") == []
    assert decoder.last_event_id == ""
    assert decoder.feed(b"data: x\n") == []
    assert decoder.last_event_id == ""
    assert decoder.feed(b"\n") == [Event("x", id="42")]
    assert decoder.last_event_id == "42"
    decoder.feed(b"id: 43\ndata: y")  # a block the stream never finishes
    assert decoder.last_event_id == "42"
    assert decoder.end() == []
    assert decoder.last_event_id == "42"


@pytest.mark.parametrize("cut", [1, 3, 5, 7, 8])
def test_last_event_id_of_a_block_split_anywhere(cut: int) -> None:
    stream = b"id: 7\n\ndata: a\n\n"
    decoder = SSEDecoder()
    decoder.feed(stream[:cut])
    assert decoder.last_event_id == ("7" if cut >= 7 else "")
    assert decoder.feed(stream[cut:]) == [Event("a", id="7")]
    assert decoder.last_event_id == "7"


def test_retry_field_digits() -> None:
    events = decode(b"retry: 1500\ndata: a\n\ndata: b\n\n")
    assert events == [Event("a", retry=1500), Event("b", retry=1500)]


@pytest.mark.parametrize(
    "value", [b"abc", b"15s", b"-1", b"1.5", b" 1", b"", b"\xd9\xa3", b"+3", b"1e3"]
)
def test_retry_non_digits_ignored(value: bytes) -> None:
    events = decode(b"retry: 100\ndata: a\n\nretry: " + value + b"\ndata: b\n\n")
    assert events == [Event("a", retry=100), Event("b", retry=100)]


def test_retry_without_colon_ignored() -> None:
    assert decode(b"retry\ndata: a\n\n") == [Event("a", retry=None)]


def test_retry_zero() -> None:
    assert decode(b"retry: 0\ndata: a\n\n") == [Event("a", retry=0)]


# -- data lines ------------------------------------------------------------------------------


def test_multiline_data_joined_with_newline() -> None:
    assert decode(b"data: one\ndata: two\ndata: three\n\n") == [Event("one\ntwo\nthree")]


def test_empty_data_lines_keep_their_newlines() -> None:
    assert decode(b"data\ndata\ndata: x\ndata:\n\n") == [Event("\n\nx\n")]


def test_empty_data_value_dispatches_empty_string() -> None:
    assert decode(b"data:\n\n") == [Event("")]
    assert decode(b"data: \n\n") == [Event("")]


def test_field_without_colon_is_name_with_empty_value() -> None:
    assert decode(b"data\n\n") == [Event("")]
    assert decode(b"event\ndata: x\n\n") == [Event("x", "message")]


def test_only_one_space_after_colon_stripped() -> None:
    assert decode(b"data:  two spaces\n\n") == [Event(" two spaces")]
    assert decode(b"data:no space\n\n") == [Event("no space")]
    assert decode(b"data:\tTab\n\n") == [Event("\tTab")]
    assert decode(b"event:  spaced\ndata: x\n\n") == [Event("x", " spaced")]
    assert decode(b"id:  9\ndata: x\n\n") == [Event("x", id=" 9")]


def test_trailing_space_kept() -> None:
    assert decode(b"data: x  \n\n") == [Event("x  ")]


def test_value_holds_everything_after_first_colon() -> None:
    assert decode(b'data: {"a": "b:c"}\n\n') == [Event('{"a": "b:c"}')]
    assert decode(b"data::x\n\n") == [Event(":x")]


def test_space_before_colon_makes_a_different_field() -> None:
    assert decode(b"data : ignored\ndata: kept\n\n") == [Event("kept")]


def test_field_names_are_case_sensitive() -> None:
    assert decode(b"Data: no\nDATA: no\ndata: yes\n\n") == [Event("yes")]
    assert decode(b"Event: x\ndata: y\n\n") == [Event("y", "message")]


def test_unknown_fields_ignored() -> None:
    events = decode(b"foo: bar\ndata: a\nx-custom:1\nwhat\n\n")
    assert events == [Event("a")]


def test_event_with_only_unknown_fields_not_dispatched() -> None:
    assert decode(b"foo: bar\n\ndata: a\n\n") == [Event("a")]


# -- comments ------------------------------------------------------------------------------


def test_comments_ignored_and_counted() -> None:
    decoder = SSEDecoder()
    assert decoder.comments == 0
    assert decoder.feed(b": keep-alive\n\n") == []
    assert decoder.comments == 1
    assert decoder.feed(b":\n:another\ndata: x\n: inside\n\n") == [Event("x")]
    assert decoder.comments == 4


def test_comment_does_not_dispatch_or_reset_event() -> None:
    assert decode(b"event: e\n: ping\ndata: x\n\n") == [Event("x", "e")]


def test_comment_split_across_feeds_counted_once() -> None:
    decoder = SSEDecoder()
    for byte in bytewise(b": keep-alive\r\n\r\n: again\r\r"):
        assert decoder.feed(byte) == []
    assert decoder.comments == 2


# -- dispatch rules ------------------------------------------------------------------------


def test_event_without_data_not_dispatched_and_resets_type() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: foo\n\n") == []
    assert decoder.feed(b"data: x\n\n") == [Event("x", "message")]


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert decode(b"\n\n\n\r\n\r\r") == []


def test_retry_without_data_not_dispatched_but_kept() -> None:
    assert decode(b"retry: 5\n\ndata: x\n\n") == [Event("x", retry=5)]


def test_final_event_without_blank_line_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [Event("a")]
    assert decoder.end() == []


def test_final_partial_line_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == [Event("a")]
    assert decoder.end() == []


def test_end_with_nothing_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.end() == []
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    assert decoder.end() == []


def test_empty_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == [Event("a")]
    assert decoder.feed(b"") == []


# -- byte order mark ---------------------------------------------------------------------


def test_leading_bom_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [Event("x")]


def test_leading_bom_before_field_name_is_not_part_of_it() -> None:
    # Were the BOM kept, the first line's field name would be "\ufeffevent", an unknown field.
    assert decode(b"\xef\xbb\xbfevent: e\ndata: x\n\n") == [Event("x", "e")]


def test_leading_bom_split_across_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb") == []
    assert decoder.feed(b"\xbfdata: x\n\n") == [Event("x")]


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_leading_bom_split_in_two(cut: int) -> None:
    data = b"\xef\xbb\xbfevent: e\ndata: x\n\n"
    assert decode(data[:cut], data[cut:]) == [Event("x", "e")]


def test_leading_bom_after_empty_feed() -> None:
    assert decode(b"", b"\xef\xbb", b"", b"\xbfdata: x\n\n") == [Event("x")]


def test_only_one_leading_bom_dropped() -> None:
    # A second BOM is content: it makes the field name "\ufeffdata", which is unknown.
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [Event("y")]


def test_bom_not_at_start_kept_as_data() -> None:
    assert decode(b"data: \xef\xbb\xbfx\n\n") == [Event("\ufeffx")]
    assert decode(b"data: a\n\ndata: \xef\xbb\xbf\n\n") == [Event("a"), Event("\ufeff")]


def test_bom_on_a_later_line_is_not_stripped() -> None:
    # A BOM at the start of the second line is part of the field name: unknown field.
    assert decode(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [Event("a")]


def test_partial_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    # 0xEF followed by something else is not a byte order mark: the bytes stay (undecodable,
    # so the line's field name is not "data" and the line is ignored).
    assert decode(b"\xef", b"data: x\n\ndata: y\n\n") == [Event("y")]


# -- line endings ----------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol: bytes) -> None:
    data = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    assert decode(data) == [Event("a\nb", "e"), Event("c")]
    assert decode(*bytewise(data)) == [Event("a\nb", "e"), Event("c")]


def test_mixed_line_endings() -> None:
    data = b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\rdata: e\n\n"
    expected = [Event("a\nb\nc"), Event("d"), Event("e")]
    assert decode(data) == expected
    assert decode(*bytewise(data)) == expected


def test_cr_then_lf_is_one_line_end_not_two() -> None:
    assert decode(b"data: a\r\ndata: b\r\n\r\n") == [Event("a\nb")]


def test_lf_then_cr_is_two_line_ends() -> None:
    assert decode(b"data: a\n\rdata: b\n\n") == [Event("a"), Event("b")]


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == [Event("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF of the CRLF that dispatched: not another line
    assert decoder.feed(b"\n") == []  # a real blank line with nothing pending
    assert decoder.end() == []


def test_crlf_split_with_empty_feed_between() -> None:
    # An empty feed between the CR and the LF of one CRLF must not turn the LF into a blank
    # line (that would dispatch "a" alone and lose the "b" line's join).
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r\n\r\n") == [Event("a\nb")]


def test_cr_at_feed_end_then_other_byte() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [Event("a")]
    assert decoder.feed(b"data: b\n\n") == [Event("b")]


def test_cr_pair_split_dispatches() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b\r\r") == [Event("a"), Event("b")]


def test_crlf_split_at_very_start() -> None:
    assert decode(b"\r", b"\ndata: x\r\n\r\n") == [Event("x")]


@pytest.mark.parametrize(
    "char", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
)
def test_unicode_line_separators_are_not_line_ends(char: str) -> None:
    text = f"a{char}b{char}"
    data = b"data: " + text.encode() + b"\n\n"
    assert decode(data) == [Event(text)]
    assert decode(*bytewise(data)) == [Event(text)]


def test_unicode_separators_in_event_and_id() -> None:
    data = "event: a\u2028b\nid: 1\u20292\ndata: x\u0085y\n\n".encode()
    assert decode(data) == [Event("x\u0085y", "a\u2028b", "1\u20292")]


# -- UTF-8 -------------------------------------------------------------------------------


def test_utf8_decoded() -> None:
    text = "héllo wörld ✓ 日本語 😀"
    assert decode(b"data: " + text.encode() + b"\n\n") == [Event(text)]


@pytest.mark.parametrize("char", ["é", "✓", "😀", "\u2028"])
def test_multibyte_character_split_across_feeds(char: str) -> None:
    encoded = char.encode()
    assert len(encoded) > 1
    for cut in range(1, len(encoded)):
        data = b"data: <" + encoded + b">\n\n"
        at = len(b"data: <") + cut
        assert decode(data[:at], data[at:]) == [Event(f"<{char}>")]
    data = b"event: " + encoded + b"\ndata: " + encoded + b"\n\n"
    assert decode(*bytewise(data)) == [Event(char, char)]


def test_invalid_utf8_replaced() -> None:
    assert decode(b"data: a\xffb\n\n") == [Event("a\ufffdb")]


def test_nul_in_data_kept() -> None:
    assert decode(b"data: a\x00b\n\n") == [Event("a\x00b")]


# -- size limit -------------------------------------------------------------------------


def test_event_too_large_is_a_stream_decode_error() -> None:
    assert issubclass(EventTooLargeError, StreamDecodeError)
    assert issubclass(EventTooLargeError, MultitaskError)
    assert issubclass(StreamDecodeError, MultitaskError)


def test_event_within_limit_passes() -> None:
    assert decode(b"data: " + b"x" * 50 + b"\n\n", max_event_bytes=100) == [Event("x" * 50)]
    body = b"data: " + b"x" * 50 + b"\n\n"
    assert decode(*bytewise(body), max_event_bytes=100) == [Event("x" * 50)]


def test_event_data_too_large() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLargeError, match="100 bytes"):
        decoder.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_event_data_too_large_over_several_lines() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    line = b"data: " + b"x" * 30 + b"\n"
    assert decoder.feed(line * 3) == []  # 93 bytes of data so far
    with pytest.raises(EventTooLargeError):
        decoder.feed(line)


def test_data_size_resets_per_event() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    event = b"data: " + b"x" * 60 + b"\n\n"
    for _ in range(5):
        assert decoder.feed(event) == [Event("x" * 60)]


def test_endless_line_without_newline_too_large() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(EventTooLargeError) as info:
        decoder.feed(b"data: " + b"x" * 2000)
    assert isinstance(info.value, StreamDecodeError)
    assert isinstance(info.value, MultitaskError)


def test_endless_line_fed_in_pieces_too_large() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    for _ in range(15):  # 960 bytes: not yet too large
        assert decoder.feed(b"y" * 64) == []
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"y" * 64)  # 1024: raised as soon as the line passed the limit


def test_endless_comment_line_too_large() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b": " + b"z" * 500)


@pytest.mark.parametrize("how", ["feed", "frames"])
@pytest.mark.parametrize(
    "before",
    [b"data: one\n\ndata: two\n\n", b"data: one\n\nevent: e\ndata: two\n\n", b"data: one\r\n\r\n"],
    ids=["common", "named", "crlf"],
)
def test_events_completed_before_an_oversized_event_come_first(how: str, before: bytes) -> None:
    """An event over the cap raised at once, losing the events completed before it by the
    same feed: they come out, and the error is raised by the next call (and `end()`)."""
    for after in (b"data: " + b"x" * 200 + b"\n\n", b"data: " + b"x" * 200, b"x" * 200):
        for warm in (b"", b"data: 0\n\n", b"data: pending\n"):
            decoder = SSEDecoder(max_event_bytes=100)
            read = decoder.feed if how == "feed" else decoder.frames
            first = read(warm)
            got = read(before + after)
            datas = [e.data if isinstance(e, ServerSentEvent) else e[1] for e in first + got]
            datas = [d.decode() if isinstance(d, bytes) else d for d in datas]
            expected = ["one", "two"] if b"two" in before else ["one"]
            # (a pending `data: pending` line joins the first event)
            assert [d.rsplit("\n", 1)[-1] for d in datas][-len(expected) :] == expected
            with pytest.raises(EventTooLargeError):
                read(b"data: later\n\n")
            with pytest.raises(EventTooLargeError):
                decoder.end()


def test_an_oversized_event_alone_is_raised_at_once_and_stays_raised() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"data: " + b"x" * 200)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"\n\ndata: fine\n\n")


def test_ndjson_lines_before_an_oversized_line_come_first() -> None:
    decoder = NDJSONDecoder(max_event_bytes=20)
    assert [e.data for e in decoder.feed(b'{"a":1}\n{"b":2}\n' + b"x" * 50)] == [
        '{"a":1}',
        '{"b":2}',
    ]
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"\n")
    with pytest.raises(EventTooLargeError):
        decoder.end()
    decoder = NDJSONDecoder(max_event_bytes=20)
    assert [e.data for e in decoder.feed(b'{"a":1}\n' + b"y" * 50 + b'\n{"c":3}\n')] == ['{"a":1}']
    with pytest.raises(EventTooLargeError):
        decoder.end()


def test_default_limit_allows_large_event() -> None:
    big = b"x" * (1024 * 1024)
    assert decode(b"data: " + big + b"\n\n") == [Event(big.decode())]


# -- real captures ---------------------------------------------------------------------------


def _captures(wire: Path) -> list[Path]:
    files = sorted(wire.glob("*/*.sse"))
    assert files, f"no captures under {wire}"
    return files


def test_wire_captures_bytewise_equals_whole(wire: Path) -> None:
    for path in _captures(wire):
        data = path.read_bytes()
        whole = decode(data)
        assert whole, path
        assert decode(*bytewise(data)) == whole, path
        for size in (2, 3, 7, 64, 1000):
            chunks = [data[i : i + size] for i in range(0, len(data), size)]
            assert decode(*chunks) == whole, (path, size)


def test_wire_captures_other_line_endings(wire: Path) -> None:
    for path in _captures(wire):
        data = path.read_bytes()
        whole = decode(data)
        assert b"\r" not in data
        for eol in (b"\r\n", b"\r"):
            converted = data.replace(b"\n", eol)
            assert decode(converted) == whole, (path, eol)
            assert decode(*bytewise(converted)) == whole, (path, eol)


def test_wire_captures_events_hold_json(wire: Path) -> None:
    for path in _captures(wire):
        data = path.read_bytes()
        events = decode(data)
        # One event per blank-line-terminated block holding data; a last block without its
        # blank line (some captures end so) is discarded, as the spec says.
        blocks = [b for b in data.split(b"\n\n")[:-1] if b"data:" in b]
        assert len(events) == len(blocks), path
        for event in events:
            if event.data != "[DONE]":
                json.loads(event.data)
            if path.parent.name == "anthropic":
                assert event.event == json.loads(event.data)["type"], path
            else:
                assert event.event == "message", path


def test_wire_captures_with_bom_and_keepalives(wire: Path) -> None:
    for path in _captures(wire):
        data = path.read_bytes()
        whole = decode(data)
        decoder = SSEDecoder()
        noisy = b"\xef\xbb\xbf: hello\n\n" + data.replace(b"\n\n", b"\n\n: keep-alive\n\n")
        events = [e for chunk in bytewise(noisy) for e in decoder.feed(chunk)]
        assert events == whole, path
        assert decoder.comments == 1 + data.count(b"\n\n"), path


# -- property: any events, any line endings, any split ---------------------------------------

_line_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=20,
)
_event_name = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
    min_size=1,
    max_size=10,
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id = ""
    retry: int | None = None
    if draw(st.booleans()):
        lines.append(": " + draw(_line_text))
        lines.append("")
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.none() | _event_name)
        data = draw(st.lists(_line_text, min_size=1, max_size=4))
        if name is not None:
            lines.append("event: " + name)
        if draw(st.booleans()):
            new_id = draw(_line_text)
            if "\0" not in new_id:
                last_id = new_id
            lines.append("id: " + new_id)
        if draw(st.booleans()):
            retry = draw(st.integers(0, 10**6))
            lines.append(f"retry: {retry}")
        for piece in data:
            lines.append("data: " + piece)
            if draw(st.booleans()):
                lines.append(":" + draw(_line_text))
        lines.append("")
        expected.append(ServerSentEvent("\n".join(data), name or "message", last_id, retry))
        if draw(st.booleans()):  # an event with no data: not dispatched
            lines.append("event: nothing")
            lines.append("")
    out: list[bytes] = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    previous = b""
    for line in lines:
        choices = [b"\n", b"\r", b"\r\n"]
        if previous == b"\r" and not line:
            choices.remove(b"\n")  # CR + an empty LF line would read as one CRLF
        eol = draw(st.sampled_from(choices))
        out.append(line.encode() + eol)
        previous = eol
    return b"".join(out), expected


@settings(max_examples=300, deadline=None)
@given(stream=_streams(), data=st.data())
def test_property_random_streams_random_splits(
    stream: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    body, expected = stream
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    chunks = split_at(body, cuts)
    assert decode(*chunks) == expected
    assert decode(body) == expected
    # Byte by byte, with an empty feed after every byte (between a CR and its LF, too).
    assert decode(*(c for byte in bytewise(body) for c in (byte, b""))) == expected
