"""`Script`: what the scripted server answers to one request, and where the answer stops."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SAMPLE_ITEMS", "Cut", "Script"]

SAMPLE_ITEMS: list[dict[str, Any]] = [
    {"name": "Ada Lovelace", "email": "ada@example.com", "age": 36},
    {"name": "Alan Turing", "email": "alan@example.com", "age": 41},
    {"name": "Grace Hopper", "email": "grace@example.com", "age": 85},
    {"name": "Edsger Dijkstra", "email": "edsger@example.com", "age": 72},
]
"""A few users: what the server answers when it is given no script."""


class Cut(enum.Enum):
    """How the answer text ends: in full, or cut by one of the script's `*_after` options."""

    COMPLETE = "complete"
    TRUNCATE = "truncate"
    DROP = "drop"
    ERROR = "error"
    STALL = "stall"


@dataclass
class Script:
    """What the server answers to one request.

    The answer is `{"tasks": items}` rendered with `json.dumps`, or `text` verbatim (which may be
    malformed on purpose). It is streamed `chunk_size` characters per delta event, paced at
    `tokens_per_second` deltas a second. `status` other than 200 answers an HTTP error instead.
    The `*_after` options cut the answer after that many characters; when several are set the
    smallest wins (on a tie: drop, then error, then stall, then truncate).
    """

    items: list[Any] = field(default_factory=list)
    text: str | None = None
    chunk_size: int = 4
    tokens_per_second: float | None = None
    status: int = 200
    error_body: dict[str, Any] | None = None
    retry_after: float | None = None
    truncate_after: int | None = None
    drop_after: int | None = None
    error_after: int | None = None
    stall_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {self.chunk_size}")
        if self.tokens_per_second is not None and self.tokens_per_second <= 0:
            raise ValueError(f"tokens_per_second must be positive, not {self.tokens_per_second}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {self.status}")
        for name in ("truncate_after", "drop_after", "error_after", "stall_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, not {value}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, not {self.retry_after}")

    @property
    def answer(self) -> str:
        """The full answer text: `text`, or `{"tasks": items}` as `json.dumps` renders it."""
        return self.text if self.text is not None else json.dumps({"tasks": self.items})

    def cut(self) -> tuple[str, Cut]:
        """The part of the answer actually sent, and how the answer ends after it."""
        answer = self.answer
        candidates = [
            (at, rank, kind)
            for rank, (at, kind) in enumerate(
                [
                    (self.drop_after, Cut.DROP),
                    (self.error_after, Cut.ERROR),
                    (self.stall_after, Cut.STALL),
                    (self.truncate_after, Cut.TRUNCATE),
                ]
            )
            if at is not None
        ]
        if not candidates:
            return answer, Cut.COMPLETE
        at, _, kind = min(candidates, key=lambda c: (c[0], c[1]))
        if kind is Cut.TRUNCATE and at >= len(answer):
            return answer, Cut.COMPLETE
        return answer[:at], kind

    @property
    def delay(self) -> float:
        """Seconds to wait before each delta event (0 means as fast as possible)."""
        return 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
