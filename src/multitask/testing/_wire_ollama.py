"""Ollama's native `/api/chat`: newline-delimited JSON as Go's encoder writes it."""

from __future__ import annotations

import json
import time
from typing import Any

from multitask.testing._script import Cut, Script
from multitask.testing._wire_base import (
    PlanBuilder,
    StreamPlan,
    call_steps,
    model_of,
    sent_text,
    split_text,
    token_counts,
)

__all__ = ["ollama_body", "ollama_error", "ollama_stream", "timestamp"]

_ERRORS = {
    400: "invalid request",
    404: 'model "{model}" not found, try pulling it first',
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_MID_STREAM = "an error was encountered while running the model: unexpected EOF"
# Go's encoding/json escapes these even inside strings.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_GO_ESCAPES["\u2029"] = "\\u2029"


def go_json(obj: Any) -> str:
    """Compact JSON with Go's HTML-safe escapes (`<` is `\\u003c`), as Ollama writes it."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def timestamp(seconds: float, offset_ns: int = 0) -> str:
    """An RFC 3339 time with nanoseconds, trailing zeros trimmed, as Go formats `created_at`."""
    nanos = round(seconds * 1_000_000) * 1000 + offset_ns
    whole, fraction = divmod(nanos, 1_000_000_000)
    digits = f".{fraction:09d}".rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + digits + "Z"


def ollama_error(status: int, message: str | None = None, model: str = "") -> dict[str, Any]:
    """Ollama's error JSON: just `{"error": "..."}`."""
    text = _ERRORS.get(status, "").format(model=model)
    return {"error": message or text or f"HTTP {status}"}


def _final(
    body: dict[str, Any], script: Script, cut: Cut, created: str, content: str, deltas: int
) -> dict[str, Any]:
    input_tokens, output_tokens = token_counts(script, body, deltas)
    reason = script.finish_reason or ("length" if cut is Cut.TRUNCATE else "stop")
    return {
        "model": model_of("ollama", body),
        "created_at": created,
        "message": {"role": "assistant", "content": content},
        "done_reason": reason,
        "done": True,
        "total_duration": 1_204_851_917 + 21_000_000 * deltas,
        "load_duration": 19_583_042,
        "prompt_eval_count": input_tokens,
        "prompt_eval_duration": 143_528_000,
        "eval_count": output_tokens,
        "eval_duration": 21_000_000 * max(1, deltas),
    }


def ollama_stream(body: dict[str, Any], script: Script, now: float) -> StreamPlan:
    """The lines of a streamed `/api/chat` answer: content pieces, then a `done` line."""
    text = script.refusal if script.refusal is not None else script.answer
    steps, cut = call_steps([text], script)
    pieces = [step for step in steps if step.piece is not None]
    model = model_of("ollama", body)
    plan = PlanBuilder()
    for number, step in enumerate(pieces):
        line = {
            "model": model,
            "created_at": timestamp(now, 21_000_000 * number),
            "message": {"role": "assistant", "content": step.piece},
            "done": False,
        }
        plan.add((go_json(line) + "\n").encode(), script.delay)
        if step.done:
            plan.completed(0)
    if cut is Cut.ERROR:
        error = script.error_body if script.error_body is not None else {"error": _MID_STREAM}
        plan.add((go_json(error) + "\n").encode())
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        created = timestamp(now, 21_000_000 * len(pieces))
        final = _final(body, script, cut, created, "", len(pieces))
        plan.add((go_json(final) + "\n").encode())
    return plan.build(cut, sent_text(steps))


def ollama_body(body: dict[str, Any], script: Script, now: float) -> dict[str, Any]:
    """A whole (`"stream": false`) `/api/chat` answer."""
    text = script.refusal if script.refusal is not None else script.answer
    budget, cut = script.cut_point(len(text))
    deltas = len(split_text(text[:budget], script.chunk_size))
    return _final(body, script, cut, timestamp(now), text[:budget], deltas)
