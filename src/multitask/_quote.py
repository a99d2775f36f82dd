"""`Quote`: a field type for words copied from the text, delivered with where they are.

A `Quote` is a `str` with `start`, `end` and `match`. Validated inside an extraction that has
a text, it is looked up in that text by the extraction's `Aligner` (`_align.py`) and carries
its span; one that is not there fails validation, so the item is invalid like any other.
Validated anywhere else (a user's own `model_validate`), it is a Quote without a span.

The validator finds the extraction's `Grounding` in a context variable that
`ItemValidator.validate` sets around each batch and resets after it: the user's
`validation_context` stays theirs, and two streams on one loop never see each other's.
"""

from __future__ import annotations

import dataclasses
import weakref
from contextvars import ContextVar
from typing import Any, Final

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError, core_schema

from ._align import Aligner, MatchKind, Span

__all__ = [
    "GROUNDING",
    "QUOTE_DESCRIPTION",
    "Grounding",
    "Quote",
    "contains_quote",
    "first_quote",
    "quotes_in",
]

#: What the JSON schema tells the model a Quote field is.
QUOTE_DESCRIPTION: Final = (
    "Words copied verbatim from the text, character for character (same spelling, case and "
    "punctuation; nothing added, left out or paraphrased)."
)

# The key in a Quote's core schema metadata that `contains_quote` looks for.
_MARK: Final = "multitask_quote"


class Quote(str):
    """Words the model copied from the text, and where they are in it.

    `text[q.start:q.end]` are the source words (offsets into the whole text given to the
    extraction); `match` is `"exact"`, `"normalized"` or `"fuzzy"`; `page` is the page (from 1)
    `start` is on, for a `multitask.Document` with pages. Outside an extraction all are None.
    It is a `str`: it serialises, compares and hashes as its words, except that two Quotes
    with different spans are not equal (the same words at two places).
    """

    __slots__ = ("_end", "_match", "_page", "_start")

    _start: int | None
    _end: int | None
    _match: MatchKind | None
    _page: int | None

    def __new__(
        cls,
        value: object = "",
        start: int | None = None,
        end: int | None = None,
        match: MatchKind | None = None,
        page: int | None = None,
    ) -> Quote:
        self = super().__new__(cls, value)
        self._start, self._end, self._match, self._page = start, end, match, page
        return self

    @property
    def start(self) -> int | None:
        """Where the source words start in the text, or None."""
        return self._start

    @property
    def end(self) -> int | None:
        """Where they end (exclusive), or None."""
        return self._end

    @property
    def match(self) -> MatchKind | None:
        """How they were found: `"exact"`, `"normalized"`, `"fuzzy"`, or None."""
        return self._match

    @property
    def page(self) -> int | None:
        """The page (from 1) the words start on, for a `Document` with pages; else None."""
        return self._page

    @property
    def span(self) -> tuple[int, int] | None:
        """`(start, end)`, or None."""
        if self._start is None or self._end is None:
            return None
        return self._start, self._end

    def __repr__(self) -> str:
        words = str.__repr__(self)
        if self._start is None:
            return f"Quote({words})"
        page = "" if self._page is None else f", page={self._page}"
        return f"Quote({words}, start={self._start}, end={self._end}, match={self._match!r}{page})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self._start, self._end, self._match, self._page))

    def __getnewargs__(  # type: ignore[override]
        self,
    ) -> tuple[str, int | None, int | None, MatchKind | None, int | None]:
        return (str(self), self._start, self._end, self._match, self._page)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quote):
            here, there = self.span, other.span
            if here is not None and there is not None and here != there:
                return False
        return str.__eq__(self, other) if isinstance(other, str) else NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = str.__hash__

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            _validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, return_schema=core_schema.str_schema()
            ),
            metadata={_MARK: True},
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "description": QUOTE_DESCRIPTION}


class Grounding:
    """One extraction's aligner as its Quote validators use it, item by item.

    `begin()` before an item, then `commit(item, mark)` if it validated (or `rollback(mark)`
    if not): an invalid item, or a branch of a union that lost, keeps no span. `lo`/`hi` is
    the window quotes are looked for in (the whole text by default).
    """

    __slots__ = ("aligner", "floor", "hi", "lo", "made", "unsure")

    def __init__(self, aligner: Aligner, lo: int = 0, hi: int | None = None) -> None:
        self.aligner = aligner
        self.lo = lo
        self.hi = hi
        #: Where the last valid item's quotes begin (in the aligner's text): the next item's
        #: are looked for from there first. Models answer in the text's order, so the same
        #: words quoted again are the next place after the last item, not the first free one.
        self.floor = lo
        #: The Quotes the validators made for the item being validated, and whether one of
        #: them has a span it does not own (see `quote`).
        self.made: list[Quote] = []
        self.unsure = False

    def quote(self, value: str) -> Quote:
        """The Quote of `value`, aligned and claimed; raises if it is not in the text.

        Not there once this item's own claims are taken away either: not found. There only
        then (the place was taken by a member of a union that may yet lose, or by another
        Quote of the item): the Quote gets that span unclaimed, and `commit` decides."""
        aligner = self.aligner
        span = self._align(value)
        unsure = False
        if span is None and self.made:
            shift = aligner.offset
            spans = [(s[0] - shift, s[1] - shift) for s in (q.span for q in self.made) if s]
            claimed = [span for span in spans if aligner.owns(*span)]
            for start, end in claimed:
                aligner.release(start, end)
            span = self._align(value, claim=False)
            for start, end in claimed:
                aligner.claim(start, end)
            unsure = True
        if span is None:
            raise _not_found(value)
        shift = aligner.offset
        start = span.start + shift
        page = aligner.page_of(start) if aligner.page_of is not None else None
        made = Quote(value, start, span.end + shift, span.match, page)
        self.made.append(made)
        self.unsure = self.unsure or unsure
        return made

    def begin(self) -> int:
        """Start an item: the checkpoint to roll back to."""
        self.made.clear()
        self.unsure = False
        return self.aligner.checkpoint()

    def rollback(self, mark: int) -> None:
        """The item was invalid: hand back what it claimed."""
        self.made.clear()
        self.aligner.restore(mark)

    def commit(self, item: Any, mark: int) -> None:
        """The item validated: keep the spans of the Quotes it holds.

        Usually those are the Quotes the validators made, each with a span it claimed. When
        they are not (a union tried several members, a validator of the user's replaced a
        Quote, a span was lent by `quote`), the item's claims are undone and its Quotes
        aligned again, in order, so that only they own spans, as if each had been validated
        once (a Quote with a span that no validator of this item made, such as a default,
        is left as it is). Raises `ValidationError` if one is not found then.
        """
        made, self.made = self.made, []
        held = _quotes_in(item, [])
        ours = {id(q) for q in made}
        if not self.unsure and len(held) == len(made) and {id(q) for q in held} == ours:
            self._advance(held)
            return
        self.aligner.restore(mark)
        for q in held:
            if q.span is not None and id(q) not in ours:
                continue
            span = self._align(q)
            if span is None:
                self.aligner.restore(mark)
                error = _not_found(str(q))
                raise ValidationError.from_exception_data(
                    type(item).__name__,
                    [InitErrorDetails(type=error, loc=(), input=str(q))],
                )
            shift = self.aligner.offset
            q._start, q._end, q._match = span.start + shift, span.end + shift, span.match
            page_of = self.aligner.page_of
            q._page = page_of(q._start) if page_of is not None else None
        self._advance(held)

    def _align(self, value: str, *, claim: bool = True) -> Span | None:
        """`value`'s span: after the last item first, then anywhere in the window."""
        aligner = self.aligner
        look = aligner.align if claim else aligner.find
        # Whole words anywhere before a partial word after the floor: an answer that goes
        # back in the text quotes "Name3" where "Name30" is all that is left after the floor.
        if self.floor > self.lo:
            span = look(value, self.floor, self.hi, whole_words=True)
            if span is None:
                span = look(value, self.lo, self.hi, whole_words=True)
            if span is None:
                span = look(value, self.floor, self.hi)
            if span is not None:
                return span
        span = look(value, self.lo, self.hi)
        if span is None and self.lo > 0 and self.lo == aligner.read_from:
            span = look(value, 0, self.lo)  # only in the context shown before the part
        return span

    def _advance(self, quotes: list[Quote]) -> None:
        starts = [q.start for q in quotes if q.start is not None]
        if starts:
            self.floor = max(self.lo, min(starts) - self.aligner.offset)


#: The grounding of the batch being validated, if its extraction has one.
GROUNDING: ContextVar[Grounding | None] = ContextVar("multitask_grounding", default=None)


def _validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Quote:
    """A string, then a Quote: aligned in an extraction's text, else with no span (a Quote
    given as it is: kept, span and all)."""
    grounding = GROUNDING.get()
    if grounding is None and isinstance(value, Quote):
        return value
    words: str = handler(value)
    if grounding is not None:
        return grounding.quote(words)
    return Quote(words)


def _not_found(value: str) -> PydanticCustomError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return PydanticCustomError(
        "quote_not_found", "the quote {quote} is not in the text", {"quote": repr(shown)}
    )


_LEAVES: Final = frozenset({str, int, float, bool, bytes, type(None)})


def quotes_in(value: Any) -> list[Quote]:
    """The Quotes in a validated item (nested models, lists, dicts, dataclasses), in field
    and element order."""
    return _quotes_in(value, [])


def first_quote(item: Any) -> Quote | None:
    """The item's first Quote with a span, in field and element order: where the item is in
    the text (what chunked reading places it by, and what `extract_many` reports)."""
    for quote in _quotes_in(item, []):
        if quote.span is not None:
            return quote
    return None


def _quotes_in(value: Any, out: list[Quote]) -> list[Quote]:
    """The Quotes in a validated value, in field and element order, appended to `out`."""
    kind = type(value)
    if kind in _LEAVES:
        return out
    if isinstance(value, Quote):
        out.append(value)
    elif isinstance(value, BaseModel):
        for v in value.__dict__.values():
            _quotes_in(v, out)
        extra = value.__pydantic_extra__
        if extra:
            for v in extra.values():
                _quotes_in(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _quotes_in(k, out)
            _quotes_in(v, out)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _quotes_in(v, out)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _quotes_in(getattr(value, f.name, None), out)
    return out


_contains: weakref.WeakKeyDictionary[TypeAdapter[Any], bool] = weakref.WeakKeyDictionary()


def contains_quote(adapter: TypeAdapter[Any]) -> bool:
    """Whether the type an adapter validates has a Quote anywhere in it (read from its core
    schema once per adapter): only then does an extraction ground its items."""
    known = _contains.get(adapter)
    if known is None:
        known = _contains[adapter] = _marked(adapter.core_schema)
    return known


def _marked(schema: Any) -> bool:
    stack = [schema]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            metadata = node.get("metadata")
            if isinstance(metadata, dict) and metadata.get(_MARK):
                return True
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return False
