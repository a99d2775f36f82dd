"""A sans-IO parser that finds the `tasks` list in a streamed JSON answer and emits its items.

The model's answer arrives as text fragments. The parser finds where the JSON starts (skipping
prose and a markdown fence), feeds it to an ijson push parser scoped to the list's items, and
returns each raw item the moment its closing brace has been fed. It does no validation; that is
`_validation`'s job.
"""

from __future__ import annotations

import json
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
from ._preamble import Preamble

__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "DEFAULT_MAX_ITEM_BYTES", "TaskParser"]

#: Largest single item accepted by default (bytes of JSON text).
DEFAULT_MAX_ITEM_BYTES = 1024 * 1024
#: Largest whole answer accepted by default (bytes of JSON text).
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024

_TRAILING_GARBAGE = "trailing garbage"
#: `TaskParser._items` until the JSON starts (never appended to: ijson gets a list of its own).
_NO_ITEMS: list[Any] = []

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
    """

    __slots__ = (
        "_buffered",
        "_coro",
        "_error",
        "_escape",
        "_fed",
        "_head",
        "_in_string",
        "_item_start",
        "_items",
        "_max_answer_bytes",
        "_max_item_bytes",
        "_more",
        "_pending",
        "_preamble",
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
        scalar_items: bool = True,
        whole: bool = False,
    ) -> None:
        # `whole`: the answer is one item (a tool call's arguments in parallel mode), not a list.
        self._whole = whole
        self._max_item_bytes = max_item_bytes
        self._max_answer_bytes = max_answer_bytes
        # When items may be strings or numbers, a closing quote or a comma can finish one too.
        self._string_items = scalar_items
        self._state = _PREAMBLE
        # Per-stream state is made when first needed and dropped when done with: a fan-out
        # keeps hundreds of parsers alive, and the collector walks every container they hold.
        self._preamble: Preamble | None = None  # from the first text until the JSON starts
        self._coro: Any = None
        self._items: list[Any] = _NO_ITEMS  # ijson's target, made when the JSON starts
        # Text not yet handed to the C parser: the first piece, then (from the second) all.
        self._pending = ""
        self._more: list[str] | None = None
        self._buffered = 0
        self._fed = 0  # characters handed to the C parser
        self._item_start = 0  # value of _fed when the last item was emitted
        self._in_string = False
        self._escape = False
        self._head: list[str] | None = None  # the JSON text before the first item
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
        head = self._head
        if head is not None:
            # Until the first item, keep the text: at the end it tells whether the object has
            # a top-level `tasks` list at all (an empty answer and a wrong one look alike).
            head.append(text)
            if self._fed + buffered > self._max_item_bytes:
                self._head = None
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
            if not (self.bare_array or self._whole or self.items_emitted) and not _has_tasks(
                self._head
            ):
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
        if not (self.bare_array or self._whole):
            self._head = []
        prefix = "" if self._whole else "item" if self.bare_array else "tasks.item"
        self._items = sendable_list()
        self._coro = ijson.items_coro(self._items, prefix, use_float=True)
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
        try:
            self._send(text)
        except MalformedOutputError as exc:
            if not self._items:
                raise
            self._error = exc  # hand out the items first; raise on the next call
        items = self._items
        if not items:
            if self._fed - self._item_start > self._max_item_bytes:
                self._too_large()
            return []
        out = list(items)
        items.clear()
        self._head = None
        if self._fed - self._item_start > self._max_item_bytes:
            out = self._within_limit(out)  # they came in one piece: one may be too large
        self.items_emitted += len(out)
        self._item_start = self._fed
        return out

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

    def _send(self, text: str) -> None:
        if self._state != _JSON:
            return
        offset = self._fed
        self._fed += len(text)
        if self._fed > self._max_answer_bytes:
            self._state = _DONE
            raise ItemTooLargeError(
                f"the answer grew past {self._max_answer_bytes} characters "
                f"after {self.items_emitted} item(s)"
            )
        try:
            self._coro.send(text.encode("utf-8", "replace"))  # a lone surrogate becomes ?
        except (ijson.common.JSONError, UnicodeDecodeError) as exc:
            message = str(exc)
            if _TRAILING_GARBAGE in message:
                self._state = _DONE  # the JSON value closed; what follows is prose
                return
            self._state = _DONE
            raise MalformedOutputError(
                f"malformed JSON in the answer (within characters {offset}-{self._fed} of the "
                f"JSON text, after {self.items_emitted + len(self._items)} item(s)): "
                f"{_yajl_message(message)}",
                offset=offset,
            ) from None

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


def _has_tasks(head: list[str] | None) -> bool:
    """Whether the JSON text (maybe followed by prose) is an object with a `tasks` list.

    With no text kept (it grew past the item limit), give it the benefit of the doubt.
    """
    if head is None:
        return True
    try:
        value, _ = json.JSONDecoder().raw_decode("".join(head).lstrip())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        return True  # not a whole value: the truncation or syntax error is reported instead
    return isinstance(value, dict) and isinstance(value.get("tasks"), list)
