"""Tests for `multitask._validation`: validating raw items, raising or skipping invalid ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest
from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

import multitask._validation as validation_module
from multitask import InvalidItem, ItemValidationError, MultitaskError
from multitask._validation import ItemValidator

# -- types -----------------------------------------------------------------------------------


class Task(BaseModel):
    title: str
    priority: int


class Address(BaseModel):
    city: str


class Person(BaseModel):
    name: str
    address: Address


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


@dataclass
class Point:
    x: int
    y: int = 0


class Movie(TypedDict):
    title: str
    year: int


class Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int


SEEN_CONTEXTS: list[Any] = []


class Tagged(BaseModel):
    tag: str

    @field_validator("tag")
    @classmethod
    def _tag_allowed(cls, value: str, info: ValidationInfo) -> str:
        SEEN_CONTEXTS.append(info.context)
        allowed = (info.context or {}).get("allowed")
        if allowed is not None and value not in allowed:
            raise ValueError(f"tag {value!r} is not one of {sorted(allowed)}")
        return value


class Scaled(BaseModel):
    value: float

    @model_validator(mode="after")
    def _scale(self, info: ValidationInfo) -> Scaled:
        self.value *= (info.context or {}).get("scale", 1)
        return self


def task(title: str, priority: int = 1) -> dict[str, Any]:
    return {"title": title, "priority": priority}


# -- valid items -----------------------------------------------------------------------------


def test_public_exports() -> None:
    assert validation_module.InvalidItem is InvalidItem  # the top level's
    assert validation_module.ItemValidationError is ItemValidationError
    assert issubclass(ItemValidationError, MultitaskError)


def test_fresh_validator_state() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    assert validator.index == 0
    assert validator.error is None
    assert validator.skipped == []
    assert validator.on_invalid == "raise"


def test_valid_items_pass_through() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    out = validator.validate([task("a", 1), task("b", 2), {"title": "c", "priority": "3"}])
    assert out == [
        Task(title="a", priority=1),
        Task(title="b", priority=2),
        Task(title="c", priority=3),
    ]
    assert all(type(item) is Task for item in out)
    assert validator.index == 3
    assert validator.error is None
    assert validator.skipped == []


def test_index_continues_across_batches() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    assert validator.validate([task("a")]) == [Task(title="a", priority=1)]
    assert validator.validate([]) == []
    assert validator.index == 1
    assert validator.validate([task("b"), task("c")]) == [
        Task(title="b", priority=1),
        Task(title="c", priority=1),
    ]
    assert validator.index == 3


def test_model_instances_pass_through() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    item = Task(title="x", priority=2)
    assert validator.validate([item]) == [item]


def test_bad_on_invalid_rejected() -> None:
    with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'skip'"):
        ItemValidator(TypeAdapter(Task), on_invalid="ignore")  # type: ignore[arg-type]


# -- on_invalid="raise" ------------------------------------------------------------------------


def test_invalid_item_under_raise_returns_items_before_and_sets_error() -> None:
    validator = ItemValidator(TypeAdapter(Task), on_invalid="raise")
    bad = {"title": "c", "priority": "high"}
    out = validator.validate([task("a"), task("b"), bad, task("d")])
    assert out == [Task(title="a", priority=1), Task(title="b", priority=1)]
    error = validator.error
    assert isinstance(error, ItemValidationError)
    assert isinstance(error, MultitaskError)
    assert error.index == 2
    assert error.raw is bad
    assert [e["loc"] for e in error.errors] == [("priority",)]
    assert error.errors[0]["type"] == "int_parsing"
    assert error.errors[0]["input"] == "high"
    assert "url" not in error.errors[0]
    message = str(error)
    assert message.startswith("item 2 is not a valid Task: ")
    assert "priority: Input should be a valid integer" in message
    assert validator.skipped == []


def test_invalid_item_index_counts_across_batches() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    assert len(validator.validate([task("a"), task("b"), task("c")])) == 3
    assert validator.validate([task("d"), {"title": 5, "priority": 1}]) == [
        Task(title="d", priority=1)
    ]
    assert validator.error is not None
    assert validator.error.index == 4
    assert str(validator.error).startswith("item 4 ")
    assert "title: Input should be a valid string" in str(validator.error)


def test_invalid_first_item_returns_nothing() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    assert validator.validate([{"title": "x"}, task("b")]) == []
    assert validator.error is not None
    assert validator.error.index == 0
    assert "priority: Field required" in str(validator.error)


def test_error_message_names_nested_field() -> None:
    validator = ItemValidator(TypeAdapter(Person))
    validator.validate([{"name": "Ann", "address": {"town": "Oslo"}}])
    assert validator.error is not None
    assert "address.city: Field required" in str(validator.error)
    assert validator.error.errors[0]["loc"] == ("address", "city")


def test_error_message_for_whole_item() -> None:
    validator = ItemValidator(TypeAdapter(Task))
    validator.validate(["not an object"])
    assert validator.error is not None
    assert "(item): Input should be a valid dictionary or instance of Task" in str(validator.error)


def test_error_message_summarises_many_errors() -> None:
    validator = ItemValidator(TypeAdapter(Many))
    validator.validate([{}])
    assert validator.error is not None
    message = str(validator.error)
    assert "a: Field required; b: Field required; c: Field required" in message
    assert message.endswith("(and 2 more)")
    assert "d:" not in message
    assert len(validator.error.errors) == 5


# -- on_invalid="skip" -------------------------------------------------------------------------


def test_invalid_items_under_skip_are_dropped_and_recorded() -> None:
    validator = ItemValidator(TypeAdapter(Task), on_invalid="skip")
    bad1 = {"title": "b"}
    bad2 = {"title": None, "priority": 4}
    out = validator.validate([task("a"), bad1, task("c"), bad2, task("e")])
    assert out == [
        Task(title="a", priority=1),
        Task(title="c", priority=1),
        Task(title="e", priority=1),
    ]
    assert validator.error is None
    assert validator.index == 5
    assert [(s.index, s.raw) for s in validator.skipped] == [(1, bad1), (3, bad2)]
    assert all(isinstance(s, InvalidItem) for s in validator.skipped)
    first, second = validator.skipped
    assert isinstance(first.error, ValidationError)
    assert first.error.errors()[0]["loc"] == ("priority",)
    assert first.error.errors()[0]["type"] == "missing"
    assert second.error.errors()[0]["loc"] == ("title",)


def test_skip_indices_continue_across_batches() -> None:
    validator = ItemValidator(TypeAdapter(Task), on_invalid="skip")
    assert validator.validate([{}, task("b")]) == [Task(title="b", priority=1)]
    assert validator.validate([task("c"), 7, "x"]) == [Task(title="c", priority=1)]
    assert validator.validate([task("f")]) == [Task(title="f", priority=1)]
    assert [s.index for s in validator.skipped] == [0, 3, 4]
    assert [s.raw for s in validator.skipped] == [{}, 7, "x"]
    assert validator.index == 6
    assert validator.error is None


def test_skip_everything() -> None:
    validator = ItemValidator(TypeAdapter(int), on_invalid="skip")
    assert validator.validate(["a", "b"]) == []
    assert [s.index for s in validator.skipped] == [0, 1]
    assert validator.error is None


def test_invalid_item_is_frozen() -> None:
    validator = ItemValidator(TypeAdapter(int), on_invalid="skip")
    validator.validate(["x"])
    skipped = validator.skipped[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        skipped.index = 5  # type: ignore[misc]


# -- context -------------------------------------------------------------------------------


def test_context_reaches_field_validator() -> None:
    SEEN_CONTEXTS.clear()
    context = {"allowed": {"red", "blue"}}
    validator = ItemValidator(TypeAdapter(Tagged), context=context)
    out = validator.validate([{"tag": "red"}, {"tag": "blue"}])
    seen = list(SEEN_CONTEXTS)
    assert [item.tag for item in out] == ["red", "blue"]
    assert len(seen) == 2
    assert all(one is context for one in seen)
    assert validator.validate([{"tag": "green"}]) == []
    assert validator.error is not None
    assert validator.error.index == 2
    assert "tag: Value error, tag 'green' is not one of ['blue', 'red']" in str(validator.error)


def test_no_context_by_default() -> None:
    SEEN_CONTEXTS.clear()
    validator = ItemValidator(TypeAdapter(Tagged))
    out = validator.validate([{"tag": "green"}])
    assert SEEN_CONTEXTS == [None]
    assert [item.tag for item in out] == ["green"]


def test_context_decides_skips() -> None:
    validator = ItemValidator(TypeAdapter(Tagged), context={"allowed": {"a"}}, on_invalid="skip")
    assert validator.validate([{"tag": "a"}, {"tag": "b"}, {"tag": "a"}]) == [
        Tagged(tag="a"),
        Tagged(tag="a"),
    ]
    assert [(s.index, s.raw) for s in validator.skipped] == [(1, {"tag": "b"})]


def test_context_reaches_model_validator() -> None:
    validator = ItemValidator(TypeAdapter(Scaled), context={"scale": 10})
    assert validator.validate([{"value": 1.5}, {"value": 2}]) == [
        Scaled(value=15.0),
        Scaled(value=20.0),
    ]


# -- other types ---------------------------------------------------------------------------


def test_union_items() -> None:
    validator = ItemValidator(TypeAdapter(Cat | Dog))
    out = validator.validate(
        [{"kind": "cat", "lives": 9}, {"kind": "dog", "good": True}, {"kind": "cat", "lives": 1}]
    )
    assert out == [Cat(kind="cat", lives=9), Dog(kind="dog", good=True), Cat(kind="cat", lives=1)]
    assert [type(x) for x in out] == [Cat, Dog, Cat]
    assert validator.validate([{"kind": "fish"}]) == []
    assert validator.error is not None
    assert validator.error.index == 3
    assert "union[Cat,Dog]" in str(validator.error)
    assert {e["loc"][0] for e in validator.error.errors} == {"Cat", "Dog"}


def test_discriminated_union_items() -> None:
    adapter: TypeAdapter[Cat | Dog] = TypeAdapter(Annotated[Cat | Dog, Field(discriminator="kind")])
    validator = ItemValidator(adapter, on_invalid="skip")
    out = validator.validate([{"kind": "dog", "good": False}, {"kind": "dog", "good": "maybe"}])
    assert out == [Dog(kind="dog", good=False)]
    assert validator.skipped[0].index == 1
    assert validator.skipped[0].error.errors()[0]["loc"] == ("dog", "good")


def test_scalar_union_items() -> None:
    validator = ItemValidator(TypeAdapter(int | str))
    assert validator.validate([1, "a", 2]) == [1, "a", 2]
    assert validator.validate([[1]]) == []
    assert validator.error is not None


def test_dataclass_items() -> None:
    validator = ItemValidator(TypeAdapter(Point))
    out = validator.validate([{"x": 1, "y": 2}, {"x": "3"}])
    assert out == [Point(1, 2), Point(3, 0)]
    assert all(type(p) is Point for p in out)
    assert validator.validate([{"y": 1}]) == []
    assert validator.error is not None
    assert validator.error.index == 2
    assert str(validator.error).startswith("item 2 is not a valid Point: x: Field required")


def test_typeddict_items() -> None:
    validator = ItemValidator(TypeAdapter(Movie), on_invalid="skip")
    out = validator.validate(
        [{"title": "Alien", "year": 1979}, {"title": "Heat"}, {"title": "Up", "year": "2009"}]
    )
    assert out == [{"title": "Alien", "year": 1979}, {"title": "Up", "year": 2009}]
    assert all(type(m) is dict for m in out)
    assert [s.index for s in validator.skipped] == [1]
    assert validator.skipped[0].error.errors()[0]["loc"] == ("year",)


def test_str_items() -> None:
    validator = ItemValidator(TypeAdapter(str))
    assert validator.validate(["a", "", "日本"]) == ["a", "", "日本"]
    assert validator.validate(["b", 5, "c"]) == ["b"]
    assert validator.error is not None
    assert validator.error.index == 4
    assert validator.error.raw == 5
    assert (
        str(validator.error) == "item 4 is not a valid str: (item): Input should be a valid string"
    )


def test_list_items_error_location() -> None:
    validator = ItemValidator(TypeAdapter(list[Task]))
    validator.validate([[task("a"), {"title": "b"}]])
    assert validator.error is not None
    assert "1.priority: Field required" in str(validator.error)
