"""`patch(client)`: the classic `response_model=` keyword on an OpenAI SDK client."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

from ._taskmodel import MultiTask, MultiTaskModel

__all__ = ["patch"]

C = TypeVar("C")


def patch(client: C) -> C:
    """Add `response_model=` to `client.chat.completions.create` of an `openai` SDK client.

    With `response_model=MultiUser` (a `MultiTask` class, or a plain item type that is
    wrapped in one) the request forces the tool call. With `stream=False` the call returns
    the `MultiUser` instance; with `stream=True` it returns the SDK's stream, ready for
    `MultiUser.from_streaming_response(...)`. Works on `OpenAI` and `AsyncOpenAI`.
    """
    completions = client.chat.completions  # type: ignore[attr-defined]
    create = completions.create
    if getattr(create, "__multitask_patched__", False):
        return client

    def prepare(kwargs: dict[str, Any]) -> type[MultiTaskModel[Any]] | None:
        response_model = kwargs.pop("response_model", None)
        if response_model is None:
            return None
        if not (isinstance(response_model, type) and issubclass(response_model, MultiTaskModel)):
            response_model = MultiTask(response_model)
        kwargs.setdefault("tools", [response_model.openai_tool])
        kwargs.setdefault(
            "tool_choice",
            {"type": "function", "function": {"name": response_model.openai_schema["name"]}},
        )
        return response_model

    @functools.wraps(create)
    def patched(*args: Any, **kwargs: Any) -> Any:
        model = prepare(kwargs)
        response = create(*args, **kwargs)
        if model is None or kwargs.get("stream"):
            return response
        if inspect.isawaitable(response):  # AsyncOpenAI
            return _parse_later(response, model)
        return model.from_response(response)

    patched.__multitask_patched__ = True  # type: ignore[attr-defined]
    completions.create = patched
    return client


async def _parse_later(response: Awaitable[Any], model: type[MultiTaskModel[Any]]) -> Any:
    return model.from_response(await response)
