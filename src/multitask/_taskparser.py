"""A sans-IO parser that finds the `tasks` list in a streamed JSON answer and emits its items.

The model's answer arrives as text fragments. The parser finds where the JSON starts (skipping
prose and a markdown fence), feeds it to ijson's C event parser, builds the list's items from
the events, and returns each raw item the moment its closing brace has been fed. It does no
validation; that is `_validation`'s job.

It builds the items itself rather than with ijson's `items_coro`: that one keeps the full
prefix path of every open container (`tasks.item.item...`), so memory grew with the square of
the nesting depth (a gigabyte for 20,000 `[`); here what is held is the open containers, and
nesting deeper than `max_depth` is a `MalformedOutputError`. What it shares with
`PartialTaskParser` (limits, finding the JSON, the list's structure, closing, the wording of
errors) is in `_answerparser`.
"""

from __future__ import annotations

from typing import Any

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
    SEND_SLICE,
    START_ARRAY,
    START_MAP,
    TRAILING_GARBAGE,
    AnswerParser,
    item_size,
)
from ._exceptions import MalformedOutputError, MultitaskError
from ._jsontext import FF_VT_NOTE, has_ff_vt, mend_surrogates, strict_whitespace

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEM_BYTES",
    "TaskParser",
]


class TaskParser(AnswerParser[Any]):
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
        "_key",
        "_more",
        "_pending",
        "_stack",
        "_string_items",
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
        super().__init__(
            max_item_bytes=max_item_bytes,
            max_answer_bytes=max_answer_bytes,
            max_depth=max_depth,
            whole=whole,
        )
        # When items may be strings or numbers, a closing quote or a comma can finish one too.
        self._string_items = scalar_items
        # The item being built: its open containers (root first), and the key of the value
        # that comes next in the innermost one (when it is an object).
        self._stack: list[Any] | None = None
        self._key: Any = None
        self._carry = ""  # handed to the C parser but held back: a cut escape, a lone high
        # Text not yet handed to the C parser: the first piece, then (from the second) all.
        self._pending = ""
        self._more: list[str] | None = None
        self._buffered = 0

    def feed(self, text: str) -> list[Any]:
        """Take the next fragment of the answer; return the items it completed.

        Raises `MalformedOutputError` on bad JSON, but only after the items completed before
        the bad spot were returned (by this call, or the one before).
        """
        if self._state != JSON:
            if self._error is not None:
                raise self._error
            if self._state == DONE or not text:
                return []
            rest = self._find_json(text)
            return self.feed(rest) if rest else []
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

    # -- closing (`AnswerParser.close`) and finding the JSON ------------------------------------

    def _end_text(self, text: str, out: list[Any]) -> None:
        self._pending = text  # nothing is pending before the JSON starts

    def _end_held(self, out: list[Any]) -> None:
        out += self._flush()
        if self._state == JSON and self._carry:
            out += self._out(self._send("", final=True))  # a cut escape, at the end
        if self._error is not None:
            raise self._error

    def _start_json(self, opener: str) -> None:
        super()._start_json(opener)
        self._stack = []

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
                self._state = DONE
                error = self._item_too_large(self.items_emitted + k)
                if not k:
                    raise error
                self._error = error  # hand out the items before it first
                return items[:k]
        return items

    def _send(self, text: str, *, final: bool = False) -> list[Any]:
        """Hand `text` to the C parser; return the items it completed. An error found after
        some of them is kept in `_error` (raised now when there are none)."""
        items: list[Any] = []
        if self._state != JSON:
            return items
        offset = self._fed
        self._fed += len(text)
        if self._fed > self._max_answer_bytes:
            self._answer_too_large()
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
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            message = str(exc)
            error: MultitaskError | None = None
            try:
                self._build(items)  # the events before the bad spot still count
            except MalformedOutputError as deep:
                error = deep
            if error is None and TRAILING_GARBAGE not in message:  # else prose follows
                error = self._malformed(message, offset, len(items), note)
            self._state = DONE
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
                    if event == MAP_KEY:
                        key = value
                        continue
                    top = stack[-1]
                    if event in (START_MAP, START_ARRAY):
                        child: Any = {} if event == START_MAP else []
                        if type(top) is dict:
                            top[key] = child
                        else:
                            top.append(child)
                        stack.append(child)
                        if len(stack) > self._item_limit:
                            self._too_deep(len(items))
                    elif event in (END_MAP, END_ARRAY):
                        stack.pop()
                        if not stack:
                            items.append(top)
                    elif type(top) is dict:
                        top[key] = value
                    else:
                        top.append(value)
                elif self._in_items and self._depth == self._items_depth:
                    if event in (START_MAP, START_ARRAY):
                        stack.append({} if event == START_MAP else [])
                        if self._item_limit < 1:
                            self._too_deep(len(items))
                    elif event == END_ARRAY:  # the list closed
                        self._in_items = False
                        self._depth -= 1
                    elif event != MAP_KEY:
                        items.append(value)  # a scalar item
                else:
                    self._structure(event, value, len(items))
        finally:
            self._key = key
            raw.clear()
