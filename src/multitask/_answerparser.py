"""What both task parsers share: limits, states, finding the JSON, the structure, closing, errors.

`TaskParser` hands out whole items and `PartialTaskParser` shows them growing, but they read
the same answers the same way: skip the preamble (`_preamble`), hand the JSON to ijson's C
event parser, find the `tasks` list (or the bare array, or the one `whole` item) among the
events outside the items, and fail with the same words. `AnswerParser` holds that; each
parser adds how it buffers text for the C parser and builds items from its events. Sans-IO.
"""

from __future__ import annotations

from typing import Any, Generic, NoReturn, TypeVar

import ijson  # type: ignore[import-untyped]
from ijson.utils import sendable_list  # type: ignore[import-untyped]
from pydantic_core import to_json

from ._exceptions import (
    AnswerTooLargeError,
    IncompleteOutputError,
    ItemTooLargeError,
    MalformedOutputError,
    MultitaskError,
)
from ._preamble import Preamble

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEM_BYTES",
    "DONE",
    "END_ARRAY",
    "END_MAP",
    "JSON",
    "MAP_KEY",
    "PREAMBLE",
    "SEND_SLICE",
    "START_ARRAY",
    "START_MAP",
    "TRAILING_GARBAGE",
    "AnswerParser",
    "item_size",
    "yajl_message",
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

#: What yajl's error says when text follows the closed JSON value (prose, which is ignored).
TRAILING_GARBAGE = "trailing garbage"
#: ijson's event names.
START_MAP, START_ARRAY, END_MAP, END_ARRAY, MAP_KEY = (
    "start_map",
    "start_array",
    "end_map",
    "end_array",
    "map_key",
)

#: Parser states: before the JSON, in it, and taking no more text.
PREAMBLE, JSON, DONE = 0, 1, 2

Out = TypeVar("Out")


class AnswerParser(Generic[Out]):
    """The part of a task parser that does not depend on how it builds items.

    A subclass feeds the JSON text to `_coro` (made by `_start_json`, its events in `_raw`)
    and builds items from the events, handing each event outside an item to `_structure`.
    `close()` is written here; a subclass says, through three hooks, how to take the text
    found when the answer ended in its preamble (`_end_text`), how to hand the C parser what
    it holds back (`_end_held`), and what to do with the events the C parser's own close
    makes (`_end_events`). Errors are worded here, so both parsers say the same thing.
    """

    __slots__ = (
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
        "_max_answer_bytes",
        "_max_depth",
        "_max_item_bytes",
        "_preamble",
        "_raw",
        "_root_key",
        "_saw_tasks",
        "_state",
        "_whole",
        "bare_array",
        "error",
        "items_emitted",
    )

    def __init__(
        self, *, max_item_bytes: int, max_answer_bytes: int, max_depth: int, whole: bool
    ) -> None:
        # `whole`: the answer is one item (a tool call's arguments in parallel mode), not a list.
        self._whole = whole
        self._max_item_bytes = max_item_bytes
        self._max_answer_bytes = max_answer_bytes
        self._max_depth = max_depth
        self._state = PREAMBLE
        # Per-stream state is made when first needed and dropped when done with: a fan-out
        # keeps hundreds of parsers alive, and the collector walks every container they hold.
        self._preamble: Preamble | None = None  # from the first text until the JSON starts
        self._coro: Any = None
        self._raw: list[tuple[str, Any]] | None = None  # ijson's events, made when JSON starts
        self._fed = 0  # characters handed to the C parser
        self._item_start = 0  # value of _fed when the last item was completed
        # Lexical state at the end of the text seen: inside a string, after a backslash.
        self._in_string = False
        self._escape = False
        # The structure around the items: containers open outside them, the depth the items
        # sit at (inside `tasks`, the bare array, or the top for `whole`), whether the parser
        # is in the list, the root object's last key, and whether it had a `tasks` list.
        self._depth = 0
        self._items_depth = 0
        self._item_limit = 0  # how deep an item may nest, within `max_depth`
        self._in_items = False
        self._root_key: Any = None
        self._saw_tasks = False
        self._error: MultitaskError | None = None  # raised on the next call, after the output
        #: After `close()`: None if the answer was whole, else what was wrong with it.
        self.error: MultitaskError | None = None
        #: True when the answer is a bare top-level array rather than an object.
        self.bare_array = False
        #: How many items were completed so far.
        self.items_emitted = 0

    @property
    def done(self) -> bool:
        """True once the parser takes no more text: after `close()`, an error, or the end of
        the JSON value (text after it is ignored)."""
        return self._state == DONE

    @property
    def truncated(self) -> bool:
        """After `close()`: True when the answer stopped before its list was closed."""
        return isinstance(self.error, IncompleteOutputError)

    def close(self) -> list[Out]:
        """Say the answer ended; return what that completes (usually nothing).

        Never raises: afterwards `error` is None when the answer was whole, or the error
        that describes it (`IncompleteOutputError` when the list never closed, so what was
        returned so far is all there is; `MalformedOutputError` when it was not JSON).
        """
        out: list[Out] = []
        try:
            if self._error is not None:
                raise self._error
            if self._state == PREAMBLE:
                text = (self._preamble or Preamble(self._max_item_bytes)).end()
                self._start_json(text[0])
                self._end_text(text, out)
            if self._state == JSON:
                self._end_held(out)
            if self._state == JSON:
                self._state = DONE
                try:
                    self._coro.close()
                except ijson.JSONError as exc:
                    if TRAILING_GARBAGE not in str(exc):
                        where = "the item" if self._whole else "the list"
                        raise IncompleteOutputError(
                            f"the answer ended inside {where}, after "
                            f"{self.items_emitted} complete item(s)",
                            items_delivered=self.items_emitted,
                        ) from None
                finally:
                    self._end_events(out)
            if not (self.bare_array or self._whole or self._saw_tasks or self.items_emitted):
                raise MalformedOutputError("the answer's JSON object has no 'tasks' list")
        except MultitaskError as exc:
            self._state = DONE
            self.error = exc
        return out

    # -- what a subclass says about closing ----------------------------------------------------

    def _end_text(self, text: str, out: list[Out]) -> None:
        """The answer ended in the preamble: take `text`, from the JSON's opener on."""
        raise NotImplementedError

    def _end_held(self, out: list[Out]) -> None:
        """The answer ended: hand the C parser the text held back, adding what it completes."""
        raise NotImplementedError

    def _end_events(self, out: list[Out]) -> None:
        """The C parser was closed (or failed to close): the events that made, if wanted."""

    # -- finding the JSON ----------------------------------------------------------------------

    def _find_json(self, text: str) -> str:
        """Skip prose and a markdown fence; return the text from the JSON's opener on, or ''."""
        preamble = self._preamble
        if preamble is None:
            preamble = self._preamble = Preamble(self._max_item_bytes)
        rest = preamble.find(text)
        if rest:
            self._start_json(rest[0])
        return rest

    def _start_json(self, opener: str) -> None:
        """The JSON begins with `opener`: what the items are inside, and the C parser."""
        self._preamble = None
        self.bare_array = opener == "[" and not self._whole
        self._items_depth = 0 if self._whole else 1 if self.bare_array else 2
        self._item_limit = self._max_depth - self._items_depth
        self._in_items = self._whole
        self._raw = sendable_list()
        self._coro = ijson.basic_parse_coro(self._raw, use_float=True)
        self._state = JSON

    # -- the structure around the items ------------------------------------------------------

    def _structure(self, event: str, value: Any, completed: int) -> None:
        """An event outside the items: the structure around the list (and other members).

        `completed` counts the items completed in this send but not yet in `items_emitted`.
        """
        depth = self._depth
        if event == MAP_KEY:
            if depth == 1:
                self._root_key = value
        elif event in (START_ARRAY, START_MAP):
            if event == START_ARRAY and (
                (depth == 0 and self.bare_array)
                or (depth == 1 and not self.bare_array and self._root_key == "tasks")
            ):
                self._in_items = True
                self._saw_tasks = True
            self._depth = depth + 1
            if depth + 1 > self._max_depth:
                self._too_deep(completed)
        elif event in (END_MAP, END_ARRAY):
            self._depth = depth - 1

    # -- errors --------------------------------------------------------------------------------

    def _too_deep(self, completed: int = 0) -> NoReturn:
        self._state = DONE
        raise MalformedOutputError(
            f"the answer's JSON is nested deeper than {self._max_depth} levels "
            f"(after {self.items_emitted + completed} item(s)); raise max_depth to read it"
        )

    def _item_too_large(self, index: int) -> ItemTooLargeError:
        """The error for item `index` (its JSON larger than `max_item_bytes`)."""
        return ItemTooLargeError(f"item {index} is larger than {self._max_item_bytes} characters")

    def _too_large(self) -> NoReturn:
        """The item in progress is larger than `max_item_bytes`."""
        self._state = DONE
        raise self._item_too_large(self.items_emitted)

    def _answer_too_large(self) -> NoReturn:
        """The whole answer is larger than `max_answer_bytes`."""
        self._state = DONE
        raise AnswerTooLargeError(
            f"the answer grew past {self._max_answer_bytes} characters "
            f"after {self.items_emitted} item(s)"
        )

    def _malformed(self, message: str, offset: int, completed: int, note: str) -> MultitaskError:
        """The error for yajl's `message` about the text sent from `offset` to `_fed`."""
        return MalformedOutputError(
            f"malformed JSON in the answer (within characters {offset}-{self._fed} of the "
            f"JSON text, after {self.items_emitted + completed} item(s)): "
            f"{yajl_message(message)}{note}",
            offset=offset,
        )


def item_size(item: Any, text_size: int) -> int:
    """The size of an item's JSON, or `text_size` (the text it came in) when it is nested too
    deep to serialise (256 levels)."""
    try:
        return len(to_json(item))
    except ValueError:
        return text_size


def yajl_message(message: str) -> str:
    """yajl's error, with its caret picture folded onto one line."""
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())
