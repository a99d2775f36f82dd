"""The classic API: `MultiTask(T)` makes the `Multi{Name}` model with `tasks: list[T]`, and
`MultiTaskModel` gives it its schemas and parsers.

It reads an SDK's finished response or stream too (`from_response`,
`from_streaming_response`); what those look like for each provider is in
`_providers._answers`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Protocol,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    is_typeddict,
)

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from ._align import Aligner
from ._exceptions import MalformedOutputError
from ._extraction import Extraction
from ._providers._answers import finished_answer, stream_decoder
from ._providers._base import ProviderDecoder
from ._schema import SchemaError, lean_schema, strict_schema
from ._validation import OnInvalid

__all__ = ["MultiTask", "MultiTaskModel", "task_name"]

T = TypeVar("T")
R = TypeVar("R")


class _classproperty(Generic[R]):
    """A read-only property of the class, computed once per class."""

    def __init__(self, fget: Callable[[Any], R]) -> None:
        self.fget = fget
        self.__doc__ = fget.__doc__
        self.name = fget.__name__

    def __get__(self, instance: object, owner: type[Any]) -> R:
        cache = owner.__dict__.get("_multitask_cache")
        if cache is None:
            cache = {}
            owner._multitask_cache = cache
        if self.name not in cache:
            cache[self.name] = self.fget(owner)
        return cast(R, cache[self.name])


class _MultiClass(Protocol):
    """A `Multi{Name}` class as its class properties read it: their first parameter is the
    class, typed by this protocol (pyright checks any other type there as a `self`'s)."""

    __name__: str
    __doc__: str | None
    item_type: Any
    task_name: str
    openai_schema: dict[str, Any]
    openai_strict_schema: dict[str, Any]
    item_adapter: TypeAdapter[Any]

    def model_json_schema(self) -> dict[str, Any]:
        """Pydantic's JSON schema of the class."""
        ...


class MultiTaskModel(BaseModel, Generic[T]):
    """Base of every `Multi{Name}` class: `tasks: list[T]`, plus schemas and stream parsers."""

    model_config = ConfigDict(ignored_types=(_classproperty,))

    tasks: list[T]

    #: The item type `T`.
    item_type: ClassVar[Any]
    #: `T`'s name as used in the schema's texts.
    task_name: ClassVar[str]

    # -- schemas -------------------------------------------------------------------------------

    @_classproperty
    def openai_schema(cls: _MultiClass) -> dict[str, Any]:
        """The function definition for OpenAI's legacy `functions=[...]` parameter (its
        parameters lean: no titles pydantic made up, models used once in place)."""
        schema = lean_schema(cls.model_json_schema())
        parameters = {k: v for k, v in schema.items() if k not in ("title", "description")}
        parameters.setdefault("required", ["tasks"])
        return {
            "name": cls.__name__,
            "description": schema.get("description") or cls.__doc__ or "",
            "parameters": parameters,
        }

    @_classproperty
    def openai_tool(cls: _MultiClass) -> dict[str, Any]:
        """The tool definition for OpenAI's `tools=[...]` parameter."""
        return {"type": "function", "function": cls.openai_schema}

    @_classproperty
    def openai_strict_schema(cls: _MultiClass) -> dict[str, Any]:
        """The parameters schema in the form OpenAI structured outputs accept (`strict: true`)."""
        return strict_schema(cls.openai_schema["parameters"])

    @_classproperty
    def openai_strict_tool(cls: _MultiClass) -> dict[str, Any]:
        """A `strict: true` tool definition for `tools=[...]`."""
        schema = cls.openai_schema
        return {
            "type": "function",
            "function": {
                "name": schema["name"],
                "description": schema["description"],
                "parameters": cls.openai_strict_schema,
                "strict": True,
            },
        }

    @_classproperty
    def openai_response_format(cls: _MultiClass) -> dict[str, Any]:
        """The `response_format` for OpenAI structured outputs (JSON in the message content)."""
        schema = cls.openai_schema
        return {
            "type": "json_schema",
            "json_schema": {
                "name": schema["name"],
                "description": schema["description"],
                "schema": cls.openai_strict_schema,
                "strict": True,
            },
        }

    @_classproperty
    def anthropic_schema(cls: _MultiClass) -> dict[str, Any]:
        """The tool definition for Anthropic's `tools=[...]` parameter."""
        schema = cls.openai_schema
        return {
            "name": schema["name"],
            "description": schema["description"],
            "input_schema": schema["parameters"],
        }

    @_classproperty
    def item_function(cls: _MultiClass) -> dict[str, Any]:
        """One item as a function definition, for `mode="parallel_tools"` (one call per item).

        Its name is the item type's; its parameters are the item's own schema, which must be an
        object (a model, dataclass or TypedDict).
        """
        schema = lean_schema(cls.item_adapter.json_schema())
        if schema.get("type") != "object" and "$ref" not in schema:
            raise SchemaError(
                f"mode='parallel_tools' needs object items (a model, dataclass or TypedDict); "
                f"{cls.task_name} is not one"
            )
        if "$ref" in schema:  # a model that refers to itself: the root is a $ref into $defs
            defs = schema.get("$defs", {})
            root = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
            schema = {**root, "$defs": defs}
        description = schema.pop("description", None) or f"Record one `{cls.task_name}`."
        schema.pop("title", None)
        return {"name": cls.task_name, "description": description, "parameters": schema}

    @_classproperty
    def item_adapter(cls: _MultiClass) -> TypeAdapter[Any]:
        """The `TypeAdapter` that validates one item."""
        return TypeAdapter(cls.item_type)

    @_classproperty
    def scalar_items(cls: _MultiClass) -> bool:
        """Whether an item may be a string or number rather than an object."""
        return not _object_like(cls.item_type)

    # -- reading answers -----------------------------------------------------------------------

    @classmethod
    def extraction(
        cls,
        decoder: ProviderDecoder,
        *,
        on_invalid: OnInvalid = "raise",
        validation_context: Any = None,
        text: str | None = None,
        aligner: Aligner | None = None,
        **limits: int,
    ) -> Extraction[T]:
        """A sans-IO `Extraction` of this class's items from a stream read by `decoder`.

        With the `text` the model read (or an `Aligner` over it), `multitask.Quote` fields
        are grounded in it (see `Pipeline`)."""
        return Extraction(
            cls.item_adapter,
            decoder,
            on_invalid=on_invalid,
            validation_context=validation_context,
            scalar_items=cls.scalar_items,
            text=text,
            aligner=aligner,
            **limits,
        )

    @classmethod
    def from_response(
        cls,
        completion: Any,
        *,
        validation_context: Any = None,
        on_invalid: OnInvalid = "raise",
        text: str | None = None,
    ) -> MultiTaskModel[T]:
        """Build an instance from a finished response.

        Takes an OpenAI `ChatCompletion` (SDK object or dict; the answer in `tool_calls`,
        `function_call` or JSON `content`) or an Anthropic `Message` (a `tool_use` block, or
        JSON text). Raises `IncompleteOutputError` for a cut-off answer, `RefusalError` for a
        refusal, `MalformedOutputError` when it holds no answer. `text`: the text the model
        was given, to ground `multitask.Quote` fields in.
        """
        decoder, answer = finished_answer(_as_dict(completion))
        extraction = cls.extraction(
            decoder, on_invalid=on_invalid, validation_context=validation_context, text=text
        )
        items = extraction.feed_text(answer) if answer else []
        items += extraction.close()
        extraction.raise_for_outcome()
        return cls.model_construct(tasks=items)

    @classmethod
    def from_streaming_response(
        cls,
        chunks: Iterable[Any],
        *,
        validation_context: Any = None,
        on_invalid: OnInvalid = "raise",
        text: str | None = None,
    ) -> Iterator[T]:
        """Yield each validated item from a stream of chunks, the moment it is complete.

        Chunks are OpenAI `ChatCompletionChunk`s or Anthropic stream events, as SDK objects
        or dicts. After the last item, raises if the answer was cut off or refused. `text`:
        the text the model was given, to ground `multitask.Quote` fields in.
        """
        extraction: Extraction[T] | None = None
        for chunk in chunks:
            payload = _as_dict(chunk)
            if extraction is None:
                extraction = cls.extraction(
                    stream_decoder(payload),
                    on_invalid=on_invalid,
                    validation_context=validation_context,
                    text=text,
                )
            yield from extraction.feed_payload(payload)
        if extraction is None:
            raise MalformedOutputError("the stream was empty")
        yield from extraction.close()
        extraction.raise_for_outcome()

    @classmethod
    async def from_streaming_response_async(
        cls,
        chunks: AsyncIterable[Any],
        *,
        validation_context: Any = None,
        on_invalid: OnInvalid = "raise",
        text: str | None = None,
    ) -> AsyncIterator[T]:
        """The async form of `from_streaming_response`."""
        extraction: Extraction[T] | None = None
        async for chunk in chunks:
            payload = _as_dict(chunk)
            if extraction is None:
                extraction = cls.extraction(
                    stream_decoder(payload),
                    on_invalid=on_invalid,
                    validation_context=validation_context,
                    text=text,
                )
            for item in extraction.feed_payload(payload):
                yield item
        if extraction is None:
            raise MalformedOutputError("the stream was empty")
        for item in extraction.close():
            yield item
        extraction.raise_for_outcome()


def MultiTask(
    subtask_class: Any,
    name: str | None = None,
    description: str | None = None,
) -> type[MultiTaskModel[Any]]:
    """Make the `Multi{Name}` model: one field, `tasks: list[T]`, with schemas and parsers.

    `subtask_class` may be a pydantic model, a union of models (discriminated or not), a
    dataclass, a TypedDict, or any type pydantic validates, such as `str`.
    """
    item_name = name or task_name(subtask_class)
    doc = description or f"Correct segmentation of `{item_name}` tasks"
    # A value, not a type form (it is built at run time): named before `create_model` sees it.
    tasks_type = list[subtask_class]
    # `MultiStr`, not `Multistr`: the class name is CamelCase whatever the item's name.
    model = create_model(
        f"Multi{item_name[:1].upper()}{item_name[1:]}",
        __base__=MultiTaskModel[subtask_class],
        __doc__=doc,
        tasks=(
            tasks_type,
            Field(description=f"Correctly segmented list of `{item_name}` tasks"),
        ),
    )
    model.item_type = subtask_class
    model.task_name = item_name
    return model


def task_name(tp: Any) -> str:
    """The name of an item type: `User`, or `AOrB` for a union, `str` for `str`."""
    origin = get_origin(tp)
    if origin is Annotated:
        return task_name(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return "Or".join(task_name(arg) for arg in get_args(tp) if arg is not type(None))
    if origin is not None:
        args = "".join(task_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', 'Type').capitalize()}{args}"
    return str(getattr(tp, "__name__", None) or repr(tp))


def _object_like(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin is Annotated:
        return _object_like(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return all(_object_like(a) for a in get_args(tp) if a is not type(None))
    if origin in (dict, Mapping):
        return True
    if tp is dict:
        return True
    return isinstance(tp, type) and (
        issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp) or is_typeddict(tp)
    )


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return cast(dict[str, Any], dump())
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        return cast(dict[str, Any], to_dict())
    raise TypeError(f"expected a dict or an SDK response object, got {type(obj).__name__}")
