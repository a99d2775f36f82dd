"""Google Gemini: `streamGenerateContent?alt=sse` chunks, `generateContent`, and errors.

Gemini's JSON puts a space after each colon but none after commas, and its SSE lines end in
CRLF: `data: {"candidates": [...],"usageMetadata": {...}}\\r\\n\\r\\n`.
"""

from __future__ import annotations

import json
from typing import Any

from multitask.testing._script import Cut, Script
from multitask.testing._wire_base import (
    DEFAULT_MODELS,
    Ids,
    Mode,
    PlanBuilder,
    StreamPlan,
    call_steps,
    is_item_tool,
    name_of,
    sent_text,
    split_text,
    token_counts,
)

__all__ = ["FILTER_REASONS", "gemini_body", "gemini_error", "gemini_mode", "gemini_stream"]

FILTER_REASONS = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)
"""Finish reasons that come with the safety ratings that blocked the answer."""

_STATUSES = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


def dumps(obj: Any) -> str:
    """JSON laid out as Gemini's streams lay it out: `": "` between keys and values."""
    return json.dumps(obj, separators=(",", ": "), ensure_ascii=False)


def gemini_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """`tools` (one call with `{"tasks": [...]}`), `calls` (an item-shaped function: one call
    per item) or `text`, with the function's name."""
    for tool in body.get("tools") or []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if isinstance(declarations, list) and declarations:
            config = name_of(body, "toolConfig", "functionCallingConfig", "mode")
            if config == "NONE":
                return "text", ""
            allowed = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
            names = allowed.get("allowedFunctionNames") or []
            declaration = declarations[0]
            for candidate in declarations:
                if isinstance(candidate, dict) and candidate.get("name") in names:
                    declaration = candidate
                    break
            name = name_of(declaration, "name") or "tasks"
            if is_item_tool(declaration.get("parameters")):
                return "calls", name
            return "tools", name
    return "text", ""


def gemini_error(
    status: int, message: str | None = None, retry_after: float | None = None
) -> dict[str, Any]:
    """Gemini's error JSON for `status`, with a RetryInfo detail when a delay is asked for."""
    kind, text = _STATUSES.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", ""))
    error: dict[str, Any] = {
        "code": status,
        "message": message or text or f"HTTP {status}",
        "status": kind,
    }
    if retry_after is not None:
        delay = f"{retry_after:g}s"
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    return {"error": error}


def _usage(input_tokens: int, output_tokens: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": input_tokens}
    if output_tokens is not None:
        usage["candidatesTokenCount"] = output_tokens
    usage["totalTokenCount"] = input_tokens + (output_tokens or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": input_tokens}]
    return usage


def _finish(script: Script, cut: Cut) -> str:
    return script.finish_reason or ("MAX_TOKENS" if cut is Cut.TRUNCATE else "STOP")


def _ratings(reason: str) -> list[dict[str, Any]]:
    blocked = reason in FILTER_REASONS
    return [
        {
            "category": category,
            "probability": "MEDIUM"
            if blocked and category.endswith("HARASSMENT")
            else "NEGLIGIBLE",
            **({"blocked": True} if blocked and category.endswith("HARASSMENT") else {}),
        }
        for category in (
            "HARM_CATEGORY_HATE_SPEECH",
            "HARM_CATEGORY_DANGEROUS_CONTENT",
            "HARM_CATEGORY_HARASSMENT",
            "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        )
    ]


def _calls(texts: list[str], script: Script) -> tuple[list[dict[str, Any]] | None, int, Cut]:
    """The whole calls sent before the cut as functionCall parts (None: one is malformed),
    the deltas they stand for, and the cut."""
    budget, cut = script.cut_point(sum(len(t) for t in texts))
    parts: list[dict[str, Any]] | None = []
    deltas = 0
    used = 0
    for text in texts:
        used += len(text)
        if used > budget:
            break
        try:
            args = json.loads(text)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            parts = None
            break
        assert parts is not None
        parts.append({"functionCall": {"name": "", "args": args}})
        deltas += len(split_text(text, script.chunk_size))
    return parts, deltas, cut


def _error(script: Script) -> dict[str, Any]:
    return script.error_body if script.error_body is not None else gemini_error(503)


def gemini_stream(
    body: dict[str, Any], script: Script, ids: Ids, model: str | None = None
) -> StreamPlan:
    """The SSE chunks of a `streamGenerateContent?alt=sse` answer."""
    mode, name = gemini_mode(body)
    model = model or DEFAULT_MODELS["gemini"]
    response_id = ids.gemini_response()
    plan = PlanBuilder()

    def chunk(candidate: dict[str, Any] | None, usage: dict[str, Any]) -> bytes:
        obj: dict[str, Any] = {}
        if candidate is not None:
            obj["candidates"] = [candidate]
        obj.update(usageMetadata=usage, modelVersion=model, responseId=response_id)
        return f"data: {dumps(obj)}\r\n\r\n".encode()

    if mode in ("tools", "calls") and script.refusal is None:
        texts = script.calls if mode == "calls" else [script.answer]
        parts, deltas, cut = _calls(texts, script)
        input_tokens, output_tokens = token_counts(script, body, deltas)
        final = cut in (Cut.COMPLETE, Cut.TRUNCATE)
        if parts is None:
            reason = "MALFORMED_FUNCTION_CALL"
            candidate: dict[str, Any] = {
                "content": {"role": "model"},
                "finishReason": reason,
                "index": 0,
            }
            plan.add(chunk(candidate, _usage(input_tokens, output_tokens)))
            return plan.build(Cut.COMPLETE, "")
        for part in parts:
            part["functionCall"]["name"] = name
        sent = "".join(texts[: len(parts)])
        if parts:
            candidate = {"content": {"parts": parts, "role": "model"}}
            if final:
                candidate["finishReason"] = _finish(script, cut)
            candidate["index"] = 0
            usage = _usage(input_tokens, output_tokens if final else None)
            plan.add(chunk(candidate, usage), script.delay * deltas)
            for index in range(len(parts)):
                plan.completed(index)
        elif final:
            reason = _finish(script, cut)
            candidate = {"content": {"role": "model"}, "finishReason": reason, "index": 0}
            if reason in FILTER_REASONS:
                candidate["safetyRatings"] = _ratings(reason)
            plan.add(chunk(candidate, _usage(input_tokens, output_tokens)))
        if cut is Cut.ERROR:
            plan.add(f"data: {dumps(_error(script))}\r\n\r\n".encode())
        return plan.build(cut, sent)

    texts = [script.refusal if script.refusal is not None else script.answer]
    steps, cut = call_steps(texts, script)
    pieces = [step for step in steps if step.piece is not None]
    input_tokens, output_tokens = token_counts(script, body, len(pieces))
    final = cut in (Cut.COMPLETE, Cut.TRUNCATE)
    reason = _finish(script, cut)
    filtered = reason in FILTER_REASONS
    for number, step in enumerate(pieces, 1):
        last = final and number == len(pieces) and not filtered
        candidate = {"content": {"parts": [{"text": step.piece}], "role": "model"}}
        if last:
            candidate["finishReason"] = reason
        candidate["index"] = 0
        usage = _usage(input_tokens, output_tokens if last else None)
        plan.add(chunk(candidate, usage), script.delay)
        if step.done:
            plan.completed(0)
    if final and (filtered or not pieces):
        candidate = {"content": {"parts": [{"text": ""}], "role": "model"}}
        if filtered:
            candidate = {"finishReason": reason, "index": 0, "safetyRatings": _ratings(reason)}
        else:
            candidate.update(finishReason=reason, index=0)
        plan.add(chunk(candidate, _usage(input_tokens, output_tokens)))
    if cut is Cut.ERROR:
        plan.add(f"data: {dumps(_error(script))}\r\n\r\n".encode())
    return plan.build(cut, sent_text(steps))


def gemini_body(
    body: dict[str, Any], script: Script, ids: Ids, model: str | None = None
) -> dict[str, Any]:
    """A whole `generateContent` answer."""
    mode, name = gemini_mode(body)
    model = model or DEFAULT_MODELS["gemini"]
    if mode in ("tools", "calls") and script.refusal is None:
        texts = script.calls if mode == "calls" else [script.answer]
        parts, deltas, cut = _calls(texts, script)
        if parts is None:
            candidate: dict[str, Any] = {
                "content": {"role": "model"},
                "finishReason": "MALFORMED_FUNCTION_CALL",
            }
        else:
            for part in parts:
                part["functionCall"]["name"] = name
            candidate = {"content": {"parts": parts, "role": "model"}}
            candidate["finishReason"] = _finish(script, cut)
    else:
        text = script.refusal if script.refusal is not None else script.answer
        budget, cut = script.cut_point(len(text))
        deltas = len(split_text(text[:budget], script.chunk_size))
        candidate = {"content": {"parts": [{"text": text[:budget]}], "role": "model"}}
        candidate["finishReason"] = _finish(script, cut)
    reason = candidate["finishReason"]
    candidate["index"] = 0
    if reason in FILTER_REASONS:
        candidate["safetyRatings"] = _ratings(reason)
    input_tokens, output_tokens = token_counts(script, body, deltas)
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(input_tokens, output_tokens),
        "modelVersion": model,
        "responseId": ids.gemini_response(),
    }
