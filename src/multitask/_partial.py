"""A sans-IO parser that shows each item of the `tasks` list while the model is still writing it.

`TaskParser` hands out an item once its closing brace is in; a UI also wants to show the item
growing. `PartialTaskParser` feeds the answer to ijson's C event parser (`basic_parse_coro`),
builds each item from the events as its keys and scalar values close, and can hand out a
snapshot of the item in progress at any time. Nothing is re-parsed: every character goes
through the C parser once, and the string being written is tracked by a cheap scan of the
fragments (the C parser only reports a string once it is complete).

A snapshot never holds a value cut mid-token: numbers, booleans and null appear only once
complete. Strings may be shown growing (`partial_strings=True`): the text so far, with any
escape sequence cut at the end of a fragment held back until it is whole, and decoded as the
C parser will decode it (an unpaired surrogate escape is `?`), so each is a prefix of the
next. A snapshot is a deep copy, so its cost grows with the item: automatic updates
(`update()`) stop for an item past `max_snapshot_values` values, until its `ItemDone`.

What it shares with `TaskParser` (limits, finding the JSON, the list's structure, closing, the
wording of errors) is in `_answerparser`.
"""

from __future__ import annotations

import json.decoder
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

import ijson  # type: ignore[import-untyped]

from ._answerparser import (
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEM_BYTES,
    DONE,
    END_ARRAY,
    END_MAP,
    JSON,
    MAP_KEY,
    PREAMBLE,
    SEND_SLICE,
    START_ARRAY,
    START_MAP,
    TRAILING_GARBAGE,
    AnswerParser,
    item_size,
)
from ._exceptions import MultitaskError
from ._jsontext import FF_VT_NOTE, has_ff_vt, mend_surrogates, strict_whitespace

__all__ = [
    "DEFAULT_MAX_SNAPSHOT_VALUES",
    "ItemDone",
    "ItemStarted",
    "ItemUpdated",
    "PartialEvent",
    "PartialTaskParser",
]

#: The most values (scalars and containers) an item in progress may hold and still be shown
#: by `update()`: a snapshot copies them all, at about 0.1 µs each (1 ms at this size).
DEFAULT_MAX_SNAPSHOT_VALUES = 10_000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemStarted:
    """Item `index` of the answer's list has begun (its first token came in)."""

    index: int


@dataclass(frozen=True, slots=True)
class ItemUpdated:
    """A snapshot of item `index` so far: its completed fields, and a string being written.

    `partial` is a fresh copy (a dict for object items, a list or a string for other items),
    yours to keep or change. It never holds a number, boolean or null cut mid-token.
    """

    index: int
    partial: Any


@dataclass(frozen=True, slots=True)
class ItemDone(Generic[T]):
    """Item `index` is complete: the validated item (from the parser alone: the raw value)."""

    index: int
    item: T


#: What `PartialTaskParser` returns: an item began, grew, or is complete (raw, unvalidated).
PartialEvent = Union[ItemStarted, ItemUpdated, ItemDone[Any]]  # noqa: UP007

# What the string being written is: outside any item, a key, or a value (or an item itself).
_OTHER, _KEY, _VALUE = 0, 1, 2

# The C string decoder behind `json.loads` (not in the type stubs): (text, end, strict).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_QUOTE_OR_BACKSLASH = re.compile(r'["\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")  # encoded with "replace", each becomes ?
_STARTS = frozenset({START_MAP, START_ARRAY})
_ENDS = frozenset({END_MAP, END_ARRAY})


class PartialTaskParser(AnswerParser[PartialEvent]):
    """Push parser for `{"tasks": [item, ...]}` or a bare `[item, ...]` that shows items growing.

    `feed(text)` returns the events that fragment caused: `ItemStarted` when an item begins,
    `ItemDone` (with the raw item) when it is complete, and, with `update=True` (the default),
    at most one `ItemUpdated` at the end for the item still in progress, if it changed.
    Callers that throttle updates pass `update=False` and call `update()` when they want one.

    Errors follow `TaskParser`: malformed JSON raises `MalformedOutputError`, but only after
    the events before the bad spot were returned; `close()` never raises and sets `error`
    (`IncompleteOutputError` when the list never closed). An item larger than
    `max_item_bytes` raises `ItemTooLargeError` the same way, whether it came in many
    fragments or in one. Nesting deeper than `max_depth` is a `MalformedOutputError`. With
    `whole=True` the answer is a single item (one tool call's arguments), numbered
    `first_index`.
    """

    __slots__ = (
        "_changed",
        "_held",
        "_held_len",
        "_index",
        "_keys",
        "_max_values",
        "_measure_from",
        "_partial_strings",
        "_quiet",
        "_slots",
        "_stack",
        "_started",
        "_str_kind",
        "_str_ok",
        "_str_parts",
        "_str_tail",
        "_values",
    )

    def __init__(
        self,
        *,
        partial_strings: bool = True,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_snapshot_values: int = DEFAULT_MAX_SNAPSHOT_VALUES,
        whole: bool = False,
        first_index: int = 0,
    ) -> None:
        super().__init__(
            max_item_bytes=max_item_bytes,
            max_answer_bytes=max_answer_bytes,
            max_depth=max_depth,
            whole=whole,
        )
        self._partial_strings = partial_strings
        self._max_values = max_snapshot_values
        # Text held back from the C parser: a string still being written.
        self._held: list[str] = []
        self._held_len = 0
        # While the text being parsed could hold an item over the limit (more than the limit
        # came in since the last item was completed): that `_item_start`, else -1.
        self._measure_from = -1
        # The item in progress: its open containers (root first), the pending key of each
        # (None: a key comes next), and where each sits in its parent.
        self._stack: list[Any] = []
        self._keys: list[str | None] = []
        self._slots: list[Any] = []
        self._index = first_index
        self._started = False  # ItemStarted already returned for a string item
        self._changed = False  # the item in progress changed since the last snapshot
        self._values = 0  # values in the item in progress (what a snapshot copies)
        # The string being written: what it is, and its decoded text so far.
        self._str_kind = _OTHER
        self._str_parts: list[str] = []
        self._str_tail = ""  # an escape sequence cut by the end of a fragment
        self._str_ok = True
        self._quiet = False  # the string about to complete is already shown in full

    @property
    def in_progress(self) -> int | None:
        """The index of the item being written, or None between items."""
        if self._stack or self._started:
            return self._index
        return None

    def feed(self, text: str, *, update: bool = True) -> list[PartialEvent]:
        """Take the next fragment of the answer; return the events it caused."""
        if self._error is not None:
            raise self._error
        if self._state == DONE or not text:
            return []
        events: list[PartialEvent] = []
        try:
            if self._state == PREAMBLE:
                text = self._find_json(text)
            if text:
                self._feed_json(text, events)
        except MultitaskError as exc:
            self._state = DONE
            if not events:
                raise
            self._error = exc  # hand out the events first; raise on the next call
            return events
        if update:
            updated = self.update()
            if updated is not None:
                events.append(updated)
        return events

    def update(self) -> ItemUpdated | None:
        """A snapshot of the item in progress, if it changed since the last one (and holds at
        most `max_snapshot_values` values: copying a larger one would stall the caller)."""
        if not self._changed or self._state != JSON or self._values > self._max_values:
            return None
        self._changed = False
        return ItemUpdated(self._index, self.snapshot())

    def snapshot(self) -> Any:
        """A copy of the item in progress as it stands (None between items), whatever its
        size: a deep copy, which takes time in proportion to the values it holds."""
        growing: str | None = None
        if self._str_kind == _VALUE and self._partial_strings and self._str_ok:
            parts = self._str_parts
            if len(parts) > 1:
                parts[:] = ["".join(parts)]  # joined once; later joins start from it
            growing = parts[0] if parts else ""
        if not self._stack:
            return growing if self._started else None
        root = _copy(self._stack[0])
        if growing is not None:
            node = root
            for slot in self._slots[1:]:
                node = node[slot]
            if type(node) is dict:
                node[self._keys[-1]] = growing
            else:
                node.append(growing)
        return root

    # -- closing (`AnswerParser.close`) ---------------------------------------------------------

    def _end_text(self, text: str, out: list[PartialEvent]) -> None:
        self._feed_json(text, out)

    def _end_held(self, out: list[PartialEvent]) -> None:
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self._held_len = 0
            self._send(text, out)

    def _end_events(self, out: list[PartialEvent]) -> None:
        self._handle(out)

    # -- feeding the C parser ------------------------------------------------------------------

    def _feed_json(self, text: str, events: list[PartialEvent]) -> None:
        """Hand the C parser everything up to the string still open at the end, if any."""
        # A string value already shown in full that closes right at the start of `text`:
        # its completion changes nothing a snapshot shows.
        quiet = (
            self._str_kind == _VALUE
            and self._partial_strings
            and self._str_ok
            and not self._str_tail
            and not self._escape
            and text[0] == '"'
        )
        cut = self._scan(text)
        if cut < 0:  # the string that was open is still being written
            self._held.append(text)
            self._held_len += len(text)
            if self._str_kind == _VALUE:
                self._grow(text)
            self._check_size()
            return
        if self._held:
            self._held.append(text[:cut])
            chunk = "".join(self._held)
            self._held.clear()
            self._held_len = 0
        else:
            chunk = text[:cut]
        self._quiet = quiet
        self._str_kind = _OTHER
        if chunk:
            self._send(chunk, events)
        self._quiet = False
        if cut < len(text) and self._state == JSON:
            rest = text[cut:]  # from the opening quote of a string not yet closed
            self._held.append(rest)
            self._held_len = len(rest)
            self._open_string(events)
            if self._str_kind == _VALUE:
                self._grow(rest[1:])
        self._check_size()

    def _scan(self, text: str) -> int:
        """Track strings across `text`: where the string open at its end began (its quote).

        Returns `len(text)` when no string is open at the end, and -1 when the string open
        at the end was already open before `text`.
        """
        if not self._escape and "\\" not in text:
            quotes = text.count('"')
            if not quotes:
                return -1 if self._in_string else len(text)
            self._in_string = self._in_string ^ bool(quotes & 1)
            return text.rfind('"') if self._in_string else len(text)
        in_string = self._in_string
        escape = False
        opener = -1
        pos = 1 if self._escape else 0
        size = len(text)
        while True:
            if in_string:
                match = _QUOTE_OR_BACKSLASH.search(text, pos)
                if match is None:
                    break
                at = match.start()
                if text[at] == "\\":
                    if at + 1 >= size:
                        escape = True
                        break
                    pos = at + 2
                    continue
                in_string = False
                pos = at + 1
            else:
                at = text.find('"', pos)
                if at < 0:
                    break
                in_string = True
                opener = at
                pos = at + 1
        self._in_string = in_string
        self._escape = escape
        return opener if in_string else size

    def _send(self, text: str, events: list[PartialEvent]) -> None:
        offset = self._fed
        self._fed += len(text)
        # An item that opens and closes within `text` was never checked by `_check_size`:
        # when `text` could hold one over the limit, each item it completes is measured.
        too_much = self._fed - self._item_start > self._max_item_bytes
        self._measure_from = self._item_start if too_much else -1
        if self._fed > self._max_answer_bytes:
            self._answer_too_large()
        # Every string in `text` is whole (see `_feed_json`): no escape is cut.
        if "\\" in text:
            text = mend_surrogates(text)[0]
        note = ""
        if has_ff_vt(text):
            text = strict_whitespace(text)
            note = FF_VT_NOTE
        coro = self._coro
        try:
            for start in range(0, len(text), SEND_SLICE):
                coro.send(text[start : start + SEND_SLICE].encode("utf-8", "replace"))
                self._handle(events)
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            self._handle(events)  # the events before the bad spot still count
            self._state = DONE
            message = str(exc)
            if TRAILING_GARBAGE in message:
                return  # the JSON value closed; what follows is prose
            raise self._malformed(message, offset, 0, note) from None

    def _check_size(self) -> None:
        seen = self._fed + self._held_len
        if seen > self._max_answer_bytes:
            self._answer_too_large()
        if seen - self._item_start > self._max_item_bytes:
            self._too_large()

    # -- building items from the C parser's events ---------------------------------------------

    def _handle(self, events: list[PartialEvent]) -> None:
        raw = self._raw
        if not raw:
            return
        stack = self._stack
        for event, value in raw:
            if stack:
                if event == MAP_KEY:
                    self._keys[-1] = value
                elif event in _STARTS:
                    child: Any = {} if event == START_MAP else []
                    self._slots.append(self._attach(child))
                    stack.append(child)
                    self._keys.append(None)
                    self._changed = True
                    if len(stack) > self._item_limit:
                        self._too_deep()
                elif event in _ENDS:
                    root = stack[0]
                    stack.pop()
                    self._keys.pop()
                    self._slots.pop()
                    if not stack:
                        self._complete(root, events)
                else:
                    self._attach(value)
                    if self._quiet:
                        self._quiet = False
                    else:
                        self._changed = True
            else:
                self._outside(event, value, events)
        raw.clear()

    def _outside(self, event: str, value: Any, events: list[PartialEvent]) -> None:
        """An event outside any item: the start of one, or the structure around the list."""
        if self._in_items and self._depth == self._items_depth:
            if event in _STARTS:
                root: Any = {} if event == START_MAP else []
                self._stack.append(root)
                self._keys.append(None)
                self._slots.append(None)
                if not self._started:
                    events.append(ItemStarted(self._index))
                self._started = False
                self._changed = False
                self._values = 1
                if self._item_limit < 1:
                    self._too_deep()
                return
            if event == END_ARRAY:
                self._in_items = False
                self._depth -= 1
                return
            if event != MAP_KEY:  # a scalar item
                if not self._started:
                    events.append(ItemStarted(self._index))
                self._complete(value, events)
                return
        self._structure(event, value, 0)

    def _attach(self, value: Any) -> Any:
        """Put a value into the innermost open container; return where it went."""
        self._values += 1
        top = self._stack[-1]
        if type(top) is dict:
            key = self._keys[-1]
            top[key] = value
            self._keys[-1] = None
            return key
        top.append(value)
        return len(top) - 1

    def _complete(self, item: Any, events: list[PartialEvent]) -> None:
        if self._measure_from >= 0:
            self._within_limit(item)
        events.append(ItemDone(self._index, item))
        self._values = 0
        self._index += 1
        self.items_emitted += 1
        self._item_start = self._fed
        self._started = False
        self._changed = False
        if self._whole:
            self._in_items = False

    def _within_limit(self, item: Any) -> None:
        """Raise `ItemTooLargeError` if the item's JSON is larger than the limit (as
        `TaskParser._within_limit` does): it came in one piece with more text than the limit."""
        if item_size(item, self._fed - self._measure_from) > self._max_item_bytes:
            self._too_large()

    # -- the string being written --------------------------------------------------------------

    def _open_string(self, events: list[PartialEvent]) -> None:
        """A string opened and did not close: say what it is (the C parser is up to its quote)."""
        if self._stack:
            top = self._stack[-1]
            kind = _KEY if type(top) is dict and self._keys[-1] is None else _VALUE
        elif self._in_items and self._depth == self._items_depth:
            kind = _VALUE  # the item itself is a string
            events.append(ItemStarted(self._index))
            self._started = True
            self._changed = False
        else:
            kind = _OTHER
        self._str_kind = kind
        self._str_parts = []
        self._str_tail = ""
        self._str_ok = True

    def _grow(self, raw: str) -> None:
        """Add the next piece of the string's JSON text (no closing quote) to its decoded text."""
        if not self._partial_strings or not self._str_ok:
            return
        if self._str_tail:
            raw = self._str_tail + raw
            self._str_tail = ""
        if not raw.isascii() and _SURROGATE.search(raw):
            raw = _SURROGATE.sub("?", raw)  # as the C parser gets them: encoded with "replace"
        if "\\" in raw:
            # Escapes decoded as the C parser will decode them (`_send`); one cut at the end,
            # or a high surrogate there that may be paired, waits for the next piece.
            mended, cut = mend_surrogates(raw, final=False)
            self._str_tail = raw[cut:]
            raw = mended
            if raw:
                try:
                    raw = _scanstring(raw + '"', 0, False)[0]
                except ValueError:
                    self._str_ok = False  # a bad escape: the C parser will say so
                    return
        if raw:
            self._str_parts.append(raw)
            self._changed = True


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and immutable scalars), however deep.

    Iterative, not recursive: an item nested thousands deep must not exhaust Python's stack.
    Each container is created when its parent is copied, so keys and elements keep their order.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    root: Any = {} if kind is dict else []
    pending: list[tuple[Any, Any]] = [(value, root)]
    pop = pending.pop
    push = pending.append
    while pending:
        source, target = pop()
        if type(source) is dict:
            for key, child in source.items():
                kind = type(child)
                if kind is dict:
                    child_copy: Any = {}
                    push((child, child_copy))
                    target[key] = child_copy
                elif kind is list:
                    child_copy = []
                    push((child, child_copy))
                    target[key] = child_copy
                else:
                    target[key] = child
        else:
            append = target.append
            for child in source:
                kind = type(child)
                if kind is dict:
                    child_copy = {}
                    push((child, child_copy))
                    append(child_copy)
                elif kind is list:
                    child_copy = []
                    push((child, child_copy))
                    append(child_copy)
                else:
                    append(child)
    return root
