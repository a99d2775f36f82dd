"""OpenAI chat completions, Azure OpenAI's flavour of them, and compatible servers' quirks."""

from __future__ import annotations

import json
from typing import Any

from multitask.testing._script import Cut, Script
from multitask.testing._wire_base import (
    SYSTEM_FINGERPRINT,
    Ids,
    Mode,
    PlanBuilder,
    Provider,
    StreamPlan,
    call_steps,
    compact,
    is_item_tool,
    model_of,
    name_of,
    sent_per_call,
    sent_text,
    split_text,
    token_counts,
)

__all__ = [
    "REASONING",
    "azure_error",
    "chat_completion",
    "chat_stream",
    "openai_error",
    "openai_error_payload",
    "openai_mode",
]

REASONING = "The user wants every item in the text. I will list them in order, one per entry."
"""What the `reasoning_content` quirk streams before the answer."""

_SAFE = {"filtered": False, "severity": "safe"}
_UNDETECTED = {"filtered": False, "detected": False}


def _prompt_filter_results() -> list[dict[str, Any]]:
    results = {
        "hate": _SAFE,
        "jailbreak": _UNDETECTED,
        "self_harm": _SAFE,
        "sexual": _SAFE,
        "violence": _SAFE,
    }
    return [{"prompt_index": 0, "content_filter_results": results}]


def _content_filter_results(*, filtered: bool = False) -> dict[str, Any]:
    return {
        "hate": _SAFE,
        "protected_material_code": _UNDETECTED,
        "protected_material_text": _UNDETECTED,
        "self_harm": _SAFE,
        "sexual": {"filtered": True, "severity": "medium"} if filtered else _SAFE,
        "violence": _SAFE,
    }


def openai_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """How a chat request wants its answer, and the tool/function name to use.

    A named `tool_choice` wins; then `response_format` json_schema/json_object (content); then
    `tools`: one call per item when the choice is "required"/"any", parallel calls are not
    disabled and the tool is item-shaped, else one call; then legacy `functions`; otherwise
    plain content.
    """
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    forced = name_of(choice, "function", "name")
    if tools and forced:
        return "tools", forced
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return "content", ""
    if tools and choice != "none":
        name = name_of(tools[0], "function", "name") or "tasks"
        parameters = (tools[0].get("function") or {}).get("parameters")
        if (
            choice in ("required", "any")
            and body.get("parallel_tool_calls") is not False
            and is_item_tool(parameters)
        ):
            return "calls", name
        return "tools", name
    functions = [f for f in body.get("functions") or [] if isinstance(f, dict)]
    call = body.get("function_call")
    if functions and call != "none":
        return "functions", name_of(call, "name") or name_of(functions[0], "name") or "tasks"
    return "content", ""


def openai_error_payload(script: Script, status: int = 500) -> dict[str, Any]:
    """The `error` object of a mid-stream error: the script's `error_body`, or a server error."""
    if script.error_body is not None:
        inner = script.error_body.get("error", script.error_body)
        return inner if isinstance(inner, dict) else {"message": str(inner)}
    error = openai_error(status)["error"]
    assert isinstance(error, dict)
    return error


def chat_stream(
    provider: Provider, body: dict[str, Any], script: Script, ids: Ids, created: int
) -> StreamPlan:
    """A chat-completions stream; Azure's adds its filter results and sorts its keys."""
    azure = provider == "azure"
    mode, name = openai_mode(body)
    quirks = script.quirks
    channel: str = mode
    if script.refusal is not None:
        channel = "refusal"
    elif mode in ("tools", "calls") and "content_with_tool_calls_finish" in quirks:
        channel = "content"
    texts = (
        [script.refusal]
        if script.refusal is not None
        else script.calls
        if channel == "calls"
        else [script.answer]
    )
    width = script.interleave if channel == "calls" else 1
    steps, cut = call_steps(texts, script, width=width)
    sent, _, done = sent_per_call(steps, len(texts))
    envelope: dict[str, Any] = {
        "id": ids.completion(),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model_of(provider, {} if azure else body),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    call_ids = [ids.call() for _ in texts]
    keep_alive = b": keep-alive\n\n" if "keep_alive" in quirks else b""
    plan = PlanBuilder()

    def data(obj: dict[str, Any]) -> bytes:
        return keep_alive + f"data: {compact(obj, sort_keys=azure)}\n\n".encode()

    def event(
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        filters: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if azure:
            choice["content_filter_results"] = filters or {}
        obj = {**envelope, "choices": [choice]}
        if usage is not None:
            obj["usage"] = usage
        return data(obj)

    if azure:
        plan.add(
            data(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": _prompt_filter_results(),
                }
            )
        )

    tools = channel in ("tools", "calls")
    whole = tools and "whole_arguments" in quirks
    first = True

    def add(delta: dict[str, Any], delay: float = 0.0, **kw: Any) -> None:
        nonlocal first
        if first:
            delta = {"role": "assistant", **delta}
            first = False
        plan.add(event(delta, **kw), delay)

    reasoning = 0
    if "reasoning_content" in quirks:
        add({"content": None, "reasoning_content": ""})
        for piece in split_text(REASONING, script.chunk_size):
            add({"reasoning_content": piece}, script.delay)
            reasoning += 1

    def tool_delta(call: int, **function: str) -> dict[str, Any]:
        tool: dict[str, Any] = {} if "no_index" in quirks else {"index": call}
        if "id_every_chunk" in quirks:
            tool["id"] = call_ids[call]
        tool["function"] = function
        return tool

    opened = False
    for step in steps:
        if step.piece is None:
            if tools:
                tool: dict[str, Any] = {} if "no_index" in quirks else {"index": step.call}
                arguments = sent[step.call] if whole else ""
                tool.update(
                    id=call_ids[step.call],
                    type="function",
                    function={"name": name, "arguments": arguments},
                )
                if opened:
                    delta: dict[str, Any] = {"tool_calls": [tool]}
                else:
                    delta = {"content": None, "tool_calls": [tool], "refusal": None}
                pieces = len(split_text(arguments, script.chunk_size))
                add(delta, script.delay * pieces if whole else 0.0)
                if whole and done[step.call]:
                    plan.completed(step.call)
            elif channel == "functions":
                function = {"name": name, "arguments": ""}
                add({"content": None, "function_call": function, "refusal": None})
            elif channel == "refusal":
                add({"content": None, "refusal": ""})
            else:
                add({"content": "", "refusal": None})
            opened = True
            if step.done and not whole:
                plan.completed(step.call)
            continue
        if whole:
            continue
        filters = None
        if tools:
            delta = {"tool_calls": [tool_delta(step.call, arguments=step.piece)]}
        elif channel == "functions":
            delta = {"function_call": {"arguments": step.piece}}
        elif channel == "refusal":
            delta = {"refusal": step.piece}
        else:
            delta = {"content": step.piece}
            filters = _content_filter_results()
        add(delta, script.delay, filters=filters)
        if step.done:
            plan.completed(step.call)

    deltas = sum(1 for step in steps if step.piece is not None)
    if cut is Cut.ERROR:
        plan.add(data({"error": openai_error_payload(script)}))
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        default = {"tools": "tool_calls", "calls": "tool_calls", "functions": "function_call"}
        finish = script.finish_reason or (
            "length" if cut is Cut.TRUNCATE else default.get(mode, "stop")
        )
        if channel == "refusal":
            finish = script.finish_reason or "stop"
        prompt, completion = token_counts(script, body, deltas + reasoning)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        filters = _content_filter_results(filtered=True) if finish == "content_filter" else None
        in_last = "usage_in_last_chunk" in quirks
        add({}, finish=finish, filters=filters, usage=usage if in_last else None)
        options = body.get("stream_options")
        if not in_last and isinstance(options, dict) and options.get("include_usage"):
            plan.add(data({**envelope, "choices": [], "usage": usage}))
        plan.add(keep_alive + b"data: [DONE]\n\n")
    return plan.build(cut, sent_text(steps))


def chat_completion(
    provider: Provider, body: dict[str, Any], script: Script, ids: Ids, created: int
) -> dict[str, Any]:
    """A non-streaming ChatCompletion (Azure's with its filter results)."""
    azure = provider == "azure"
    mode, name = openai_mode(body)
    texts = script.calls if mode == "calls" else [script.answer]
    steps, cut = call_steps(texts, script)
    sent, opened, _ = sent_per_call(steps, len(texts))
    deltas = sum(1 for step in steps if step.piece is not None)
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if script.refusal is not None:
        message["refusal"] = script.refusal
    elif mode in ("tools", "calls"):
        message["tool_calls"] = [
            {"id": ids.call(), "type": "function", "function": {"name": name, "arguments": text}}
            for text, was_opened in zip(sent, opened, strict=True)
            if was_opened
        ]
    elif mode == "functions":
        message["function_call"] = {"name": name, "arguments": sent[0]}
    else:
        message["content"] = sent[0]
    message.setdefault("refusal", None)
    message["annotations"] = []
    default = {"tools": "tool_calls", "calls": "tool_calls", "functions": "function_call"}
    finish = script.finish_reason or (
        "length" if cut is Cut.TRUNCATE else default.get(mode, "stop")
    )
    if script.refusal is not None:
        finish = script.finish_reason or "stop"
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish,
    }
    if azure:
        choice["content_filter_results"] = _content_filter_results(
            filtered=finish == "content_filter"
        )
    prompt, completion = token_counts(script, body, deltas)
    answer: dict[str, Any] = {
        "id": ids.completion(),
        "object": "chat.completion",
        "created": created,
        "model": model_of(provider, {} if azure else body),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if azure:
        answer["prompt_filter_results"] = _prompt_filter_results()
        answer = json.loads(compact(answer, sort_keys=True))
    return answer


# -- errors ------------------------------------------------------------------------------------

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request: the request body is not valid."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", None, "You are not allowed to sample from this model."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "tokens",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o in organization org-test on tokens per min (TPM): "
        "Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def openai_error(status: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON for `status` (chat completions and the Responses API alike)."""
    fallback = ("server_error" if status >= 500 else "invalid_request_error", None, "")
    kind, code, text = _OPENAI_ERRORS.get(status, fallback)
    return {
        "error": {
            "message": message or text or f"HTTP {status}",
            "type": kind,
            "param": None,
            "code": code,
        }
    }


_AZURE_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is invalid."),
    401: (
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.",
    ),
    404: (
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
    ),
    429: (
        "429",
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        "2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. "
        "Please retry after 6 seconds. Go here: https://aka.ms/oai/quotaincrease if you would "
        "like to further increase the default rate limit.",
    ),
    500: (
        "InternalServerError",
        "The server had an error processing your request. Sorry about that! You can retry "
        "your request, or contact us through an Azure support request at: "
        "https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error.",
    ),
}


def azure_error(status: int, message: str | None = None) -> dict[str, Any]:
    """Azure OpenAI's error JSON for `status`: `code` (a string) and `message`."""
    code, text = _AZURE_ERRORS.get(status, (str(status), ""))
    return {"error": {"code": code, "message": message or text or f"HTTP {status}"}}
