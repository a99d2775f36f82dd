"""OpenAI's Responses API: `event:`-named SSE with sequence numbers, and the Response object."""

from __future__ import annotations

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
from multitask.testing._wire_chat import openai_error_payload

__all__ = ["responses_body", "responses_mode", "responses_stream"]

_FAILED = "The server had an error while processing your request. Sorry about that!"


def responses_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """How a Responses request wants its answer: a function call, one per item, or text.

    A named `tool_choice` wins; then `text.format` json_schema/json_object (text); then
    `tools` (one call per item for "required" with an item-shaped tool, parallel calls not
    disabled); otherwise text.
    """
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    forced = name_of(choice, "name") if name_of(choice, "type") == "function" else None
    if tools and forced:
        return "tools", forced
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return "text", ""
    if tools and choice != "none":
        name = name_of(tools[0], "name") or "tasks"
        if (
            choice == "required"
            and body.get("parallel_tool_calls") is not False
            and is_item_tool(tools[0].get("parameters"))
        ):
            return "calls", name
        return "tools", name
    return "text", ""


def _response(
    body: dict[str, Any],
    response_id: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model_of("openai-responses", body),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class _Items:
    """The output items of one response, as they stand."""

    def __init__(self, mode: Mode, name: str, count: int, ids: Ids, *, refusal: bool) -> None:
        self.mode = mode
        self.name = name
        self.refusal = refusal
        prefix = "msg" if mode == "text" else "fc"
        self.ids = [ids.item(prefix) for _ in range(count)]
        self.call_ids = [ids.call() for _ in range(count)]

    def part(self, text: str) -> dict[str, Any]:
        if self.refusal:
            return {"type": "refusal", "refusal": text}
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def item(self, index: int, text: str, status: str) -> dict[str, Any]:
        if self.mode == "text":
            content = [self.part(text)] if status != "in_progress" else []
            return {
                "id": self.ids[index],
                "type": "message",
                "status": status,
                "content": content,
                "role": "assistant",
            }
        return {
            "id": self.ids[index],
            "type": "function_call",
            "status": status,
            "arguments": text,
            "call_id": self.call_ids[index],
            "name": self.name,
        }


def _end(
    script: Script, cut: Cut
) -> tuple[str, str | None]:  # (status, incomplete reason or "failed")
    reason = script.finish_reason
    if reason is None:
        reason = "max_output_tokens" if cut is Cut.TRUNCATE else "completed"
    if reason == "completed":
        return "completed", None
    if reason == "failed":
        return "failed", None
    return "incomplete", reason


def responses_stream(body: dict[str, Any], script: Script, ids: Ids, created: int) -> StreamPlan:
    """The event stream of a response: items one after another (or interleaved calls)."""
    mode, name = responses_mode(body)
    refusal = script.refusal is not None
    if refusal:
        mode = "text"
    texts = (
        [script.refusal or ""] if refusal else script.calls if mode == "calls" else [script.answer]
    )
    steps, cut = call_steps(texts, script, width=script.interleave if mode == "calls" else 1)
    sent, opened, done = sent_per_call(steps, len(texts))
    items = _Items(mode, name, len(texts), ids, refusal=refusal)
    response_id = ids.response()
    plan = PlanBuilder()
    sequence = 0

    def event(kind: str, payload: dict[str, Any], delay: float = 0.0) -> None:
        nonlocal sequence
        data = {"type": kind, **payload, "sequence_number": sequence}
        sequence += 1
        plan.add(f"event: {kind}\ndata: {compact(data)}\n\n".encode(), delay)

    start = _response(body, response_id, created, "in_progress", [], None)
    event("response.created", {"response": start})
    event("response.in_progress", {"response": start})
    text_kind = "response.refusal" if refusal else "response.output_text"
    for step in steps:
        index = step.call
        where = {"item_id": items.ids[index], "output_index": index}
        if step.piece is None:
            event(
                "response.output_item.added",
                {"output_index": index, "item": items.item(index, "", "in_progress")},
            )
            if mode == "text":
                event(
                    "response.content_part.added",
                    {**where, "content_index": 0, "part": items.part("")},
                )
        elif mode == "text":
            extra: dict[str, Any] = {} if refusal else {"logprobs": []}
            payload = {**where, "content_index": 0, "delta": step.piece, **extra}
            event(f"{text_kind}.delta", payload, script.delay)
        else:
            event(
                "response.function_call_arguments.delta",
                {**where, "delta": step.piece},
                script.delay,
            )
        if not step.done:
            continue
        plan.completed(index)
        text = sent[index]
        if mode == "text":
            field = "refusal" if refusal else "text"
            extra = {} if refusal else {"logprobs": []}
            event(f"{text_kind}.done", {**where, "content_index": 0, field: text, **extra})
            event(
                "response.content_part.done",
                {**where, "content_index": 0, "part": items.part(text)},
            )
        else:
            event("response.function_call_arguments.done", {**where, "arguments": text})
        event(
            "response.output_item.done",
            {"output_index": index, "item": items.item(index, text, "completed")},
        )

    deltas = sum(1 for step in steps if step.piece is not None)
    if cut is Cut.ERROR:
        error = openai_error_payload(script)
        event(
            "error",
            {
                "code": error.get("code") or error.get("type"),
                "message": error.get("message"),
                "param": error.get("param"),
            },
        )
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        status, reason = _end(script, cut)
        output = [
            items.item(i, sent[i], "completed" if done[i] else "incomplete")
            for i in range(len(texts))
            if opened[i]
        ]
        usage = _usage(*token_counts(script, body, deltas))
        final = _response(body, response_id, created, status, output, usage)
        if status == "failed":
            error = openai_error_payload(script)
            final["error"] = {"code": error.get("code") or "server_error", "message": _FAILED}
            if script.error_body is not None:
                final["error"]["message"] = error.get("message") or _FAILED
        if reason is not None:
            final["incomplete_details"] = {"reason": reason}
        event(f"response.{status}", {"response": final})
    return plan.build(cut, sent_text(steps))


def responses_body(body: dict[str, Any], script: Script, ids: Ids, created: int) -> dict[str, Any]:
    """A non-streaming Response."""
    mode, name = responses_mode(body)
    refusal = script.refusal is not None
    if refusal:
        mode = "text"
    texts = (
        [script.refusal or ""] if refusal else script.calls if mode == "calls" else [script.answer]
    )
    steps, cut = call_steps(texts, script)
    sent, opened, done = sent_per_call(steps, len(texts))
    items = _Items(mode, name, len(texts), ids, refusal=refusal)
    status, reason = _end(script, cut)
    output = [
        items.item(i, sent[i], "completed" if done[i] else "incomplete")
        for i in range(len(texts))
        if opened[i]
    ]
    deltas = sum(1 for step in steps if step.piece is not None)
    usage = _usage(*token_counts(script, body, deltas))
    answer = _response(body, ids.response(), created, status, output, usage)
    if reason is not None:
        answer["incomplete_details"] = {"reason": reason}
    if status == "failed":
        answer["error"] = {"code": "server_error", "message": _FAILED}
    return answer
