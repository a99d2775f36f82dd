"""A sans-IO parser that finds the `tasks` list in a streamed JSON answer and emits its items.

The model's answer arrives as text fragments. The parser finds where the JSON starts (skipping
prose and a markdown fence), feeds it to ijson's C event parser, builds the list's items from
the events, and returns each raw item the moment its closing brace has been fed. It does no
validation; that is `_validation`'s job.

It builds the items itself rather than with ijson's `items_coro`: that one keeps the full
prefix path of every open container (`tasks.item.item...`), so memory grew with the square of
the nesting depth (a gigabyte for 20,000 `[`); here what is held is the open containers, and
nesting deeper than `max_depth` is a `MalformedOutputError`.
"""

from __future__ import annotations

from typing import Any

import ijson  # type: ignore[import-untyped]
from ijson.utils import sendable_list  # type: ignore[import-untyped]
from pydantic_core import to_json

from ._exceptions import (
    IncompleteOutputError,
    ItemTooLargeError,
    MalformedOutputError,
    MultitaskError,
)
from ._jsontext import FF_VT_NOTE, has_ff_vt, mend_surrogates, strict_whitespace
from ._preamble import Preamble

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEM_BYTES",
    "TaskParser",
]

#: Largest single item accepted by default (bytes of JSON text).
DEFAULT_MAX_ITEM_BYTES = 1024 * 1024
#: Largest whole answer accepted by default (bytes of JSON text).
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Deepest nesting accepted by default: containers open at once, the answer's object included.
DEFAULT_MAX_DEPTH = 512
#: The most text handed to the C parser at once: its events for one send are held in a list,
#: so a megabyte of `[` in one piece is read (and refused) a slice at a time.
SEND_SLICE = 64 * 1024

_TRAILING_GARBAGE = "trailing garbage"
#: ijson's event names.
_START_MAP, _START_ARRAY, _END_MAP, _END_ARRAY, _MAP_KEY = (
    "start_map",
    "start_array",
    "end_map",
    "end_array",
    "map_key",
)

# Parser states.
_PREAMBLE, _JSON, _DONE = 0, 1, 2


class TaskParser:
    """Push parser for `{"tasks": [item, ...]}` (other keys allowed) or a bare `[item, ...]`.

    `feed(text)` returns the raw items (dicts, lists, strings, numbers) completed by that
    fragment; malformed JSON raises `MalformedOutputError`. `close()` says the input ended
    and returns the last items; `error` then says whether the answer stopped inside the list
    (`IncompleteOutputError`: the items returned so far stand) or was not what it should be.
    With `whole=True` the answer is a single item (one tool call's arguments).

    Fragments are buffered and handed to the C parser only when they could finish something
    (a closing bracket outside a string, or the end of a string for string items), so a long
    string value streamed in tiny pieces is scanned once, not once per piece.

    JSON is read as RFC 8259 has it where yajl differs: an unpaired surrogate escape is `?`
    (never paired with the escape after it), and a form feed or vertical tab is an error.
    Nesting deeper than `max_depth` containers is a `MalformedOutputError`.
    """

    __slots__ = (
        "_buffered",
        "_carry",
        "_coro",
        "_depth",
        "_error",
        "_escape",
        "_fed",
        "_in_items",
        "_in_string",
        "_item_limit",
        "_item_start",
        "_items_depth",
        "_key",
        "_max_answer_bytes",
        "_max_depth",
        "_max_item_bytes",
        "_more",
        "_pending",
        "_preamble",
        "_raw",
        "_root_key",
        "_saw_tasks",
        "_stack",
        "_state",
        "_string_items",
        "_whole",
        "bare_array",
        "error",
        "items_emitted",
    )

    def __init__(
        self,
        *,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        scalar_items: bool = True,
        whole: bool = False,
    ) -> None:
        # `whole`: the answer is one item (a tool call's arguments in parallel mode), not a list.
        self._whole = whole
        self._max_item_bytes = max_item_bytes
        self._max_answer_bytes = max_answer_bytes
        self._max_depth = max_depth
        # When items may be strings or numbers, a closing quote or a comma can finish one too.
        self._string_items = scalar_items
        self._state = _PREAMBLE
        # Per-stream state is made when first needed and dropped when done with: a fan-out
        # keeps hundreds of parsers alive, and the collector walks every container they hold.
        self._preamble: Preamble | None = None  # from the first text until the JSON starts
        self._coro: Any = None
        self._raw: list[tuple[str, Any]] | None = None  # ijson's events, made when JSON starts
        # The item being built: its open containers (root first), and the key of the value
        # that comes next in the innermost one (when it is an object).
        self._stack: list[Any] | None = None
        self._key: Any = None
        # The structure around the items: containers open outside them, the depth the items
        # sit at (inside `tasks`, the bare array, or the top for `whole`), whether the parser
        # is in the list, the root object's last key, and whether it had a `tasks` list.
        self._depth = 0
        self._items_depth = 0
        self._item_limit = 0  # how deep an item may nest, within `max_depth`
        self._in_items = False
        self._root_key: Any = None
        self._saw_tasks = False
        self._carry = ""  # handed to the C parser but held back: a cut escape, a lone high
        # Text not yet handed to the C parser: the first piece, then (from the second) all.
        self._pending = ""
        self._more: list[str] | None = None
        self._buffered = 0
        self._fed = 0  # characters handed to the C parser
        self._item_start = 0  # value of _fed when the last item was emitted
        self._in_string = False
        self._escape = False
        self._error: MultitaskError | None = None  # raised on the next call, after items
        #: After `close()`: None if the answer was whole, else what was wrong with it.
        self.error: MultitaskError | None = None
        #: True when the answer is a bare top-level array rather than an object.
        self.bare_array = False
        #: How many items have been returned so far.
        self.items_emitted = 0

    @property
    def done(self) -> bool:
        """True once the parser takes no more text: after `close()`, an error, or text found
        after the closed JSON value (which is ignored)."""
        return self._state == _DONE

    def feed(self, text: str) -> list[Any]:
        """Take the next fragment of the answer; return the items it completed.

        Raises `MalformedOutputError` on bad JSON, but only after the items completed before
        the bad spot were returned (by this call, or the one before).
        """
        if self._state != _JSON:
            if self._error is not None:
                raise self._error
            if self._state == _DONE or not text:
                return []
            return self._feed_preamble(text)
        if not text:
            return []  # kept out of the buffer: sending b"" would tell ijson the input ended
        more = self._more
        if more is not None:
            more.append(text)
        elif self._pending:
            self._more = [self._pending, text]
        else:
            self._pending = text
        buffered = self._buffered = self._buffered + len(text)
        # Could this fragment complete an item? Cheap string-state tracking, written out here
        # (this runs once per event) rather than in a method of its own.
        if self._escape or "\\" in text:
            finish = self._scan_escaped(text)
        else:
            quotes = text.count('"')
            in_string = self._in_string
            if quotes & 1:
                self._in_string = not in_string
            if in_string and not quotes:
                finish = False  # entirely inside one string: nothing can finish
            elif self._string_items and (quotes or "," in text):
                finish = True
            else:
                finish = "}" in text or "]" in text
        if finish:
            return self._flush()
        if self._fed + buffered - self._item_start > self._max_item_bytes:
            self._too_large()
        return []

    def close(self) -> list[Any]:
        """Say the answer ended; return the items that completes (usually none).

        Never raises: afterwards `error` is None when the answer was whole, or the error
        that describes it (`IncompleteOutputError` when the list never closed, so the items
        returned so far are all there is; `MalformedOutputError` when it was not JSON).
        """
        items: list[Any] = []
        try:
            if self._error is not None:
                raise self._error
            if self._state == _PREAMBLE:
                text = (self._preamble or Preamble(self._max_item_bytes)).end()
                self._start_json(text[0])
                self._pending = text  # nothing is pending before the JSON starts
            if self._state == _JSON:
                items = self._flush()
                if self._state == _JSON and self._carry:
                    items += self._out(self._send("", final=True))  # a cut escape, at the end
                if self._error is not None:
                    raise self._error
            if self._state == _JSON:
                self._state = _DONE
                try:
                    self._coro.close()
                except ijson.common.JSONError as exc:
                    if _TRAILING_GARBAGE not in str(exc):
                        where = "the item" if self._whole else "the list"
                        raise IncompleteOutputError(
                            f"the answer ended inside {where}, after "
                            f"{self.items_emitted} complete item(s)",
                            items_delivered=self.items_emitted,
                        ) from None
            if not (self.bare_array or self._whole or self.items_emitted or self._saw_tasks):
                raise MalformedOutputError("the answer's JSON object has no 'tasks' list")
        except MultitaskError as exc:
            self._state = _DONE
            self.error = exc
        return items

    @property
    def truncated(self) -> bool:
        """After `close()`: True when the answer stopped before its list was closed."""
        return isinstance(self.error, IncompleteOutputError)

    # -- finding the JSON ----------------------------------------------------------------------

    def _feed_preamble(self, text: str) -> list[Any]:
        preamble = self._preamble
        if preamble is None:
            preamble = self._preamble = Preamble(self._max_item_bytes)
        rest = preamble.find(text)
        if not rest:
            return []
        self._start_json(rest[0])
        return self.feed(rest)

    def _start_json(self, opener: str) -> None:
        self._preamble = None
        self.bare_array = opener == "[" and not self._whole
        self._items_depth = 0 if self._whole else 1 if self.bare_array else 2
        self._item_limit = self._max_depth - self._items_depth
        self._in_items = self._whole
        self._stack = []
        self._raw = sendable_list()
        self._coro = ijson.basic_parse_coro(self._raw, use_float=True)
        self._state = _JSON

    # -- feeding the C parser ------------------------------------------------------------------

    def _scan_escaped(self, text: str) -> bool:
        in_string = self._in_string
        escape = self._escape
        closer = False
        for ch in text:
            if escape:
                escape = False
            elif in_string:
                if ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
                    closer = closer or self._string_items
            elif ch == '"':
                in_string = True
            elif ch in "}]" or (ch == "," and self._string_items):
                closer = True
        self._in_string = in_string
        self._escape = escape
        return closer

    def _flush(self) -> list[Any]:
        more = self._more
        if more is not None:
            text = "".join(more)
            self._more = None
        elif self._pending:
            text = self._pending
        else:
            return []
        self._pending = ""
        self._buffered = 0
        return self._out(self._send(text))

    def _out(self, items: list[Any]) -> list[Any]:
        """The items a send completed, counted (an error after them is in `_error`)."""
        if not items:
            if self._fed - self._item_start > self._max_item_bytes:
                self._too_large()
            return items
        if self._fed - self._item_start > self._max_item_bytes:
            items = self._within_limit(items)  # they came in one piece: one may be too large
        self.items_emitted += len(items)
        self._item_start = self._fed
        return items

    def _within_limit(self, items: list[Any]) -> list[Any]:
        """The items before the first one whose JSON is larger than the limit, if any is."""
        for k, item in enumerate(items):
            if item_size(item, self._fed - self._item_start) > self._max_item_bytes:
                self._state = _DONE
                error = ItemTooLargeError(
                    f"item {self.items_emitted + k} is larger than {self._max_item_bytes} "
                    "characters"
                )
                if not k:
                    raise error
                self._error = error  # hand out the items before it first
                return items[:k]
        return items

    def _send(self, text: str, *, final: bool = False) -> list[Any]:
        """Hand `text` to the C parser; return the items it completed. An error found after
        some of them is kept in `_error` (raised now when there are none)."""
        items: list[Any] = []
        if self._state != _JSON:
            return items
        offset = self._fed
        self._fed += len(text)
        if self._fed > self._max_answer_bytes:
            self._state = _DONE
            raise ItemTooLargeError(
                f"the answer grew past {self._max_answer_bytes} characters "
                f"after {self.items_emitted} item(s)"
            )
        if self._carry:
            text = self._carry + text
            self._carry = ""
        if "\\" in text:
            mended, cut = mend_surrogates(text, final)
            self._carry = text[cut:]
            text = mended
        if not text:
            return items  # (all held back; an empty send would tell ijson the input ended)
        note = ""
        if has_ff_vt(text):
            text = strict_whitespace(text)
            note = FF_VT_NOTE
        coro = self._coro
        try:
            if len(text) <= SEND_SLICE:
                coro.send(text.encode("utf-8", "replace"))  # a lone surrogate becomes ?
                self._build(items)
            else:
                for start in range(0, len(text), SEND_SLICE):
                    coro.send(text[start : start + SEND_SLICE].encode("utf-8", "replace"))
                    self._build(items)
        except (ijson.common.JSONError, UnicodeDecodeError) as exc:
            message = str(exc)
            error: MultitaskError | None = None
            try:
                self._build(items)  # the events before the bad spot still count
            except MalformedOutputError as deep:
                error = deep
            if error is None and _TRAILING_GARBAGE not in message:  # else prose follows
                error = MalformedOutputError(
                    f"malformed JSON in the answer (within characters {offset}-{self._fed} of "
                    f"the JSON text, after {self.items_emitted + len(items)} item(s)): "
                    f"{_yajl_message(message)}{note}",
                    offset=offset,
                )
            self._state = _DONE
            if error is not None:
                self._defer(error, items)
        except MalformedOutputError as exc:  # nested too deep
            self._defer(exc, items)
        return items

    def _defer(self, error: MultitaskError, items: list[Any]) -> None:
        """Raise `error` now if no item came before it, else keep it for the next call."""
        if not items:
            raise error from None  # (yajl's own exception says nothing more)
        self._error = error

    # -- building items from the C parser's events ---------------------------------------------

    def _build(self, items: list[Any]) -> None:
        """Turn the C parser's events into items, appended to `items` as they complete."""
        raw = self._raw
        if not raw:
            return
        stack = self._stack
        assert raw is not None
        assert stack is not None
        key = self._key
        try:
            for event, value in raw:
                if stack:
                    if event == _MAP_KEY:
                        key = value
                        continue
                    top = stack[-1]
                    if event in (_START_MAP, _START_ARRAY):
                        child: Any = {} if event == _START_MAP else []
                        if type(top) is dict:
                            top[key] = child
                        else:
                            top.append(child)
                        stack.append(child)
                        if len(stack) > self._item_limit:
                            self._too_deep(len(items))
                    elif event in (_END_MAP, _END_ARRAY):
                        stack.pop()
                        if not stack:
                            items.append(top)
                    elif type(top) is dict:
                        top[key] = value
                    else:
                        top.append(value)
                elif self._in_items and self._depth == self._items_depth:
                    if event in (_START_MAP, _START_ARRAY):
                        stack.append({} if event == _START_MAP else [])
                        if self._item_limit < 1:
                            self._too_deep(len(items))
                    elif event == _END_ARRAY:  # the list closed
                        self._in_items = False
                        self._depth -= 1
                    elif event != _MAP_KEY:
                        items.append(value)  # a scalar item
                else:
                    self._outer(event, value, len(items))
        finally:
            self._key = key
            raw.clear()

    def _outer(self, event: str, value: Any, completed: int) -> None:
        """An event outside the items: the structure around the list (and other members)."""
        depth = self._depth
        if event == _MAP_KEY:
            if depth == 1:
                self._root_key = value
        elif event in (_START_ARRAY, _START_MAP):
            if event == _START_ARRAY and (
                (depth == 0 and self.bare_array)
                or (depth == 1 and not self.bare_array and self._root_key == "tasks")
            ):
                self._in_items = True
                self._saw_tasks = True
            self._depth = depth + 1
            if depth + 1 > self._max_depth:
                self._too_deep(completed)
        elif event in (_END_MAP, _END_ARRAY):
            self._depth = depth - 1

    def _too_deep(self, completed: int) -> None:
        self._state = _DONE
        raise MalformedOutputError(
            f"the answer's JSON is nested deeper than {self._max_depth} levels "
            f"(after {self.items_emitted + completed} item(s)); raise max_depth to read it"
        )

    def _too_large(self) -> None:
        self._state = _DONE
        raise ItemTooLargeError(
            f"item {self.items_emitted} is larger than {self._max_item_bytes} characters"
        )


def item_size(item: Any, text_size: int) -> int:
    """The size of an item's JSON, or `text_size` (the text it came in) when it is nested too
    deep to serialise (256 levels)."""
    try:
        return len(to_json(item))
    except ValueError:
        return text_size


def _yajl_message(message: str) -> str:
    """yajl's error, with its caret picture folded onto one line."""
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())
