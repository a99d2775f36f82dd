"""What every provider's renderer shares: ids, chunks and plans, request reading, call schedules.

Sans-IO like the rest of `_wire*`: nothing here touches a socket or a clock it was not given.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from multitask.testing._script import Cut, Script

__all__ = [
    "DEFAULT_MODELS",
    "PROVIDERS",
    "SYSTEM_FINGERPRINT",
    "Chunk",
    "Ending",
    "Ids",
    "Mode",
    "PlanBuilder",
    "Provider",
    "Step",
    "StreamPlan",
    "call_steps",
    "compact",
    "ending_of",
    "is_item_tool",
    "model_of",
    "name_of",
    "prompt_tokens",
    "sent_per_call",
    "sent_text",
    "split_text",
    "token_counts",
]

Provider = Literal["openai", "anthropic", "openai-responses", "gemini", "ollama", "azure"]
PROVIDERS: tuple[Provider, ...] = (
    "openai",
    "anthropic",
    "openai-responses",
    "gemini",
    "ollama",
    "azure",
)
Mode = Literal["tools", "functions", "content", "tool_use", "text", "calls"]
"""How the answer travels: OpenAI `tools` / legacy `functions` / `content`; Anthropic `tool_use`
block / `text` block; `calls`: one tool call per item (parallel tool calls)."""
Ending = Literal["end", "drop", "stall"]
"""After the last chunk: end the body, abort the connection, or hang until the client goes."""

DEFAULT_MODELS: dict[Provider, str] = {
    "openai": "gpt-4o-2024-08-06",
    "anthropic": "claude-sonnet-4-20250514",
    "openai-responses": "gpt-4o-2024-08-06",
    "gemini": "gemini-2.0-flash",
    "ollama": "llama3.2",
    "azure": "gpt-4o-2024-08-06",
}
SYSTEM_FINGERPRINT = "fp_5c3d9f0a1e"
_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


def compact(obj: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON as the services send it (UTF-8 kept, not escaped)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)


class Ids:
    """Makes provider-shaped ids; seed it for reproducible output."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def _pick(self, alphabet: str, n: int) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(n))

    def _alnum(self, n: int) -> str:
        return self._pick(_ALNUM, n)

    def completion(self) -> str:
        return "chatcmpl-" + self._alnum(29)

    def call(self) -> str:
        return "call_" + self._alnum(24)

    def message(self) -> str:
        return "msg_01" + self._alnum(22)

    def tool_use(self) -> str:
        return "toolu_01" + self._alnum(22)

    def response(self) -> str:
        return "resp_" + self._pick(_HEX, 48)

    def item(self, prefix: str) -> str:
        """A Responses output item id: `fc_...` for a function call, `msg_...` for a message."""
        return f"{prefix}_" + self._pick(_HEX, 48)

    def gemini_response(self) -> str:
        return self._pick(_ALNUM + "-_", 22)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def request(self, provider: Provider) -> str:
        if provider in ("openai", "openai-responses"):
            return "req_" + self._pick(_HEX, 32)
        if provider == "anthropic":
            return "req_011C" + self._alnum(20)
        return self.uuid()


@dataclass(frozen=True)
class Chunk:
    """One SSE event (or NDJSON line) to send, after waiting `delay` seconds."""

    data: bytes
    delay: float = 0.0


@dataclass(frozen=True)
class StreamPlan:
    """A whole streamed answer: the events in order, then how the body ends.

    `completions` lists, in order, `(chunk index, call index)` for each call (or the single
    answer, call 0) whose arguments the chunk at that index completed.
    """

    chunks: list[Chunk]
    ending: Ending
    sent_text: str
    completions: list[tuple[int, int]] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        """Every event concatenated: the body as a client reads it."""
        return b"".join(c.data for c in self.chunks)


class PlanBuilder:
    """Collects a plan's chunks, and which chunk completed which call."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.completions: list[tuple[int, int]] = []

    def add(self, data: bytes, delay: float = 0.0) -> None:
        self.chunks.append(Chunk(data, delay))

    def completed(self, call: int) -> None:
        """The chunk added last completed `call`'s arguments."""
        self.completions.append((len(self.chunks) - 1, call))

    def build(self, cut: Cut, sent_text: str) -> StreamPlan:
        return StreamPlan(self.chunks, ending_of(cut), sent_text, self.completions)


def ending_of(cut: Cut) -> Ending:
    return "drop" if cut is Cut.DROP else "stall" if cut is Cut.STALL else "end"


# -- reading the request -----------------------------------------------------------------------


def name_of(obj: Any, *path: str) -> str | None:
    """The string at `path` inside nested dicts, or None."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, str) else None


def is_item_tool(parameters: Any) -> bool:
    """Whether a tool's parameters describe one item: properties, none of them `tasks`."""
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    return isinstance(properties, dict) and bool(properties) and "tasks" not in properties


def model_of(provider: Provider, body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODELS[provider]


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough token count of the prompt (4 characters a token), for realistic usage blocks."""
    keys = ("messages", "system", "tools", "functions", "instructions", "input", "contents")
    parts = [body.get(k) for k in keys]
    return max(1, len(compact([p for p in parts if p is not None])) // 4)


def token_counts(script: Script, body: dict[str, Any], deltas: int) -> tuple[int, int]:
    """(input, output) tokens to report: the script's `usage`, or estimates."""
    if script.usage is not None:
        return script.usage
    return prompt_tokens(body), max(1, deltas)


def split_text(text: str, size: int) -> list[str]:
    """The answer text in deltas of `size` characters (the last may be shorter)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- calls and their deltas --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of streaming calls: open call `call` (`piece` None) or send one delta of it.

    `done` is True on the step that completes the call's arguments.
    """

    call: int
    piece: str | None
    done: bool


def call_steps(texts: list[str], script: Script, *, width: int = 1) -> tuple[list[Step], Cut]:
    """The steps that stream `texts` (each one call's arguments), cut as the script says.

    Up to `width` calls are open at once and take turns sending a delta; when one completes,
    the next call opens. The cuts count characters across all calls in the order they are sent.
    """
    budget, cut = script.cut_point(sum(len(t) for t in texts))
    pieces = [deque(split_text(t, script.chunk_size)) for t in texts]
    pending = deque(range(len(texts)))
    active: deque[int] = deque()
    full: list[Step] = []

    def open_next() -> None:
        call = pending.popleft()
        full.append(Step(call, None, not pieces[call]))
        if pieces[call]:
            active.append(call)

    while pending and len(active) < width:
        open_next()
    while active:
        call = active.popleft()
        piece = pieces[call].popleft()
        full.append(Step(call, piece, not pieces[call]))
        if pieces[call]:
            active.append(call)
        while pending and len(active) < width:
            open_next()

    steps: list[Step] = []
    left = budget
    for step in full:
        if step.piece is None:
            if left == 0 and steps and cut is not Cut.COMPLETE:
                break
            steps.append(step)
            continue
        if left == 0:
            break
        piece = step.piece[:left]
        left -= len(piece)
        steps.append(Step(step.call, piece, step.done and piece == step.piece))
    return steps, cut


def sent_per_call(steps: list[Step], count: int) -> tuple[list[str], list[bool], list[bool]]:
    """Per call: the argument text sent, whether it was opened, whether it was completed."""
    sent = [""] * count
    opened = [False] * count
    done = [False] * count
    for step in steps:
        opened[step.call] = True
        if step.piece is not None:
            sent[step.call] += step.piece
        done[step.call] = done[step.call] or step.done
    return sent, opened, done


def sent_text(steps: list[Step]) -> str:
    """Every delta sent, in order."""
    return "".join(step.piece for step in steps if step.piece is not None)
