"""Reading one long text in requests: which part each request covers, and whose each item is.

Sans-IO: positions in, decisions out. `DocumentPlan(text, chunk_chars, overlap_chars)` cuts
the text into chunks that never split a word (at a sentence end or a space near the size;
a text without spaces, such as Chinese or Japanese, at a character). Chunk *i* owns
`[start, end)` and keeps a cursor in it. Each of its requests reads a `Window`: the text from
the cursor to `end + overlap_chars` (so that a mention running over the edge is read whole),
with up to `overlap_chars` before the cursor shown as context only.

Every item is placed by its grounded span (`Chunk.place`): delivered once by the chunk that
owns its start, a repeat when that span was delivered before (an overlap read twice, a
continuation that re-reads), or another chunk's. When an answer is cut (the output limit),
`Chunk.answered` says where the next request starts: after the last item delivered in order;
when the answer went backwards (a model grouping items by kind), the rest of the chunk is
re-read in halves, which need shorter answers. An answer that delivered nothing new and was
cut again is no progress: `IncompleteOutputError`, never a loop.

`resume_after=(start, end)`: the span of the last item a reader already has (items come in
document order, so it has every one before it). The chunks ending at or before its start are
done and never read; the chunk holding it reads on from its end, with no context (as a
continuation does), and counts it, and every span starting before it, as delivered; the
chunks after it show no context from before that end. No request is sent the text before it.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Protocol

from ._exceptions import ConfigurationError, IncompleteOutputError

__all__ = ["Chunk", "DocumentPlan", "Place", "Span", "Window", "check_sizes", "chunk_bounds"]

# A sentence ends at one of these, then space (or at a CJK full stop, which needs none).
_SENTENCE_END = re.compile(r"[.!?…]\s|[。！？]|\n\s*\n")
_SPACE = re.compile(r"\s")
#: The smallest window the halving fallback goes down to, in characters.
MIN_WINDOW = 200


class Span(Protocol):
    """Where an item's grounded quote is in the whole text."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class Place(enum.Enum):
    """What to do with an item, by where its span is."""

    DELIVER = "deliver"  # this chunk's, and new
    REPEAT = "repeat"  # delivered before: drop
    ELSEWHERE = "elsewhere"  # another chunk's (read in the overlap or the context): drop


@dataclass(frozen=True, slots=True)
class Window:
    """What one request reads: `text[start:end]` to extract from, `text[context:start]` before it
    for context only."""

    context: int
    start: int
    end: int


@dataclass(eq=False)
class Chunk:
    """One owned range of the text, read by one request or more."""

    index: int
    start: int
    end: int
    overlap: int
    text: str = field(repr=False)  # the whole text (for where to halve)
    max_continuations: int = 0
    cursor: int = field(init=False)
    #: Requests made for this chunk so far.
    requests: int = 0
    #: Items this chunk delivered.
    delivered: int = 0
    done: bool = False
    _spans: set[tuple[int, int]] = field(default_factory=set, repr=False)
    _pending: list[tuple[int, int]] = field(default_factory=list, repr=False)  # halves to read
    _new: int = 0  # delivered by the current request
    _backward: bool = False  # the current answer placed an item before an earlier one
    _last: int = -1  # the start of the current answer's last delivered item
    _window: Window | None = None
    _floor: int = -1  # spans starting before this were delivered before (`resume`)
    _origin: int = -1  # where this chunk's reading starts: its start, or after `resume`'s item
    #: Where the context shown before a first request may start (after what a reader has).
    context_from: int = 0

    def __post_init__(self) -> None:
        self.cursor = self._origin = self.start

    def resume(self, start: int, end: int) -> None:
        """Read on after an item of this chunk a reader already has, at `(start, end)`: it
        and every span starting before it count as delivered, and the next request starts at
        its end, with no context (what is before it is done)."""
        if self.requests:
            raise RuntimeError(f"chunk {self.index} was read already")
        self._spans.add((start, end))
        self._floor = start
        self.cursor = self._origin = max(self.cursor, end)
        if self.cursor >= self.end:
            self.done = True

    def window(self) -> Window:
        """What the next request reads. Call once per request."""
        if self.done:
            raise RuntimeError(f"chunk {self.index} is done")
        length = len(self.text)
        end = min(length, self.end + self.overlap)
        if self._pending:
            start, stop = self._pending[0]
            end = min(length, stop + self.overlap)
        else:
            start = self.cursor
        # Context only on a chunk's first request (the end of the chunk before): a
        # continuation starts after items already read, and a model that re-reads what it is
        # sent from the start should find nothing before the cursor to quote again.
        first = self.requests == 0 and self._floor < 0
        self.requests += 1
        self._new, self._backward, self._last = 0, False, -1
        context = max(self.context_from, start - self.overlap) if first else start
        self._window = Window(context, start, end)
        return self._window

    def place(self, span: Span) -> Place:
        """Where an item of the current request belongs; a DELIVER counts as delivered."""
        start, end = span.start, span.end
        if not self.start <= start < self.end:
            return Place.ELSEWHERE
        key = (start, end)
        if start < self._floor or key in self._spans:
            return Place.REPEAT
        self._spans.add(key)
        self.delivered += 1
        self._new += 1
        if start < self._last:
            self._backward = True
        self._last = start
        if not self._pending:
            self.cursor = max(self.cursor, end)
        return Place.DELIVER

    def answered(self, *, cut: bool) -> Window | None:
        """The current request's answer ended (`cut`: at the output limit). Returns the next
        window to read, or None when the chunk is done; raises `IncompleteOutputError` when
        a cut answer brought nothing new or the continuations ran out."""
        window = self._window
        if window is None:
            raise RuntimeError("answered() before window()")
        self._window = None
        if not cut:
            if self._pending:
                self._pending.pop(0)
            if not self._pending:
                self.done = True
                return None
            return self.window()
        if self.requests > self.max_continuations:
            raise self._incomplete(
                f"the answer for chunk {self.index} was cut off {self.requests} time(s); "
                f"max_continuations={self.max_continuations} allows no more"
            )
        if self._new == 0 and not self._pending:  # (a half re-read may start with repeats)
            raise self._incomplete(
                f"a continuation of chunk {self.index} was cut off again with no new item: "
                "the model makes no progress (raise max_tokens, or lower chunk_chars)"
            )
        if self._backward or self._pending:
            # Out of order: no cursor says what is left. Re-read what is left in halves
            # (delivered spans are repeats there), which need shorter answers.
            lo, hi = self._pending.pop(0) if self._pending else (self._origin, self.end)
            if hi - lo <= MIN_WINDOW:
                raise self._incomplete(
                    f"chunk {self.index}'s answers come out of order and are still cut off "
                    f"in a window of {hi - lo} characters"
                )
            mid = _boundary(self.text, lo, lo + (hi - lo) // 2, (hi - lo) // 2)
            self._pending[:0] = [(lo, mid), (mid, hi)]
        return self.window()

    def _incomplete(self, message: str) -> IncompleteOutputError:
        self.done = True
        return IncompleteOutputError(message, items_delivered=self.delivered)


class DocumentPlan:
    """The chunks of one text, for `chunk_chars` / `overlap_chars` / `max_continuations`."""

    def __init__(
        self,
        text: str,
        *,
        chunk_chars: int | None,
        overlap_chars: int = 0,
        max_continuations: int = 0,
        resume_after: tuple[int, int] | None = None,
    ) -> None:
        check_sizes(chunk_chars, overlap_chars, max_continuations)
        self.text = text
        bounds = chunk_bounds(text, chunk_chars) if chunk_chars else [(0, len(text))]
        self.chunks = [
            Chunk(i, a, b, overlap_chars, text, max_continuations)
            for i, (a, b) in enumerate(bounds)
        ]
        if resume_after is not None:
            self._resume(*resume_after)

    def _resume(self, start: int, end: int) -> None:
        """Mark what is before the item at `(start, end)` done (see the module's docstring)."""
        if not 0 <= start < len(self.text) or not start <= end <= len(self.text):
            raise ConfigurationError(
                f"resume_after {(start, end)} is not a span of the text "
                f"({len(self.text)} characters): was it given for another text?"
            )
        holder = self.chunk_of(start)
        for chunk in self.chunks:
            if chunk.index < holder.index:
                chunk.done = True
            elif chunk.index > holder.index:
                chunk.context_from = min(end, chunk.start)  # no context from what is done
        holder.resume(start, end)

    @property
    def todo(self) -> list[Chunk]:
        """The chunks still to read, in order (all of them, unless resumed)."""
        return [chunk for chunk in self.chunks if not chunk.done]

    def chunk_of(self, position: int) -> Chunk:
        """The chunk owning a position of the text."""
        lo, hi = 0, len(self.chunks) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.chunks[mid].start <= position:
                lo = mid
            else:
                hi = mid - 1
        return self.chunks[lo]


def check_sizes(chunk_chars: int | None, overlap_chars: int, max_continuations: int) -> None:
    """A `ConfigurationError` for a size a plan cannot have."""
    if chunk_chars is not None and chunk_chars < 1:
        raise ConfigurationError(f"chunk_chars must be at least 1, not {chunk_chars}")
    if overlap_chars < 0:
        raise ConfigurationError(f"overlap_chars must not be negative, not {overlap_chars}")
    if max_continuations < 0:
        raise ConfigurationError(f"max_continuations must not be negative, not {max_continuations}")


def chunk_bounds(text: str, size: int) -> list[tuple[int, int]]:
    """`[start, end)` pairs covering `text`, each at most `size` characters, cut where a
    sentence ends in the chunk's last quarter, else after its last space, else at a
    character (never between a character and the combining marks after it)."""
    n = len(text)
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(n, start + size)
        if end < n:
            end = _boundary(text, start, end, size)
        out.append((start, end))
        start = end
    return out or [(0, 0)]


def _boundary(text: str, start: int, end: int, size: int) -> int:
    last = None
    for match in _SENTENCE_END.finditer(text, max(start + 1, end - max(1, size // 4)), end):
        last = match.end()
    if last is None:
        for match in _SPACE.finditer(text, start + 1, end):
            last = match.end()
    cut = last if last is not None else end
    while cut > start + 1 and unicodedata.combining(text[cut]):
        cut -= 1
    return cut
