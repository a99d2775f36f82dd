"""`Script`: what the scripted server answers to one request, and where the answer stops."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUIRKS", "SAMPLE_ITEMS", "Cut", "Script"]

SAMPLE_ITEMS: list[dict[str, Any]] = [
    {"name": "Ada Lovelace", "email": "ada@example.com", "age": 36},
    {"name": "Alan Turing", "email": "alan@example.com", "age": 41},
    {"name": "Grace Hopper", "email": "grace@example.com", "age": 85},
    {"name": "Edsger Dijkstra", "email": "edsger@example.com", "age": 72},
]
"""A few users: what the server answers when it is given no script."""


QUIRKS: frozenset[str] = frozenset(
    {
        "no_index",
        "id_every_chunk",
        "whole_arguments",
        "keep_alive",
        "usage_in_last_chunk",
        "reasoning_content",
        "content_with_tool_calls_finish",
    }
)
"""What OpenAI-compatible servers do differently in a chat-completions stream (`Script.quirks`):

- `no_index`: tool-call deltas carry no `index`;
- `id_every_chunk`: every tool-call delta repeats the call's `id`;
- `whole_arguments`: each call's whole arguments come in its first chunk;
- `keep_alive`: `: keep-alive` comment lines before and between the events;
- `usage_in_last_chunk`: `usage` rides on the finish chunk (always), not a chunk of its own;
- `reasoning_content`: `reasoning_content` deltas (the model thinking) before the answer;
- `content_with_tool_calls_finish`: the answer comes as `content`, with no tool call, yet the
  finish reason is `tool_calls`.
"""


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

    When the request asks for one tool call per item (`tool_choice` "required"/"any", Anthropic
    `{"type": "any"}`, Gemini mode ANY, with an item-shaped tool: no `tasks` parameter), each
    item is its own call (`text`, if set, is one call) and the cuts count the characters of all
    the calls' arguments in the order they are sent; `interleave` calls are open at once, their
    argument deltas sent round-robin (OpenAI chat, Azure, Responses; Anthropic sends its blocks
    one after another, Gemini every whole call in one chunk).

    `finish_reason` replaces the finish reason the provider would send at the end (e.g.
    "content_filter", Anthropic "refusal", Gemini "SAFETY", Responses "failed" or an
    incomplete reason). `refusal` makes the model refuse in those words: OpenAI streams them as
    `delta.refusal`, Responses as a refusal part, Anthropic ends with stop_reason `refusal`; the
    others have no refusal channel and answer the words as text. `usage` is the (input, output)
    token counts to report (default: estimated). `quirks` are OpenAI-compatible servers'
    stream quirks (see `QUIRKS`), for chat-completions streams. `retry_after` is sent as the
    `retry-after` header(s), except by Gemini, which says it in the error body (RetryInfo).
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
    finish_reason: str | None = None
    refusal: str | None = None
    usage: tuple[int, int] | None = None
    quirks: frozenset[str] = frozenset()
    interleave: int = 1

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
        self.quirks = frozenset(self.quirks)
        unknown = self.quirks - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")
        if self.interleave < 1:
            raise ValueError(f"interleave must be at least 1, not {self.interleave}")
        if self.usage is not None and min(self.usage) < 0:
            raise ValueError(f"usage must not be negative, not {self.usage}")

    @property
    def answer(self) -> str:
        """The full answer text: `text`, or `{"tasks": items}` as `json.dumps` renders it."""
        return self.text if self.text is not None else json.dumps({"tasks": self.items})

    @property
    def calls(self) -> list[str]:
        """The arguments of each call when items travel one call each: `text` is one call."""
        if self.text is not None:
            return [self.text]
        return [json.dumps(item) for item in self.items]

    def cut(self) -> tuple[str, Cut]:
        """The part of the answer actually sent, and how the answer ends after it."""
        answer = self.answer
        at, kind = self.cut_point(len(answer))
        return answer[:at], kind

    def cut_point(self, length: int) -> tuple[int, Cut]:
        """Of an answer `length` characters long: how many are sent, and how it ends after."""
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
            return length, Cut.COMPLETE
        at, _, kind = min(candidates, key=lambda c: (c[0], c[1]))
        if kind is Cut.TRUNCATE and at >= length:
            return length, Cut.COMPLETE
        return min(at, length), kind

    @property
    def delay(self) -> float:
        """Seconds to wait before each delta event (0 means as fast as possible)."""
        return 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
