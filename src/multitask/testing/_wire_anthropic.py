"""Anthropic messages: the event stream, the Message, and the errors."""

from __future__ import annotations

import json
from typing import Any

from multitask.testing._script import Cut, Script
from multitask.testing._wire_base import (
    Ids,
    Mode,
    PlanBuilder,
    StreamPlan,
    call_steps,
    compact,
    is_item_tool,
    model_of,
    name_of,
    sent_per_call,
    sent_text,
    token_counts,
)

__all__ = [
    "anthropic_error",
    "anthropic_error_payload",
    "anthropic_message",
    "anthropic_mode",
    "anthropic_stream",
]

_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_REFUSED = "This request was refused due to policy."


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {compact(data)}\n\n".encode()


def anthropic_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """How a messages request wants its answer: a `tool_use` block, one per item, or `text`.

    `{"type": "any"}` with an item-shaped tool (and parallel use not disabled) is one
    `tool_use` block per item.
    """
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not tools or kind == "none":
        return "text", ""
    if kind == "tool":
        return "tool_use", name_of(choice, "name") or "tasks"
    name = name_of(tools[0], "name") or "tasks"
    if (
        kind == "any"
        and isinstance(choice, dict)
        and not choice.get("disable_parallel_tool_use")
        and is_item_tool(tools[0].get("input_schema"))
    ):
        return "calls", name
    return "tool_use", name


def anthropic_error_payload(script: Script) -> dict[str, Any]:
    """The data of a mid-stream `error` event: the script's `error_body`, or overloaded."""
    if script.error_body is not None:
        return script.error_body
    return anthropic_error(529)


def _refused(script: Script) -> bool:
    return script.refusal is not None or script.finish_reason == "refusal"


def _stop_reason(script: Script, mode: Mode, cut: Cut) -> str:
    if script.finish_reason is not None:
        return script.finish_reason
    if script.refusal is not None:
        return "refusal"
    if cut is Cut.TRUNCATE:
        return "max_tokens"
    return "tool_use" if mode in ("tool_use", "calls") else "end_turn"


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def anthropic_stream(body: dict[str, Any], script: Script, ids: Ids) -> StreamPlan:
    """The event stream of a message: blocks one after another, each cut block left open."""
    mode, name = anthropic_mode(body)
    if script.refusal is not None:
        texts, block_type = [""], "text"  # as in the real refusal capture: an empty text block
    elif mode == "calls":
        texts, block_type = script.calls, "tool_use"
    else:
        texts, block_type = [script.answer], "tool_use" if mode == "tool_use" else "text"
    steps, cut = call_steps(texts, script)
    deltas = sum(1 for step in steps if step.piece is not None)
    input_tokens, output_tokens = token_counts(script, body, deltas)
    message: dict[str, Any] = {
        "id": ids.message(),
        "type": "message",
        "role": "assistant",
        "model": model_of("anthropic", body),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(input_tokens, 1),
    }
    plan = PlanBuilder()
    plan.add(_sse("message_start", {"type": "message_start", "message": message}))

    def delta(index: int, piece: str) -> bytes:
        inner = (
            {"type": "input_json_delta", "partial_json": piece}
            if block_type == "tool_use"
            else {"type": "text_delta", "text": piece}
        )
        payload = {"type": "content_block_delta", "index": index, "delta": inner}
        return _sse("content_block_delta", payload)

    for step in steps:
        if step.piece is None:
            if block_type == "tool_use":
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": ids.tool_use(),
                    "name": name,
                    "caller": {"type": "direct"},
                    "input": {},
                }
            else:
                block = {"type": "text", "text": ""}
            start = {"type": "content_block_start", "index": step.call, "content_block": block}
            plan.add(_sse("content_block_start", start))
            if step.call == 0:
                plan.add(_PING)
            if block_type == "tool_use":
                plan.add(delta(step.call, ""))
        else:
            plan.add(delta(step.call, step.piece), script.delay)
        if step.done:
            plan.completed(step.call)
            # A cut-off block gets no content_block_stop (see the incomplete_partial_json capture).
            stop = {"type": "content_block_stop", "index": step.call}
            plan.add(_sse("content_block_stop", stop))
    if cut is Cut.ERROR:
        # The docs show error events spaced like `ping`, not compact like the others.
        error = json.dumps(anthropic_error_payload(script))
        plan.add(f"event: error\ndata: {error}\n\n".encode())
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        reason = _stop_reason(script, mode, cut)
        inner: dict[str, Any] = {"stop_reason": reason, "stop_sequence": None}
        if reason == "refusal":
            inner["stop_details"] = {
                "type": "refusal",
                "category": None,
                "explanation": script.refusal or _REFUSED,
            }
        message_delta = {
            "type": "message_delta",
            "delta": inner,
            "usage": {"output_tokens": output_tokens},
        }
        plan.add(_sse("message_delta", message_delta))
        plan.add(_sse("message_stop", {"type": "message_stop"}))
    return plan.build(cut, sent_text(steps))


def anthropic_message(body: dict[str, Any], script: Script, ids: Ids) -> dict[str, Any]:
    """A non-streaming Message."""
    mode, name = anthropic_mode(body)
    texts = script.calls if mode == "calls" else [script.answer]
    steps, cut = call_steps(texts, script)
    sent, opened, _ = sent_per_call(steps, len(texts))
    deltas = sum(1 for step in steps if step.piece is not None)
    content: list[dict[str, Any]] = []
    if script.refusal is not None:
        content.append({"type": "text", "text": ""})
    elif mode in ("tool_use", "calls"):
        for text, was_opened in zip(sent, opened, strict=True):
            if not was_opened:
                continue
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            # A tool's input is always an object; a cut or malformed answer becomes `{}`.
            tool_input = parsed if isinstance(parsed, dict) else {}
            block = {"type": "tool_use", "id": ids.tool_use(), "name": name, "input": tool_input}
            content.append(block)
    else:
        content.append({"type": "text", "text": sent[0]})
    input_tokens, output_tokens = token_counts(script, body, deltas)
    answer: dict[str, Any] = {
        "id": ids.message(),
        "type": "message",
        "role": "assistant",
        "model": model_of("anthropic", body),
        "content": content,
        "stop_reason": _stop_reason(script, mode, cut),
        "stop_sequence": None,
        "usage": _usage(input_tokens, output_tokens),
    }
    if _refused(script) and answer["stop_reason"] == "refusal":
        answer["stop_details"] = {
            "type": "refusal",
            "category": None,
            "explanation": script.refusal or _REFUSED,
        }
    return answer


_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    409: ("conflict_error", "Conflict."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input "
        "tokens per minute. Please reduce the prompt length or the maximum tokens requested, "
        "or try again later.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(
    status: int, message: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """Anthropic's error JSON for `status`."""
    fallback = ("api_error" if status >= 500 else "invalid_request_error", "")
    kind, text = _ANTHROPIC_ERRORS.get(status, fallback)
    payload: dict[str, Any] = {
        "type": "error",
        "error": {"type": kind, "message": message or text or f"HTTP {status}"},
    }
    if request_id is not None:
        payload["request_id"] = request_id
    return payload
