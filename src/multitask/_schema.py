"""Turn pydantic JSON schemas into the dialects LLM providers accept.

Pydantic writes standard JSON Schema (draft 2020-12). Providers accept only subsets of it:

* OpenAI Structured Outputs with `strict: true` wants every object closed
  (`additionalProperties: false`) with every property listed in `required`, no `oneOf`, no
  `default`, and no keyword beside a `$ref`. `strict_schema` rewrites a schema that way.
* `lean_schema` drops what a model does not need and every request would pay for: the titles
  pydantic makes up (a property's from its name, a model's from its class name) and the
  `$defs` entries referred to once (written in place instead). Descriptions, titles a user
  set, and every keyword that changes which values are valid stay.
* Google Gemini's `responseSchema` is a subset of the OpenAPI 3.0 Schema object: no `$ref`,
  upper-case type names, `nullable` instead of a union with null. `gemini_schema` converts to it.

Both are pure functions: they build a new dict and never touch their input. Whatever cannot be
expressed faithfully raises `SchemaError`, whose message names the place in the schema as dotted
keys (`properties.tasks.items.properties.tags`), rather than being silently loosened.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

from multitask._exceptions import MultitaskError

__all__ = ["SchemaError", "gemini_schema", "lean_schema", "strict_schema"]

_Path = tuple[str, ...]

_DEFS_KEYS = ("$defs", "definitions")
# Keywords that only annotate a schema; they never change which values it accepts.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)
# A schema with none of these accepts any JSON value at all (pydantic's `Any`).
_CONSTRAINING = frozenset({"type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const", "not"})


class SchemaError(MultitaskError, ValueError):
    """A JSON schema uses something the target provider cannot express.

    `path` is where, as dotted keys from the schema's root (`<root>` for the root itself).
    """

    def __init__(self, message: str, *, path: str = "<root>") -> None:
        super().__init__(message)
        self.path = path


# -- shared helpers --------------------------------------------------------------------------


def _where(path: _Path) -> str:
    return ".".join(path) if path else "<root>"


def _fail(path: _Path, message: str) -> SchemaError:
    where = _where(path)
    return SchemaError(f"{message} (at {where})", path=where)


def _as_schema(node: object, path: _Path) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _fail(path, f"expected a schema object, got {type(node).__name__} {node!r}")
    return node


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _ref_name(ref: str) -> str:
    """The model name a `$ref` points at: its last JSON-pointer segment."""
    return _unescape(ref.rsplit("/", 1)[-1]) or "<root>"


def _resolve(root: dict[str, Any], ref: object, path: _Path) -> dict[str, Any]:
    """Follow a local `$ref` (a JSON pointer such as `#/$defs/Item`) from the schema's root."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        raise _fail(path, f"only local references ('#/...') are supported, got $ref {ref!r}")
    target: object = root
    for token in ref[2:].split("/") if ref != "#" else ():
        key = _unescape(token)
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            raise _fail(path, f"$ref {ref!r} points nowhere: there is no {key!r} on its path")
    if not isinstance(target, dict):
        raise _fail(path, f"$ref {ref!r} does not point to a schema object")
    return target


def _children(node: dict[str, Any]) -> Iterator[Any]:
    """Every sub-schema directly inside `node` (not inside `enum`, `const` or other values)."""
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        table = node.get(key)
        if isinstance(table, dict):
            yield from table.values()
    for key in ("items", "additionalProperties", "not", "contains", "if", "then", "else"):
        value = node.get(key)
        if isinstance(value, dict):
            yield value
        elif key == "items" and isinstance(value, list):
            yield from value
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        value = node.get(key)
        if isinstance(value, list):
            yield from value


def _refs_in(node: object) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(_children(current))
    return found


def _prune_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` keeping only the root definitions some `$ref` still reaches."""
    tables = {key: schema[key] for key in _DEFS_KEYS if isinstance(schema.get(key), dict)}
    if not tables:
        return schema
    keep: set[tuple[str, str]] = set()
    pending = list(_refs_in({k: v for k, v in schema.items() if k not in tables}))
    while pending:
        ref = pending.pop()
        for key, table in tables.items():
            prefix = f"#/{key}/"
            if not ref.startswith(prefix):
                continue
            name = _unescape(ref[len(prefix) :].split("/", 1)[0])
            if name in table and (key, name) not in keep:
                keep.add((key, name))
                pending.extend(_refs_in(table[name]))
    pruned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in tables:
            kept = {name: sub for name, sub in value.items() if (key, name) in keep}
            if kept:
                pruned[key] = kept
        else:
            pruned[key] = value
    return pruned


def _renamed(schema: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy of `schema` with key `old` renamed to `new`, in the same position."""
    return {(new if key == old else key): value for key, value in schema.items()}


def _is_object(schema: dict[str, Any]) -> bool:
    type_ = schema.get("type")
    if type_ is None:
        return "properties" in schema
    return type_ == "object" or (isinstance(type_, list) and "object" in type_)


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" and _CONSTRAINING.isdisjoint(set(schema) - {"type"})


# -- OpenAI strict mode ----------------------------------------------------------------------


def lean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without pydantic's automatic titles, its single-use definitions in place."""
    lean: dict[str, Any] = _drop_auto_titles(_inline_single_use(schema), None, None)
    return lean


def _auto_title(name: str) -> str:
    """The title pydantic gives a property of this name (`xml_id` -> "Xml Id")."""
    return name.title().replace("_", " ").strip()


def _drop_auto_titles(node: Any, prop: str | None, definition: str | None) -> Any:
    """A copy of the schema `node` without titles pydantic made up: a property's (`prop`, its
    name) and a definition's (`definition`, its key: the model's class name)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            if (prop is not None and value == _auto_title(prop)) or value == definition:
                continue
            out[key] = value
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            named = key == "properties"
            out[key] = {
                k: _drop_auto_titles(v, k if named else None, None) for k, v in value.items()
            }
        elif key in _DEFS_KEYS and isinstance(value, dict):
            out[key] = {k: _drop_auto_titles(v, None, k) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "contains", "if", "then", "else"):
            if isinstance(value, list):
                out[key] = [_drop_auto_titles(v, None, None) for v in value]
            else:
                out[key] = _drop_auto_titles(value, None, None)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [_drop_auto_titles(v, None, None) for v in value]
        else:
            out[key] = value  # data (enum, const, default, examples, required, ...)
    return out


def _inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each root `$defs` entry that one `$ref` alone refers to, and that does not
    refer back to itself, written in place of that `$ref` (a model used once needs no name)."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict) or not defs:
        return schema
    uses: dict[str, int] = {}

    def count(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = _unescape(ref[len("#/$defs/") :])
                uses[name] = uses.get(name, 0) + 1
            discriminator = node.get("discriminator")
            mapping = discriminator.get("mapping") if isinstance(discriminator, dict) else None
            if isinstance(mapping, dict):  # refers by name too: keep those definitions
                for target in mapping.values():
                    if isinstance(target, str) and target.startswith("#/$defs/"):
                        name = _unescape(target[len("#/$defs/") :])
                        uses[name] = uses.get(name, 0) + 2
            for child in _children(node):
                count(child)

    count(schema)  # the definitions' own refs included: `_children` walks `$defs`
    reaches = {name: _reachable(defs, name) for name in defs}
    inline = {n for n in defs if uses.get(n) == 1 and n not in reaches[n] and "/" not in n}
    if not inline:
        return schema

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = _unescape(ref[len("#/$defs/") :])
            if name in inline:
                siblings = {k: v for k, v in node.items() if k != "$ref"}
                inlined = rewrite(defs[name])
                if inlined.get("title") == name:  # the class name pydantic titled it with
                    del inlined["title"]
                return inlined | siblings  # a field's own description wins
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$defs" and node is schema:
                continue
            if key in ("properties", "patternProperties", *_DEFS_KEYS) and isinstance(value, dict):
                out[key] = {k: rewrite(v) for k, v in value.items()}
            elif key in _SUBSCHEMA_KEYS:
                out[key] = rewrite(value)
            else:
                out[key] = value
        return out

    lean = rewrite(schema)
    kept = {name: rewrite(sub) for name, sub in defs.items() if name not in inline}
    if kept:
        lean["$defs"] = kept
    return _prune_defs(lean) if kept else lean


#: The keywords whose values are schemas (or lists of them), beside the named tables.
_SUBSCHEMA_KEYS = frozenset(
    {"items", "additionalProperties", "not", "contains", "if", "then", "else"}
    | {"anyOf", "oneOf", "allOf", "prefixItems"}
)


def _reachable(defs: dict[str, Any], start: str) -> set[str]:
    """The definitions that `defs[start]` refers to, directly or through others."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        for ref in _refs_in(defs.get(pending.pop(), {})):
            if ref.startswith("#/$defs/"):
                name = _unescape(ref[len("#/$defs/") :])
                if name not in seen:
                    seen.add(name)
                    pending.append(name)
    return seen


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `schema` that OpenAI Structured Outputs accepts with `strict: true`.

    Strict mode constrains decoding, so it needs closed objects whose keys are all required
    (pydantic already writes optional fields as a union with null, so they stay optional in
    meaning), `anyOf` instead of `oneOf`, no `default`, and a `$ref` with no keyword beside it.
    A `$ref` carrying a description is replaced by the definition it names, merged with the
    description; bare `$ref`s, recursive ones included, are kept along with their `$defs`.
    Definitions nothing refers to any longer are dropped.

    Raises `SchemaError` for what strict mode cannot express: dict fields (an object whose
    `additionalProperties` is a schema), free-form objects, `Any` values, and `$ref`s that
    point nowhere.
    """
    # Work on a private copy, so the result shares no list (enum, examples) with the input.
    root = _prune_defs(copy.deepcopy(_as_schema(schema, ())))
    return _prune_defs(_Strict(root).convert(root, (), frozenset({"#"})))


class _Strict:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def convert(self, raw: object, path: _Path, expanding: frozenset[str]) -> dict[str, Any]:
        """Convert one schema; `expanding` holds the refs being inlined above it, to stop loops."""
        schema = dict(_as_schema(raw, path))
        tables = {key: schema.pop(key) for key in _DEFS_KEYS if key in schema}
        out = self._body(schema, path, expanding)
        for key, table in tables.items():
            if not isinstance(table, dict):
                raise _fail((*path, key), f"{key} must map names to schemas")
            pointer = "#/" + "/".join(_escape(part) for part in (*path, key))
            out[key] = {
                name: self.convert(
                    sub, (*path, key, name), frozenset({f"{pointer}/{_escape(name)}"})
                )
                for name, sub in table.items()
            }
        return out

    def _body(
        self, schema: dict[str, Any], path: _Path, expanding: frozenset[str]
    ) -> dict[str, Any]:
        # Strict mode accepts no defaults; a field with a default is still in `required`.
        schema.pop("default", None)
        schema.pop("discriminator", None)

        if "allOf" in schema:
            all_of = schema.pop("allOf")
            if not isinstance(all_of, list) or not all_of:
                raise _fail((*path, "allOf"), "allOf must be a non-empty list")
            if len(all_of) == 1:
                entry = _as_schema(all_of[0], (*path, "allOf", "0"))
                return self.convert({**entry, **schema}, path, expanding)
            schema["allOf"] = [
                self.convert(entry, (*path, "allOf", str(i)), expanding)
                for i, entry in enumerate(all_of)
            ]

        if "$ref" in schema:
            ref = schema.pop("$ref")
            target = _resolve(self.root, ref, path)
            # A bare ref stays, except at the root, which must be an object. A ref already being
            # inlined above (recursion) stays bare too, dropping its annotations (description).
            if (not schema and path) or ref in expanding:
                return {"$ref": ref}
            merged = {key: value for key, value in target.items() if key not in _DEFS_KEYS}
            merged.update(schema)  # the site's own keywords (its description) win
            return self.convert(merged, path, expanding | {ref})

        if "oneOf" in schema:
            if "anyOf" in schema:
                raise _fail(path, "a schema with both oneOf and anyOf cannot be expressed")
            schema = _renamed(schema, "oneOf", "anyOf")
        if "anyOf" in schema:
            variants = schema["anyOf"]
            if not isinstance(variants, list) or not variants:
                raise _fail((*path, "anyOf"), "anyOf must be a non-empty list")
            schema["anyOf"] = [
                self.convert(variant, (*path, "anyOf", str(i)), expanding)
                for i, variant in enumerate(variants)
            ]

        if _is_object(schema):
            self._close_object(schema, path, expanding)

        items = schema.get("items")
        if isinstance(items, dict):
            schema["items"] = self.convert(items, (*path, "items"), expanding)
        elif isinstance(items, list):
            schema["items"] = [
                self.convert(item, (*path, "items", str(i)), expanding)
                for i, item in enumerate(items)
            ]
        prefix_items = schema.get("prefixItems")
        if isinstance(prefix_items, list):
            schema["prefixItems"] = [
                self.convert(item, (*path, "prefixItems", str(i)), expanding)
                for i, item in enumerate(prefix_items)
            ]

        if _CONSTRAINING.isdisjoint(schema):
            raise _fail(
                path,
                "a value of any type (typing.Any, or a list of Any) cannot be expressed in "
                "OpenAI strict mode: give the field a concrete type",
            )
        return schema

    def _close_object(self, schema: dict[str, Any], path: _Path, expanding: frozenset[str]) -> None:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) or "patternProperties" in schema:
            raise _fail(
                path,
                "dict fields are not supported by OpenAI strict mode, which needs every object "
                "closed (additionalProperties: false) with fixed keys; use a list of key/value "
                "models instead",
            )
        properties = schema.get("properties")
        if properties is None:
            if extra is not False:
                raise _fail(
                    path,
                    "free-form objects (dict or dict[str, Any] fields) are not supported by "
                    "OpenAI strict mode, which needs every object's keys declared",
                )
            properties = {}
        if not isinstance(properties, dict):
            raise _fail((*path, "properties"), "properties must map names to schemas")
        schema["properties"] = {
            name: self.convert(sub, (*path, "properties", name), expanding)
            for name, sub in properties.items()
        }
        schema["required"] = list(properties)
        # `extra="allow"` models say true here; strict mode only takes false.
        schema["additionalProperties"] = False


# -- Gemini responseSchema -------------------------------------------------------------------

_GEMINI_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object"})
# The `format` values Gemini's API accepts, per type; others become a hint in the description.
_GEMINI_FORMATS: dict[str, frozenset[str]] = {
    "string": frozenset({"date-time"}),
    "number": frozenset({"float", "double"}),
    "integer": frozenset({"int32", "int64"}),
}
_GEMINI_KEEP: dict[str, tuple[str, ...]] = {
    "number": ("minimum", "maximum"),
    "integer": ("minimum", "maximum"),
    "string": ("minLength", "maxLength", "pattern"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return `schema` as the OpenAPI-style `Schema` Gemini's `responseSchema` accepts.

    Gemini has no `$ref`, so every reference is inlined; a union with null becomes `nullable`;
    type names are upper case; every object gets `propertyOrdering` in declaration order, so
    the model writes fields in the order the model class declares them. Keywords Gemini does
    not know (`title`, `default`, `additionalProperties: false`, `discriminator`, formats
    other than the few it accepts) are dropped, a string `const` becomes a one-value `enum`.

    Raises `SchemaError` for what cannot be expressed safely: recursive models, dict fields,
    tuples, non-string enums and literals, `Any` values, and objects without fields.
    """
    root = copy.deepcopy(_as_schema(schema, ()))
    return _Gemini(root).convert(root, (), ())


def _require_tag(variant: dict[str, Any], tag: str | None) -> dict[str, Any]:
    """Make a discriminated union's tag field required in one (converted) variant.

    Pydantic gives a `Literal` tag a default, so it is not in `required`, yet validating a
    discriminated union needs the tag present: Gemini must not leave it out.
    """
    properties = variant.get("properties")
    if tag is None or not isinstance(properties, dict) or tag not in properties:
        return variant
    required = set(variant.get("required", ())) | {tag}
    variant["required"] = [name for name in properties if name in required]
    return variant


class _Gemini:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def convert(self, raw: object, path: _Path, expanding: tuple[str, ...]) -> dict[str, Any]:
        """Convert one schema; `expanding` holds the refs being inlined above it."""
        schema = {k: v for k, v in _as_schema(raw, path).items() if k not in _DEFS_KEYS}

        if "allOf" in schema:
            all_of = schema.pop("allOf")
            if not isinstance(all_of, list) or len(all_of) != 1:
                raise _fail(
                    (*path, "allOf"),
                    "allOf with several entries cannot be expressed in Gemini's responseSchema",
                )
            entry = _as_schema(all_of[0], (*path, "allOf", "0"))
            return self.convert({**entry, **schema}, path, expanding)

        if "$ref" in schema:
            ref = schema.pop("$ref")
            target = _resolve(self.root, ref, path)
            if ref in expanding:
                raise _fail(
                    path,
                    f"recursive model {_ref_name(ref)!r} cannot be expressed in Gemini's "
                    "responseSchema, which has no references to point back with",
                )
            merged = {key: value for key, value in target.items() if key not in _DEFS_KEYS}
            merged.update(schema)  # the site's own keywords (its description) win
            return self.convert(merged, path, (*expanding, ref))

        discriminator = schema.pop("discriminator", None)
        tag = discriminator.get("propertyName") if isinstance(discriminator, dict) else None
        if "oneOf" in schema:
            if "anyOf" in schema:
                raise _fail(path, "a schema with both oneOf and anyOf cannot be expressed")
            schema = _renamed(schema, "oneOf", "anyOf")
        if "anyOf" in schema:
            return self._union(schema, path, expanding, tag if isinstance(tag, str) else None)
        return self._typed(schema, path, expanding, nullable=False)

    def _union(
        self, schema: dict[str, Any], path: _Path, expanding: tuple[str, ...], tag: str | None
    ) -> dict[str, Any]:
        variants = schema.pop("anyOf")
        if not isinstance(variants, list) or not variants:
            raise _fail((*path, "anyOf"), "anyOf must be a non-empty list")
        nullable = False
        kept: list[tuple[int, dict[str, Any]]] = []
        for i, variant in enumerate(variants):
            variant = _as_schema(variant, (*path, "anyOf", str(i)))
            if _is_null(variant):
                nullable = True
            else:
                kept.append((i, variant))
        if not kept:
            raise _fail(path, "a value that can only be null cannot be expressed for Gemini")
        if len(kept) == 1:
            # `X | None`: X itself, marked nullable; the site's description wins over X's.
            out = _require_tag(self.convert({**kept[0][1], **schema}, path, expanding), tag)
            if nullable:
                out["nullable"] = True
            return out
        others = set(schema) - _ANNOTATIONS
        if others:
            raise _fail(path, f"anyOf beside {sorted(others)} cannot be expressed for Gemini")
        out = {}
        if isinstance(schema.get("description"), str):
            out["description"] = schema["description"]
        out["anyOf"] = [
            _require_tag(self.convert(v, (*path, "anyOf", str(i)), expanding), tag) for i, v in kept
        ]
        if nullable:
            out["nullable"] = True
        return out

    def _typed(
        self, schema: dict[str, Any], path: _Path, expanding: tuple[str, ...], *, nullable: bool
    ) -> dict[str, Any]:
        type_ = schema.get("type")
        if isinstance(type_, list):
            names = [name for name in type_ if name != "null"]
            nullable = nullable or len(names) < len(type_)
            if len(names) != 1:
                raise _fail(path, f"a value of types {type_} cannot be expressed for Gemini")
            type_ = names[0]

        values: list[Any] | None = None
        if "const" in schema:
            values = [schema["const"]]
        elif "enum" in schema:
            if not isinstance(schema["enum"], list):
                raise _fail((*path, "enum"), "enum must be a list")
            values = list(schema["enum"])
        if values is not None:
            if None in values:
                nullable = True
                values = [value for value in values if value is not None]
            if not values or not all(isinstance(value, str) for value in values):
                raise _fail(
                    path,
                    f"only string enums and literals can be expressed in Gemini's "
                    f"responseSchema, got {values!r}",
                )
            if type_ is None:
                type_ = "string"

        if type_ is None:
            if "properties" in schema:
                type_ = "object"
            elif "items" in schema or "prefixItems" in schema:
                type_ = "array"
            else:
                raise _fail(
                    path,
                    "a value of any type (typing.Any, or a list of Any) cannot be expressed in "
                    "Gemini's responseSchema: give the field a concrete type",
                )
        if type_ == "null":
            raise _fail(path, "a value that can only be null cannot be expressed for Gemini")
        if type_ not in _GEMINI_TYPES:
            raise _fail(path, f"unknown type {type_!r}")
        if values is not None and type_ != "string":
            raise _fail(path, f"only string enums can be expressed for Gemini, got {type_}")

        out: dict[str, Any] = {"type": type_.upper()}
        description = schema.get("description")
        if isinstance(description, str):
            out["description"] = description
        format_ = schema.get("format")
        if values is not None:
            out["format"] = "enum"
            out["enum"] = values
        elif isinstance(format_, str):
            if format_ in _GEMINI_FORMATS.get(type_, ()):
                out["format"] = format_
            else:
                # Gemini rejects other formats; keep the intent as a hint to the model.
                hint = f"format: {format_}"
                out["description"] = f"{description} ({hint})" if description else hint
        if nullable:
            out["nullable"] = True
        for key in _GEMINI_KEEP.get(type_, ()):
            if key in schema:
                out[key] = schema[key]

        if type_ == "integer":
            self._integer_bounds(schema, out)
        elif type_ == "array":
            self._array(schema, out, path, expanding)
        elif type_ == "object":
            self._object(schema, out, path, expanding)
        return out

    @staticmethod
    def _integer_bounds(schema: dict[str, Any], out: dict[str, Any]) -> None:
        """Gemini has no exclusive bounds; for integers `> n` is exactly `>= floor(n) + 1`."""
        low = schema.get("exclusiveMinimum")
        if isinstance(low, (int, float)) and not isinstance(low, bool):
            bound = math.floor(low) + 1
            out["minimum"] = max(bound, out.get("minimum", bound))
        high = schema.get("exclusiveMaximum")
        if isinstance(high, (int, float)) and not isinstance(high, bool):
            bound = math.ceil(high) - 1
            out["maximum"] = min(bound, out.get("maximum", bound))

    def _array(
        self, schema: dict[str, Any], out: dict[str, Any], path: _Path, expanding: tuple[str, ...]
    ) -> None:
        if "prefixItems" in schema or isinstance(schema.get("items"), list):
            raise _fail(
                path,
                "tuples (fixed-position arrays, prefixItems) are not supported by Gemini's "
                "responseSchema; use a model with named fields instead",
            )
        if "items" not in schema:
            raise _fail(path, "an array of any values cannot be expressed for Gemini")
        out["items"] = self.convert(schema["items"], (*path, "items"), expanding)

    def _object(
        self, schema: dict[str, Any], out: dict[str, Any], path: _Path, expanding: tuple[str, ...]
    ) -> None:
        extra = schema.get("additionalProperties")
        properties = schema.get("properties")
        if (
            isinstance(extra, dict)
            or "patternProperties" in schema
            or (properties is None and extra is not False)
        ):
            raise _fail(
                path,
                "dict fields are not supported by Gemini's responseSchema, which only knows "
                "objects with declared properties; use a list of key/value models instead",
            )
        if not isinstance(properties, dict) or not properties:
            raise _fail(
                path, "an object without fields cannot be expressed in Gemini's responseSchema"
            )
        out["properties"] = {
            name: self.convert(sub, (*path, "properties", name), expanding)
            for name, sub in properties.items()
        }
        required = schema.get("required", [])
        if not isinstance(required, list):
            raise _fail((*path, "required"), "required must be a list")
        out["required"] = [name for name in required if name in properties]
        out["propertyOrdering"] = list(properties)
