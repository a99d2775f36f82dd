"""`multitask.Quote` as a field type, and the sans-IO pipelines that ground it in their text.

Inside an extraction with a text, each Quote is found by the extraction's aligner and
carries its span; a quote not in the text makes its item invalid (raise or skip, as any
invalid item). Outside one it is a plain Quote with no span. An item claims spans only if it
is valid, and only for the Quotes it holds (a union's losing member claims nothing).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationInfo, field_validator
from typing_extensions import TypedDict

import multitask
from multitask import ItemDone, ItemValidationError, MultiTask, Quote
from multitask._align import Aligner
from multitask._quote import GROUNDING, QUOTE_DESCRIPTION, contains_quote
from multitask._validation import ItemValidator
from multitask.lowlevel import Extraction, PartialExtraction
from multitask.providers import OpenAIChatDecoder

TEXT = "Jason is 10 and John is 30. Later, JASON turned 11 and Jason left."


class Mention(BaseModel):
    name: str
    quote: Quote


def answer(*items: Any) -> str:
    return json.dumps({"tasks": list(items)})


def extraction(item_type: Any = Mention, **options: Any) -> Extraction[Any]:
    return Extraction(TypeAdapter(item_type), OpenAIChatDecoder("content"), **options)


def run(ex: Extraction[Any], *items: Any) -> list[Any]:
    out = ex.feed_text(answer(*items))
    out += ex.close()
    ex.raise_for_outcome()
    return out


def spans(items: list[Any]) -> list[tuple[int | None, int | None, str | None]]:
    return [(m.quote.start, m.quote.end, m.quote.match) for m in items]


# -- the type --------------------------------------------------------------------------------


def test_outside_an_extraction_a_quote_has_no_span() -> None:
    m = Mention.model_validate({"name": "a", "quote": "Jason"})
    assert type(m.quote) is Quote
    assert (m.quote.start, m.quote.end, m.quote.match, m.quote.span) == (None, None, None, None)
    assert repr(m.quote) == "Quote('Jason')"
    assert m.quote == "Jason"


def test_its_json_schema_is_a_string_telling_the_model_to_copy_verbatim() -> None:
    schema = Mention.model_json_schema()["properties"]["quote"]
    assert schema["type"] == "string"
    assert schema["description"] == QUOTE_DESCRIPTION
    assert "verbatim" in QUOTE_DESCRIPTION
    tool = MultiTask(Mention).openai_strict_schema
    assert "verbatim" in json.dumps(tool)


def test_it_serialises_as_a_plain_string() -> None:
    m = Mention(name="a", quote=Quote("Jason", 0, 5, "exact"))
    assert m.model_dump() == {"name": "a", "quote": "Jason"}
    assert type(m.model_dump()["quote"]) is str
    assert m.model_dump_json() == '{"name":"a","quote":"Jason"}'
    assert json.loads(TypeAdapter(Quote).dump_json(Quote("x", 1, 2, "fuzzy"))) == "x"


def test_it_is_a_str_with_a_span() -> None:
    q = Quote("Jason", 0, 5, "exact")
    assert isinstance(q, str)
    assert q.upper() == "JASON"
    assert type(q.upper()) is str
    assert q[1:3] == "as"
    assert repr(q) == "Quote('Jason', start=0, end=5, match='exact')"
    assert q.span == (0, 5)


def test_equality_is_by_words_and_span() -> None:
    a, b = Quote("Jason", 0, 5, "exact"), Quote("Jason", 28, 33, "exact")
    assert a == "Jason"
    assert a == "Jason"
    assert a == Quote("Jason", 0, 5, "normalized")  # the same words at the same place
    assert a != b
    assert (a == b) is False
    assert a == Quote("Jason")  # no span: words only
    assert hash(a) == hash(b) == hash("Jason")
    assert {a: 1}["Jason"] == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_keeps_the_span(protocol: int) -> None:
    q = Quote("Jason", 28, 33, "normalized")
    back = pickle.loads(pickle.dumps(q, protocol=protocol))
    assert type(back) is Quote
    assert (str(back), back.start, back.end, back.match) == ("Jason", 28, 33, "normalized")


def test_copying_keeps_the_span() -> None:
    q = Quote("Jason", 28, 33, "fuzzy")
    for other in (copy.copy(q), copy.deepcopy(q)):
        assert repr(other) == repr(q)
    m = Mention(name="a", quote=q)
    assert m.model_copy(deep=True).quote.span == (28, 33)
    assert pickle.loads(pickle.dumps(m)).quote.span == (28, 33)


def test_revalidating_a_quote_outside_an_extraction_keeps_it() -> None:
    q = Quote("Jason", 28, 33, "exact")
    assert TypeAdapter(Quote).validate_python(q) is q


@pytest.mark.parametrize(
    ("item_type", "expected"),
    [
        (Mention, True),
        (list[Mention], True),
        (Quote, True),
        (Quote | None, True),
        (dict[str, Quote], True),
        (Annotated[Quote, Field(min_length=1)], True),
        (str, False),
        (int | str, False),
    ],
)
def test_contains_quote(item_type: Any, expected: bool) -> None:
    assert contains_quote(TypeAdapter(item_type)) is expected


def test_contains_quote_sees_nested_and_recursive_types() -> None:
    class Node(BaseModel):
        children: list[Node] = []
        evidence: list[Quote] = []

    class Plain(BaseModel):
        name: str
        children: list[Plain] = []

    assert contains_quote(TypeAdapter(Node))
    assert not contains_quote(TypeAdapter(Plain))


# -- grounding in an extraction --------------------------------------------------------------


def test_an_extraction_with_a_text_grounds_each_quote() -> None:
    items = run(
        extraction(text=TEXT),
        {"name": "a", "quote": "Jason is 10"},
        {"name": "b", "quote": "john is 30"},
        {"name": "c", "quote": "JASON turned 11"},
    )
    for m in items:
        assert fold_equal(TEXT[m.quote.start : m.quote.end], m.quote)
    assert [m.quote.match for m in items] == ["exact", "normalized", "exact"]


def fold_equal(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def test_repeats_get_distinct_spans_then_fail() -> None:
    ex = extraction(text=TEXT, on_invalid="skip")
    items = run(ex, *({"name": str(k), "quote": "Jason"} for k in range(4)))
    assert spans(items) == [(0, 5, "exact"), (55, 60, "exact"), (35, 40, "normalized")]
    assert [s.index for s in ex.skipped] == [3]
    assert ex.skipped[0].error.errors()[0]["type"] == "quote_not_found"


def test_a_quote_not_in_the_text_raises_after_the_items_before_it() -> None:
    ex = extraction(text=TEXT)
    out = ex.feed_text(
        answer({"name": "a", "quote": "Jason"}, {"name": "b", "quote": "Mary is 44 years old"})
    )
    assert [m.name for m in out] == ["a"]
    out += ex.close()
    with pytest.raises(ItemValidationError) as info:
        ex.raise_for_outcome()
    assert info.value.index == 1
    assert "is not in the text" in str(info.value)
    assert info.value.errors[0]["loc"] == ("quote",)


def test_an_invalid_item_claims_nothing() -> None:
    ex = extraction(text=TEXT, on_invalid="skip")
    items = run(ex, {"name": None, "quote": "Jason"}, {"name": "b", "quote": "Jason"})
    assert spans(items) == [(0, 5, "exact")]  # the first occurrence: the invalid item's is free


def test_a_union_member_that_lost_claims_nothing() -> None:
    class Person(BaseModel):
        kind: Literal["person"] = "person"
        quote: Quote
        age: int

    class Place(BaseModel):
        quote: Quote
        country: str

    text = "Paris, Paris and Paris"
    items = run(
        extraction(Person | Place, text=text),
        {"quote": "Paris", "country": "FR"},  # Person is tried too, and fails
        {"quote": "Paris", "age": 3},
        {"quote": "Paris", "country": "US"},
    )
    assert [type(m).__name__ for m in items] == ["Place", "Person", "Place"]
    assert spans(items) == [(0, 5, "exact"), (7, 12, "exact"), (17, 22, "exact")]


def test_two_quotes_of_one_item_need_two_places() -> None:
    class Pair(BaseModel):
        first: Quote
        second: Quote

    ex = extraction(Pair, text="John met John; Mary", on_invalid="skip")
    items = run(ex, {"first": "John", "second": "John"}, {"first": "Mary", "second": "Mary"})
    assert [(p.first.span, p.second.span) for p in items] == [((0, 4), (9, 13))]
    assert [s.index for s in ex.skipped] == [1]  # one "Mary": the second is not found
    assert ex.skipped[0].error.errors()[0]["type"] == "quote_not_found"


def test_quotes_in_nested_lists_dicts_dataclasses_and_typeddicts() -> None:
    @dataclasses.dataclass
    class Evidence:
        quote: Quote

    class Row(TypedDict):
        quote: Quote

    class Claim(BaseModel):
        evidence: list[Evidence]
        row: Row
        extra: dict[str, Quote]

    text = "a b a b a b"
    items = run(
        extraction(Claim, text=text),
        {"evidence": [{"quote": "a"}, {"quote": "a"}], "row": {"quote": "b"}, "extra": {"k": "a"}},
    )
    claim = items[0]
    assert [e.quote.span for e in claim.evidence] == [(0, 1), (4, 5)]
    assert claim.row["quote"].span == (2, 3)
    assert claim.extra["k"].span == (8, 9)


def test_a_users_validator_sees_its_own_context_and_the_quote() -> None:
    seen: list[Any] = []

    class Checked(BaseModel):
        quote: Quote

        @field_validator("quote")
        @classmethod
        def _see(cls, value: Quote, info: ValidationInfo) -> Quote:
            seen.append((info.context, value.span))
            return value

    run(extraction(Checked, text=TEXT, validation_context={"mine": 1}), {"quote": "John"})
    assert seen == [({"mine": 1}, (16, 20))]


def test_a_validator_that_replaces_the_quote_gets_the_span_of_what_it_returns() -> None:
    class Trimmed(BaseModel):
        quote: Quote

        @field_validator("quote")
        @classmethod
        def _trim(cls, value: Quote) -> Quote:
            return Quote(value.rstrip("."))

    items = run(extraction(Trimmed, text="x John. John"), {"quote": "John."}, {"quote": "John"})
    # The first item's Quote is the validator's (realigned: "John" at 2); the second's
    # "John" is then the next occurrence.
    assert [m.quote.span for m in items] == [(2, 6), (8, 12)]


def test_a_default_quote_is_left_as_it_is() -> None:
    default = Quote("John", 16, 20, "exact")

    class WithDefault(BaseModel):
        quote: Quote
        other: Quote = default

    items = run(extraction(WithDefault, text=TEXT), {"quote": "Jason"}, {"quote": "Jason"})
    assert [m.quote.span for m in items] == [(0, 5), (55, 60)]
    assert all(m.other is default for m in items)
    assert default.span == (16, 20)


def test_the_grounding_is_set_only_during_validation() -> None:
    seen: list[Any] = []

    class Probe(BaseModel):
        quote: Quote

        @field_validator("quote")
        @classmethod
        def _see(cls, value: Quote) -> Quote:
            seen.append(GROUNDING.get())
            return value

    run(extraction(Probe, text=TEXT), {"quote": "John"})
    assert seen[0] is not None
    assert GROUNDING.get() is None


def test_the_grounding_is_reset_when_a_validator_raises() -> None:
    class Boom(BaseModel):
        quote: Quote

        @field_validator("quote")
        @classmethod
        def _boom(cls, value: Quote) -> Quote:
            raise RuntimeError("the validator broke")

    with pytest.raises(RuntimeError):
        run(extraction(Boom, text=TEXT), {"quote": "John"})
    assert GROUNDING.get() is None


def test_without_a_text_quotes_have_no_span() -> None:
    items = run(extraction(), {"name": "a", "quote": "not in any text"})
    assert spans(items) == [(None, None, None)]


def test_a_type_without_a_quote_is_not_grounded() -> None:
    class Plain(BaseModel):
        name: str

    ex = extraction(Plain, text=TEXT)
    assert ex.validator.grounding is None
    assert ItemValidator(TypeAdapter(Plain)).grounding is None


def test_an_aligner_can_be_shared_and_given() -> None:
    aligner = Aligner(TEXT)
    first = run(extraction(aligner=aligner), {"name": "a", "quote": "Jason"})
    second = run(extraction(aligner=aligner), {"name": "b", "quote": "Jason"})
    assert spans(first + second) == [(0, 5, "exact"), (55, 60, "exact")]
    assert aligner.owned == [(0, 5), (55, 60)]


def test_the_item_validator_takes_an_aligner() -> None:
    validator = ItemValidator(TypeAdapter(Mention), aligner=Aligner(TEXT))
    items = validator.validate([{"name": "a", "quote": "John"}, {"name": "b", "quote": "zzzzz"}])
    assert spans(items) == [(16, 20, "exact")]
    assert isinstance(validator.error, ItemValidationError)


def test_the_classic_api_takes_a_text() -> None:
    multi = MultiTask(Mention)
    completion = {
        "choices": [
            {
                "message": {"role": "assistant", "content": answer({"name": "a", "quote": "John"})},
                "finish_reason": "stop",
            }
        ]
    }
    assert multi.from_response(completion, text=TEXT).tasks[0].quote.span == (16, 20)
    assert multi.from_response(completion).tasks[0].quote.span is None
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": piece}}]}
        for piece in (answer({"name": "a", "quote": "Jason"}), answer()[:0])
    ] + [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    got = list(multi.from_streaming_response(chunks, text=TEXT))
    assert got[0].quote.span == (0, 5)
    ex = multi.extraction(OpenAIChatDecoder("content"), text=TEXT)
    assert run(ex, {"name": "a", "quote": "Jason"})[0].quote.span == (0, 5)


def test_partial_events_ground_their_done_items() -> None:
    ex = PartialExtraction(TypeAdapter(Mention), OpenAIChatDecoder("content"), text=TEXT)
    events = ex.feed_text(
        answer({"name": "a", "quote": "Jason"}, {"name": "b", "quote": "Jason"}), now=0.0
    )
    events += ex.close()
    done = [e.item for e in events if isinstance(e, ItemDone)]
    assert spans(done) == [(0, 5, "exact"), (55, 60, "exact")]


def test_quote_is_public() -> None:
    assert multitask.Quote is Quote
    assert "Quote" in multitask.__all__


# -- where the same words go: in the answer's order, whole words first -------------------------


def test_a_repeat_is_the_next_place_after_the_last_item_not_the_first_free_one() -> None:
    text = "Ann A. Ann B. Bob. Ann C."
    ex = extraction(text=text)
    # The model skipped "Ann B" (as models do): its next "Ann" is the one after Bob.
    got = run(ex, *({"name": n, "quote": n} for n in ("Ann", "Bob", "Ann")))
    assert [(m.quote.start, m.quote.end) for m in got] == [(0, 3), (14, 17), (19, 22)]


def test_a_repeat_out_of_order_still_finds_a_free_place() -> None:
    text = "Ann A. Bob. Ann B."
    got = run(extraction(text=text), *({"name": n, "quote": n} for n in ("Bob", "Ann", "Ann")))
    assert [(m.quote.start, m.quote.end) for m in got] == [(7, 10), (12, 15), (0, 3)]


def test_a_quote_is_a_whole_word_where_one_is_there() -> None:
    text = "Name10 came. Name1 left."
    got = run(extraction(text=text), {"name": "a", "quote": "Name1"})
    assert (got[0].quote.start, got[0].quote.end) == (13, 18)
    assert (Aligner("Name10 or Name1").align("Name1").start) == 10  # type: ignore[union-attr]
    # No whole word anywhere (a text without spaces): the first free place.
    assert Aligner("東京都と東京").align("東京").start == 0  # type: ignore[union-attr]
    assert Aligner("Name10").align("Name1").start == 0  # type: ignore[union-attr]
