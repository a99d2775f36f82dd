"""A provider-neutral description of one extraction request, and the HTTP request it becomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._prompt import Message

__all__ = ["HTTPRequest", "Mode", "RequestSpec", "TaskSchema"]

#: How the answer is asked for: a forced tool call (the default for most providers), OpenAI
#: structured outputs / a response schema, JSON-object mode with the schema in the prompt, the
#: legacy OpenAI `functions`, or one tool call per item ("parallel_tools").
Mode = Literal["tools", "json_schema", "json", "functions", "parallel_tools"]


class TaskSchema(Protocol):
    """What a provider reads of the item schema to build a request: a `Multi{Name}` class
    (`MultiTask(User)`) is one; the shapes are the `{"tasks": [...]}` answer's."""

    @property
    def task_name(self) -> str:
        """The items' name, for the prompt and the tool."""
        ...

    @property
    def openai_schema(self) -> dict[str, Any]:
        """A function definition: name, description and JSON-schema parameters."""
        ...

    @property
    def openai_tool(self) -> dict[str, Any]:
        """`openai_schema` as a chat completions tool."""
        ...

    @property
    def openai_strict_schema(self) -> dict[str, Any]:
        """`openai_schema` under OpenAI's strict structured-output rules."""
        ...

    @property
    def openai_response_format(self) -> dict[str, Any]:
        """A `response_format` of type json_schema, strict."""
        ...

    @property
    def anthropic_schema(self) -> dict[str, Any]:
        """An Anthropic tool definition."""
        ...

    @property
    def item_function(self) -> dict[str, Any]:
        """A function whose arguments are one item (`mode="parallel_tools"`)."""
        ...


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What to ask: the model, the item schema (a `Multi{Name}` class), the prompt, options."""

    model: str
    schema: TaskSchema
    mode: Mode
    system: str
    messages: Sequence[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One HTTP request, ready to send. Headers carry the key, so they stay out of the repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    json: Mapping[str, Any] = field(repr=False)
