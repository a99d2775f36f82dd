"""`ItemStream`: the async iterator `extract_stream` returns, with what it learned on the way."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._providers._base import Usage
from ._taskmodel import task_name
from ._validation import InvalidItem

__all__ = ["ItemStream", "StreamInfo"]

T = TypeVar("T")


@dataclass(slots=True)
class StreamInfo:
    """What one extraction learned: usage, finish reason, skipped items, attempts made."""

    usage: Usage | None = None
    finish_reason: str | None = None
    skipped: list[InvalidItem] = field(default_factory=list)
    attempts: int = 0
    items: int = 0


class ItemStream(Generic[T]):
    """An async iterator of validated items that is also an async context manager.

    `async for item in stream` works on its own: breaking out of the loop closes the HTTP
    response (as soon as the event loop finalizes the abandoned iterator). `async with stream`
    closes it on the spot, which is what a library author should prefer. After the stream,
    `usage`, `finish_reason` and `skipped` say how it went.
    """

    __slots__ = ("_agen", "_item_type", "_model", "info")

    def __init__(
        self,
        agen: AsyncGenerator[T, None],
        info: StreamInfo,
        *,
        item_type: Any = None,
        model: str | None = None,
    ) -> None:
        self._agen = agen
        self.info = info
        self._item_type = item_type
        self._model = model

    def __repr__(self) -> str:
        name = task_name(self._item_type) if self._item_type is not None else "?"
        if getattr(self._agen, "ag_frame", True) is None:
            state = "ended"  # exhausted, failed or closed: the generator is gone
        elif self.info.attempts == 0:
            state = "not started"
        else:
            state = "streaming"
        info = self.info
        return (
            f"<{type(self).__name__}[{name}] model={self._model!r} {state} "
            f"items={info.items} attempts={info.attempts}>"
        )

    def __aiter__(self) -> ItemStream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the extraction and close its connection now."""
        await self._agen.aclose()

    async def __aenter__(self) -> ItemStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def usage(self) -> Usage | None:
        """Token usage, once the provider reported it (usually at the end)."""
        return self.info.usage

    @property
    def finish_reason(self) -> str | None:
        """The provider's finish reason, once it sent one."""
        return self.info.finish_reason

    @property
    def skipped(self) -> list[InvalidItem]:
        """Items dropped under `on_invalid="skip"`."""
        return self.info.skipped

    async def collect(self) -> list[T]:
        """Read the rest of the stream into a list."""
        async with self:
            return [item async for item in self]
