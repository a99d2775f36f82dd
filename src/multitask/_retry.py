"""Retries: which failures are worth another attempt, how long to wait, and exactly-once.

A request that delivered nothing is retried on a retryable status, error event or dropped
connection. One that delivered items is retried only by the fan-out (`resume`), whose
`Replay` checks the retry's first items against those already handed out and skips them.
"""

from __future__ import annotations

import random
from typing import Final, Generic, TypeVar

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    MultitaskError,
    RetryDivergedError,
    StreamError,
)

__all__ = ["Replay", "backoff", "retry_delay"]

T = TypeVar("T")

_RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Mid-stream error types worth a retry, as Anthropic, OpenAI and Gemini spell them.
_RETRY_ERROR_TYPES: Final = frozenset(
    {
        "overloaded_error",
        "api_error",
        "rate_limit_error",
        "server_error",
        "rate_limit_exceeded",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "INTERNAL",
    }
)


def retry_delay(
    error: MultitaskError, attempt: int, max_retries: int, delivered: int
) -> float | None:
    """How long to wait before trying again, or None when this error is final.

    Only a request that delivered nothing is retried here: items already handed out cannot be
    taken back, and repeating them is the fan-out layer's job to prevent.
    """
    if delivered or attempt > max_retries:
        return None
    retry_after: float | None = None
    if isinstance(error, APIStatusError):
        if error.status_code not in _RETRY_STATUSES:
            return None
        retry_after = error.retry_after
    elif isinstance(error, StreamError):
        if error.error_type not in _RETRY_ERROR_TYPES:
            return None
    elif not isinstance(error, APIConnectionError):
        return None
    if retry_after is not None and retry_after <= 60:
        return float(retry_after)
    return backoff(attempt)


def backoff(attempt: int) -> float:
    """Exponential backoff from half a second, capped at 8 s, with jitter."""
    wait: float = min(8.0, 0.5 * 2.0 ** (attempt - 1))
    return wait * (0.5 + random.random() / 2)


class Replay(Generic[T]):
    """The items a document already handed out, so that a retry skips them, not repeats them.

    Items are compared with `==`: a `multitask.Quote` compares by its words and its span, and
    each attempt grounds its quotes afresh (`Engine.run`), so a replayed item is equal to the
    one delivered only if it quotes the same words at the same place."""

    __slots__ = ("enabled", "items", "position")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.items: list[T] = []
        self.position = 0

    def restart(self) -> None:
        self.position = 0

    def count(self, this_attempt: int) -> int:
        """How many items the caller has: all delivered so far, or this attempt's."""
        return len(self.items) if self.enabled else this_attempt

    def fresh(self, items: list[T]) -> list[T]:
        """The items not handed out before; raises if a retry's answer contradicts them."""
        if not self.enabled:
            return items
        out: list[T] = []
        for item in items:
            if self.position < len(self.items):
                if item != self.items[self.position]:
                    raise RetryDivergedError(
                        f"the retry's item {self.position} differs from the one already "
                        f"delivered; {len(self.items)} item(s) were delivered before the retry",
                        items_delivered=len(self.items),
                    )
            else:
                self.items.append(item)
                out.append(item)
            self.position += 1
        return out

    def check_complete(self) -> None:
        if self.enabled and self.position < len(self.items):
            raise RetryDivergedError(
                f"the retry's answer has {self.position} item(s), fewer than the "
                f"{len(self.items)} already delivered",
                items_delivered=len(self.items),
            )
