"""A provider-neutral description of one extraction request, and the HTTP request it becomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._prompt import Message

__all__ = ["HTTPRequest", "Mode", "RequestSpec"]

#: How the answer is asked for: a forced tool call (the default for most providers), OpenAI
#: structured outputs / a response schema, JSON-object mode with the schema in the prompt, the
#: legacy OpenAI `functions`, or one tool call per item ("parallel_tools").
Mode = Literal["tools", "json_schema", "json", "functions", "parallel_tools"]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What to ask: the model, the item schema (a `Multi{Name}` class), the prompt, options."""

    model: str
    schema: Any  # type[MultiTaskModel[Any]]
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
