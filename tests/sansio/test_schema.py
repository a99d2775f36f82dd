"""Tests for `multitask._schema`: pydantic JSON schemas → OpenAI strict / Gemini dialects."""

from __future__ import annotations

import copy
import datetime
import enum
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from multitask import MultiTask, MultitaskError, SchemaError
from multitask._schema import gemini_schema, lean_schema, strict_schema

# -- models ----------------------------------------------------------------------------------


class Color(str, enum.Enum):  # noqa: UP042 (the form most code written before 3.11 has)
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    city: str
    zip_code: str | None = None


class Tag(BaseModel):
    """A label on a task."""

    name: str
    weight: float = 1.0


class Task(BaseModel):
    title: str
    done: bool = False
    tags: list[Tag] = []
    labels: list[str]
    priority: Literal["low", "high"]
    color: Color = Color.RED
    note: str | None = None
    address: Address = Field(description="Where the task happens")
    backup: Address | None = Field(None, description="A second address, if any")
    due: datetime.datetime | None = None
    estimate: int = Field(0, ge=0, description="Hours")


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Pets(BaseModel):
    plain: Cat | Dog
    tagged: Annotated[Cat | Dog, Field(discriminator="kind")]
    maybe: Cat | Dog | None = None


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Chain(BaseModel):
    value: int
    link: Chain = Field(description="the next link")  # a $ref with siblings to itself


class Holder(BaseModel):
    root: Node
    label: str


class WithDict(BaseModel):
    name: str
    counts: dict[str, int]


class WithAnyDict(BaseModel):
    blob: dict[str, Any]


class WithAny(BaseModel):
    anything: Any


class WithTuple(BaseModel):
    pair: tuple[int, str]


class WithIntLiteral(BaseModel):
    level: Literal[1, 2, 3]


class Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class Formats(BaseModel):
    when: datetime.datetime
    ident: uuid.UUID = Field(description="The id")
    day: datetime.date
    positive: int = Field(gt=0, lt=10)
    ratio: float = Field(gt=0, le=1)
    code: str = Field(min_length=2, max_length=8, pattern="^[A-Z]+$")
    many: list[int] = Field(min_length=1, max_length=5)


@dataclass
class Point:
    x: int
    y: int
    label: str | None = None


class Movie(TypedDict):
    title: str
    year: int


class OnlyDescribedRef(BaseModel):
    tag: Tag = Field(description="the one tag")


MODELS: list[Any] = [Task, Pets, Node, Chain, Holder, Extra, Formats, Point, Movie, Address]


def schema_of(tp: Any) -> dict[str, Any]:
    return TypeAdapter(tp).json_schema()


def envelope(item_type: Any) -> dict[str, Any]:
    """The library's answer shape `{"tasks": [T, ...]}`, with `$defs` hoisted to the root."""
    item = schema_of(item_type)
    defs = item.pop("$defs", None)
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": item}},
        "required": ["tasks"],
    }
    if defs:
        wrapped["$defs"] = defs
    return wrapped


# -- walking ---------------------------------------------------------------------------------


def walk(schema: Any, path: str = "<root>") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(path, sub_schema)` for the schema and every schema nested in it."""
    assert isinstance(schema, dict), f"{path}: not a schema: {schema!r}"
    yield path, schema
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        table = schema.get(key)
        if isinstance(table, dict):
            for name, sub in table.items():
                yield from walk(sub, f"{path}.{key}.{name}")
    for key in ("items", "additionalProperties", "not"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield from walk(sub, f"{path}.{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        subs = schema.get(key)
        if isinstance(subs, list):
            for i, sub in enumerate(subs):
                yield from walk(sub, f"{path}.{key}.{i}")


def is_object(node: dict[str, Any]) -> bool:
    return node.get("type") in ("object", "OBJECT") or "properties" in node


def resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_walk_visits_every_sub_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "b": {"oneOf": [{"$ref": "#/$defs/X"}], "allOf": [{"type": "integer"}]},
        },
        "$defs": {"X": {"type": "object", "properties": {"c": {"prefixItems": [{}]}}}},
    }
    assert [path for path, _ in walk(schema)] == [
        "<root>",
        "<root>.properties.a",
        "<root>.properties.a.items",
        "<root>.properties.a.items.anyOf.0",
        "<root>.properties.a.items.anyOf.1",
        "<root>.properties.b",
        "<root>.properties.b.oneOf.0",
        "<root>.properties.b.allOf.0",
        "<root>.$defs.X",
        "<root>.$defs.X.properties.c",
        "<root>.$defs.X.properties.c.prefixItems.0",
    ]


# -- strict_schema: invariants over many models ------------------------------------------------

STRICT_OK = [*MODELS, list[Task], Cat | Dog]


def assert_strict(out: dict[str, Any]) -> None:
    """Check everything OpenAI's strict mode demands, on every sub-schema."""
    assert "$ref" not in out, "the root must not be a bare reference"
    for path, node in walk(out):
        assert "oneOf" not in node, path
        assert "discriminator" not in node, path
        assert "default" not in node, path
        if "$ref" in node:
            assert set(node) == {"$ref"}, f"{path}: $ref with siblings {sorted(node)}"
            resolve(out, node["$ref"])  # points somewhere
        if "allOf" in node:
            assert len(node["allOf"]) > 1, path
        if is_object(node):
            assert node["additionalProperties"] is False, path
            assert node["required"] == list(node["properties"]), path
        assert {"type", "anyOf", "allOf", "$ref", "enum", "const"} & set(node), (
            f"{path}: unconstrained schema {node}"
        )


@pytest.mark.parametrize("tp", STRICT_OK, ids=lambda tp: getattr(tp, "__name__", str(tp)))
def test_strict_invariants(tp: Any) -> None:
    out = strict_schema(schema_of(tp))
    assert_strict(out)


@pytest.mark.parametrize("tp", [Task, Pets, Node, Chain, Holder, Point, Movie])
def test_strict_envelope(tp: Any) -> None:
    out = strict_schema(envelope(tp))
    assert_strict(out)
    assert out["type"] == "object"
    assert out["required"] == ["tasks"]
    tasks = out["properties"]["tasks"]
    assert tasks["type"] == "array"
    item = tasks["items"]
    if "$ref" in item:
        item = resolve(out, item["$ref"])
    assert item["additionalProperties"] is False
    assert item["required"] == list(item["properties"])


@pytest.mark.parametrize("tp", [*MODELS, WithDict, WithAny, WithTuple, WithIntLiteral])
@pytest.mark.parametrize("convert", [strict_schema, gemini_schema])
def test_input_is_never_mutated(tp: Any, convert: Any) -> None:
    schema = schema_of(tp)
    before = copy.deepcopy(schema)
    try:
        out = convert(schema)
    except SchemaError:
        out = None
    assert schema == before
    if out is not None:
        # The output shares no dict or list with the input: editing it cannot change the input.
        assert not container_ids(out) & container_ids(schema)


def container_ids(value: Any) -> set[int]:
    """The ids of every dict and list in a JSON-like value."""
    if isinstance(value, dict):
        return {id(value)}.union(*(container_ids(v) for v in value.values()))
    if isinstance(value, list):
        return {id(value)}.union(*(container_ids(v) for v in value))
    return set()


# -- strict_schema: details --------------------------------------------------------------------


def test_strict_task_fields() -> None:
    out = strict_schema(schema_of(Task))
    props = out["properties"]
    assert out["required"] == list(Task.model_fields)
    assert list(props) == list(Task.model_fields)
    # Optional fields stay optional in meaning: nullable, no default.
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Note"}
    assert props["done"] == {"title": "Done", "type": "boolean"}
    # `$ref` + description is inlined, the description kept and the object closed.
    address = props["address"]
    assert "$ref" not in address
    assert address["description"] == "Where the task happens"
    assert address["title"] == "Address"
    assert address["required"] == ["street", "city", "zip_code"]
    assert address["additionalProperties"] is False
    # A bare `$ref` inside anyOf stays a reference; the description stays on the union.
    assert props["backup"] == {
        "anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}],
        "description": "A second address, if any",
    }
    # `$ref` + default only: the default goes, the bare ref stays.
    assert props["color"] == {"$ref": "#/$defs/Color"}
    assert out["$defs"]["Color"] == {"enum": ["red", "green"], "title": "Color", "type": "string"}
    assert props["priority"] == {"enum": ["low", "high"], "title": "Priority", "type": "string"}
    assert props["tags"]["items"] == {"$ref": "#/$defs/Tag"}
    tag = out["$defs"]["Tag"]
    assert tag["description"] == "A label on a task."
    assert tag["required"] == ["name", "weight"]
    assert props["estimate"] == {
        "description": "Hours",
        "minimum": 0,
        "title": "Estimate",
        "type": "integer",
    }


def test_strict_unions_become_any_of_without_discriminator() -> None:
    out = strict_schema(schema_of(Pets))
    props = out["properties"]
    refs = [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]
    assert props["plain"] == {"anyOf": refs, "title": "Plain"}
    assert props["tagged"] == {"anyOf": refs, "title": "Tagged"}
    assert props["maybe"] == {"anyOf": [*refs, {"type": "null"}], "title": "Maybe"}
    cat = out["$defs"]["Cat"]
    assert cat["required"] == ["kind", "lives"]
    assert cat["properties"]["kind"] == {"const": "cat", "title": "Kind", "type": "string"}


def test_strict_root_union_is_kept_with_its_defs() -> None:
    out = strict_schema(schema_of(Cat | Dog))
    assert out["anyOf"] == [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]
    assert set(out["$defs"]) == {"Cat", "Dog"}


def test_strict_recursive_model_keeps_bare_refs() -> None:
    out = strict_schema(schema_of(Node))
    # The root must be an object, so its `$ref` is inlined once; the recursion stays a ref.
    assert out["type"] == "object"
    assert "$ref" not in out
    assert out["required"] == ["value", "children"]
    assert out["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    node = out["$defs"]["Node"]
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert node["additionalProperties"] is False


def test_strict_recursive_ref_with_siblings_terminates() -> None:
    out = strict_schema(schema_of(Chain))
    assert_strict(out)
    # The self-reference cannot be inlined, so it stays bare (its description is lost).
    assert out["properties"]["link"] == {"$ref": "#/$defs/Chain"}
    assert out["$defs"]["Chain"]["properties"]["link"] == {"$ref": "#/$defs/Chain"}


def test_strict_recursive_model_nested_in_another() -> None:
    out = strict_schema(schema_of(Holder))
    assert out["properties"]["root"] == {"$ref": "#/$defs/Node"}
    assert set(out["$defs"]) == {"Node"}


def test_strict_drops_definitions_no_longer_referenced() -> None:
    out = strict_schema(schema_of(OnlyDescribedRef))
    # The only use of Tag carried a description, so it was inlined and Tag's def is gone.
    assert "$defs" not in out
    assert out["properties"]["tag"]["description"] == "the one tag"
    assert out["properties"]["tag"]["required"] == ["name", "weight"]


def test_strict_dataclass_and_typeddict() -> None:
    point = strict_schema(schema_of(Point))
    assert point["required"] == ["x", "y", "label"]
    assert point["properties"]["label"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": "Label",
    }
    movie = strict_schema(schema_of(Movie))
    assert movie["required"] == ["title", "year"]
    assert movie["additionalProperties"] is False


def test_strict_closes_extra_allow_models() -> None:
    assert strict_schema(schema_of(Extra))["additionalProperties"] is False


def test_strict_inlines_single_all_of() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"allOf": [{"$ref": "#/$defs/X"}], "description": "an X", "default": None},
        },
        "$defs": {"X": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    out = strict_schema(schema)
    assert out["properties"]["a"] == {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "description": "an X",
        "required": ["n"],
        "additionalProperties": False,
    }
    assert "$defs" not in out


def test_strict_supports_definitions_and_prefix_items() -> None:
    schema = {
        "type": "object",
        "properties": {
            "p": {"type": "array", "prefixItems": [{"$ref": "#/definitions/X"}]},
            "q": {"$ref": "#/definitions/X", "title": "Q"},
        },
        "definitions": {"X": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    out = strict_schema(schema)
    assert_strict(out)
    assert out["properties"]["p"]["prefixItems"] == [{"$ref": "#/definitions/X"}]
    assert out["properties"]["q"]["title"] == "Q"
    assert out["definitions"]["X"]["required"] == ["n"]


def test_strict_empty_object_is_closed() -> None:
    out = strict_schema({"type": "object", "additionalProperties": False})
    assert out == {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
        "required": [],
    }


# -- strict_schema: errors ---------------------------------------------------------------------


def test_schema_error_is_a_multitask_value_error() -> None:
    assert issubclass(SchemaError, MultitaskError)
    assert issubclass(SchemaError, ValueError)


def test_strict_rejects_dict_field_naming_its_path() -> None:
    with pytest.raises(SchemaError, match=r"dict fields are not supported by OpenAI strict") as e:
        strict_schema(schema_of(WithDict))
    assert e.value.path == "properties.counts"
    assert "(at properties.counts)" in str(e.value)


def test_strict_dict_field_path_inside_envelope() -> None:
    class Item(BaseModel):
        name: str
        tags: dict[str, int]

    with pytest.raises(SchemaError, match=r"tasks\.items\.properties\.tags"):
        strict_schema(envelope(Item))

    class Outer(BaseModel):
        item: Item

    with pytest.raises(SchemaError) as e:
        strict_schema(envelope(Outer))
    assert e.value.path == "$defs.Item.properties.tags"


@pytest.mark.parametrize(
    ("tp", "where", "message"),
    [
        (WithAnyDict, "properties.blob", "free-form objects"),
        (WithAny, "properties.anything", "any type"),
        (list[Any], "items", "any type"),
    ],
)
def test_strict_rejects_unconstrained_values(tp: Any, where: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as e:
        strict_schema(schema_of(tp))
    assert e.value.path == where


def test_strict_rejects_dangling_ref() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(SchemaError, match=r"'#/\$defs/Missing' points nowhere") as e:
        strict_schema(schema)
    assert e.value.path == "properties.a"


def test_strict_rejects_remote_ref() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://x/y.json"}}}
    with pytest.raises(SchemaError, match="only local references"):
        strict_schema(schema)


def test_strict_rejects_refs_to_nested_defs_not_at_root() -> None:
    """An item schema dropped into an envelope with its `$defs` still nested is an error."""
    item = schema_of(Holder)
    schema = {"type": "object", "properties": {"tasks": {"type": "array", "items": item}}}
    with pytest.raises(SchemaError, match="points nowhere") as e:
        strict_schema(schema)
    assert e.value.path == "properties.tasks.items.properties.root"


# -- gemini_schema: invariants -----------------------------------------------------------------

GEMINI_OK = [Task, Pets, Address, Point, Movie, Extra, Formats, OnlyDescribedRef]
GEMINI_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}
GEMINI_KEYS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "items",
    "properties",
    "required",
    "propertyOrdering",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
}


def assert_gemini(out: dict[str, Any]) -> None:
    for path, node in walk(out):
        assert set(node) <= GEMINI_KEYS, f"{path}: unexpected keys {set(node) - GEMINI_KEYS}"
        if "anyOf" in node:
            assert "type" not in node, path
            assert len(node["anyOf"]) > 1, path
        else:
            assert node["type"] in GEMINI_TYPES, path
        if "enum" in node:
            assert node["type"] == "STRING", path
            assert all(isinstance(value, str) for value in node["enum"]), path
        if node.get("type") == "OBJECT":
            assert node["properties"], path
            assert node["propertyOrdering"] == list(node["properties"]), path
            assert set(node["required"]) <= set(node["properties"]), path
        if node.get("type") == "ARRAY":
            assert "items" in node, path


@pytest.mark.parametrize("tp", GEMINI_OK, ids=lambda tp: tp.__name__)
def test_gemini_invariants(tp: Any) -> None:
    assert_gemini(gemini_schema(schema_of(tp)))


@pytest.mark.parametrize("tp", [Task, Pets, Point, Movie])
def test_gemini_envelope(tp: Any) -> None:
    out = gemini_schema(envelope(tp))
    assert_gemini(out)
    assert out["propertyOrdering"] == ["tasks"]
    assert out["required"] == ["tasks"]
    assert out["properties"]["tasks"]["type"] == "ARRAY"


# -- gemini_schema: details --------------------------------------------------------------------


def test_gemini_task_fields() -> None:
    out = gemini_schema(schema_of(Task))
    props = out["properties"]
    assert out["type"] == "OBJECT"
    assert out["propertyOrdering"] == list(Task.model_fields)
    assert out["required"] == ["title", "labels", "priority", "address"]
    assert props["title"] == {"type": "STRING"}
    assert props["note"] == {"type": "STRING", "nullable": True}
    assert props["done"] == {"type": "BOOLEAN"}
    assert props["labels"] == {"type": "ARRAY", "items": {"type": "STRING"}}
    assert props["priority"] == {"type": "STRING", "format": "enum", "enum": ["low", "high"]}
    assert props["color"] == {"type": "STRING", "format": "enum", "enum": ["red", "green"]}
    assert props["due"] == {"type": "STRING", "format": "date-time", "nullable": True}
    assert props["estimate"] == {"type": "INTEGER", "description": "Hours", "minimum": 0}
    address_fields = {
        "street": {"type": "STRING"},
        "city": {"type": "STRING"},
        "zip_code": {"type": "STRING", "nullable": True},
    }
    assert props["address"] == {
        "type": "OBJECT",
        "description": "Where the task happens",
        "properties": address_fields,
        "required": ["street", "city"],
        "propertyOrdering": ["street", "city", "zip_code"],
    }
    assert props["backup"]["description"] == "A second address, if any"
    assert props["backup"]["nullable"] is True
    assert props["backup"]["properties"] == address_fields
    tag = props["tags"]["items"]
    assert tag["description"] == "A label on a task."
    assert tag["propertyOrdering"] == ["name", "weight"]
    assert tag["properties"]["weight"] == {"type": "NUMBER"}


def test_gemini_unions() -> None:
    out = gemini_schema(schema_of(Pets))
    props = out["properties"]
    cat = {
        "type": "OBJECT",
        "properties": {
            "kind": {"type": "STRING", "format": "enum", "enum": ["cat"]},
            "lives": {"type": "INTEGER"},
        },
        "required": ["lives"],
        "propertyOrdering": ["kind", "lives"],
    }
    plain = props["plain"]
    assert "type" not in plain
    assert plain["anyOf"][0] == cat
    assert plain["anyOf"][1]["propertyOrdering"] == ["kind", "good"]
    # A discriminated union's tag must be present to validate, so it becomes required.
    tagged = props["tagged"]["anyOf"]
    assert [variant["required"] for variant in tagged] == [["kind", "lives"], ["kind", "good"]]
    maybe = props["maybe"]
    assert maybe["nullable"] is True
    assert len(maybe["anyOf"]) == 2


def test_gemini_formats_and_bounds() -> None:
    out = gemini_schema(schema_of(Formats))
    props = out["properties"]
    assert props["when"] == {"type": "STRING", "format": "date-time"}
    # Formats Gemini rejects are dropped, their intent kept as a hint.
    assert props["ident"] == {"type": "STRING", "description": "The id (format: uuid)"}
    assert props["day"] == {"type": "STRING", "description": "format: date"}
    # Exclusive integer bounds become the equivalent inclusive ones.
    assert props["positive"] == {"type": "INTEGER", "minimum": 1, "maximum": 9}
    # Exclusive number bounds have no exact equivalent and are dropped.
    assert props["ratio"] == {"type": "NUMBER", "maximum": 1}
    assert props["code"] == {
        "type": "STRING",
        "minLength": 2,
        "maxLength": 8,
        "pattern": "^[A-Z]+$",
    }
    assert props["many"] == {
        "type": "ARRAY",
        "minItems": 1,
        "maxItems": 5,
        "items": {"type": "INTEGER"},
    }


def test_gemini_dataclass_and_typeddict() -> None:
    point = gemini_schema(schema_of(Point))
    assert point["propertyOrdering"] == ["x", "y", "label"]
    assert point["required"] == ["x", "y"]
    assert point["properties"]["label"] == {"type": "STRING", "nullable": True}
    movie = gemini_schema(schema_of(Movie))
    assert movie == {
        "type": "OBJECT",
        "properties": {"title": {"type": "STRING"}, "year": {"type": "INTEGER"}},
        "required": ["title", "year"],
        "propertyOrdering": ["title", "year"],
    }


def test_gemini_nullable_literal_and_type_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"enum": ["x", None]},
            "b": {"type": ["integer", "null"]},
            "c": {"const": "only"},
        },
    }
    out = gemini_schema(schema)
    assert out["properties"] == {
        "a": {"type": "STRING", "format": "enum", "enum": ["x"], "nullable": True},
        "b": {"type": "INTEGER", "nullable": True},
        "c": {"type": "STRING", "format": "enum", "enum": ["only"]},
    }
    assert out["required"] == []


def test_gemini_same_model_twice_is_not_recursion() -> None:
    class Two(BaseModel):
        first: Address
        second: Address

    out = gemini_schema(schema_of(Two))
    assert out["properties"]["first"] == out["properties"]["second"]
    assert out["properties"]["first"]["type"] == "OBJECT"


# -- gemini_schema: errors ---------------------------------------------------------------------


@pytest.mark.parametrize("tp", [Node, Chain, Holder])
def test_gemini_rejects_recursive_models_naming_them(tp: Any) -> None:
    name = "Node" if tp is not Chain else "Chain"
    with pytest.raises(SchemaError, match=f"recursive model '{name}' cannot be expressed"):
        gemini_schema(schema_of(tp))


def test_gemini_recursion_error_names_the_path() -> None:
    with pytest.raises(SchemaError) as e:
        gemini_schema(envelope(Node))
    assert e.value.path == "properties.tasks.items.properties.children.items"


@pytest.mark.parametrize("tp", [WithDict, WithAnyDict])
def test_gemini_rejects_dict_fields(tp: Any) -> None:
    with pytest.raises(
        SchemaError, match="dict fields are not supported by Gemini's responseSchema"
    ):
        gemini_schema(schema_of(tp))


@pytest.mark.parametrize(
    ("tp", "where", "message"),
    [
        (WithTuple, "properties.pair", "tuples"),
        (WithIntLiteral, "properties.level", "only string enums and literals"),
        (WithAny, "properties.anything", "any type"),
        (list[Any], "items", "any type"),
    ],
)
def test_gemini_rejects_what_it_cannot_express(tp: Any, where: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as e:
        gemini_schema(schema_of(tp))
    assert e.value.path == where


def test_gemini_rejects_empty_objects_and_dangling_refs() -> None:
    class Empty(BaseModel):
        pass

    with pytest.raises(SchemaError, match="without fields"):
        gemini_schema(schema_of(Empty))
    with pytest.raises(SchemaError, match="points nowhere"):
        gemini_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}})


# -- lean_schema ---------------------------------------------------------------------------------


class _Street(BaseModel):
    line: str
    city: str = Field(title="Town")  # a title a user set


class _Tree(BaseModel):
    value: int
    children: list[_Tree] = []


class _Lean(BaseModel):
    """A record."""

    title: str  # a property named "title"
    xml_id: int = Field(description="the record's id")
    streets: list[_Street]
    home: _Street | None = None
    tree: _Tree | None = None
    tags: dict[str, int] = {}


class _Wrapped(BaseModel):
    tasks: list[_Lean]


def test_lean_schema_drops_made_up_titles_and_inlines_models_used_once() -> None:
    full = _Wrapped.model_json_schema()
    lean = lean_schema(full)
    record = lean["properties"]["tasks"]["items"]  # used once: in place
    assert "title" not in record
    assert record["description"] == "A record."
    assert set(record["properties"]) == {"title", "xml_id", "streets", "home", "tree", "tags"}
    assert record["properties"]["title"] == {"type": "string"}  # the property stays, untitled
    assert record["properties"]["xml_id"] == {"description": "the record's id", "type": "integer"}
    # _Street is used twice and _Tree refers to itself: both stay in $defs.
    assert set(lean["$defs"]) == {"_Street", "_Tree"}
    assert lean["$defs"]["_Street"]["properties"]["city"]["title"] == "Town"
    assert "title" not in lean["$defs"]["_Street"]["properties"]["line"]
    assert "title" not in lean["$defs"]["_Street"]
    assert len(json.dumps(lean)) < 0.85 * len(json.dumps(full))
    assert full == _Wrapped.model_json_schema()  # the input is not touched


_INSTANCES: list[Any] = [
    {"tasks": []},
    {"tasks": [{"title": "a", "xml_id": 1, "streets": []}]},
    {
        "tasks": [
            {
                "title": "a",
                "xml_id": 1,
                "streets": [{"line": "x", "city": "y"}],
                "home": {"line": "h", "city": "c"},
                "tree": {"value": 1, "children": [{"value": 2, "children": []}]},
                "tags": {"k": 1},
            }
        ]
    },
    {"tasks": [{"title": 1, "xml_id": 1, "streets": []}]},  # wrong type
    {"tasks": [{"title": "a", "streets": []}]},  # missing
    {"tasks": [{"title": "a", "xml_id": 1, "streets": [{"line": "x"}]}]},  # nested missing
    {"tasks": [{"title": "a", "xml_id": 1, "streets": [], "tree": {"value": "v"}}]},
    {"tasks": [{"title": "a", "xml_id": 1, "streets": [], "tags": {"k": "v"}}]},
    {"tasks": [{"title": "a", "xml_id": 1, "streets": [], "home": None}]},
    {"tasks": "no"},
]


@pytest.mark.parametrize("instance", _INSTANCES)
def test_lean_schema_accepts_exactly_what_the_full_one_does(instance: Any) -> None:
    full = _Wrapped.model_json_schema()
    check = jsonschema.Draft202012Validator
    assert check(lean_schema(full)).is_valid(instance) == check(full).is_valid(instance)


def test_a_lean_schema_is_still_one_for_openai_strict_mode_and_gemini() -> None:
    class Record(BaseModel):
        name: str
        streets: list[_Street]
        tree: _Tree | None = None

    class Records(BaseModel):
        tasks: list[Record]

    lean = lean_schema(Records.model_json_schema())
    jsonschema.Draft202012Validator.check_schema(strict_schema(lean))
    flat = lean_schema(MultiTask(_Street).model_json_schema())  # Gemini: no recursion
    street = gemini_schema(flat)["properties"]["tasks"]["items"]
    assert street["properties"] == {"line": {"type": "STRING"}, "city": {"type": "STRING"}}
    assert street["required"] == ["line", "city"]


def test_lean_schema_keeps_the_models_a_discriminator_names() -> None:
    class Cat(BaseModel):
        kind: Literal["cat"]

    class Dog(BaseModel):
        kind: Literal["dog"]

    class Pets(BaseModel):
        tasks: list[Annotated[Cat | Dog, Field(discriminator="kind")]]

    lean = lean_schema(Pets.model_json_schema())
    assert set(lean["$defs"]) == {"Cat", "Dog"}
    mapping = lean["properties"]["tasks"]["items"]["discriminator"]["mapping"]
    assert all(ref.removeprefix("#/$defs/") in lean["$defs"] for ref in mapping.values())
