"""The providers' wire formats, sans-IO: what bytes answer a request, knowing nothing of sockets.

Given a provider, the parsed request body and a `Script`, this module computes the response:
the SSE events of a stream (each one chunk, with the pause to take before sending it), the JSON
of a non-streaming answer, the error JSON of an HTTP error, and the response headers. Every
shape follows the real captures in `shared/wire/` byte for byte: compact JSON, the same keys in
the same order, the same event sequence.
"""

from __future__ import annotations

import json
import random
import string
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Literal

from multitask.testing._script import Cut, Script

__all__ = [
    "Chunk",
    "Ending",
    "Ids",
    "Mode",
    "Provider",
    "StreamPlan",
    "anthropic_mode",
    "completion_body",
    "default_error",
    "error_status_for_cut",
    "json_body",
    "openai_mode",
    "response_headers",
    "split_text",
    "stream_plan",
]

Provider = Literal["openai", "anthropic"]
Mode = Literal["tools", "functions", "content", "tool_use", "text"]
"""How the answer travels: OpenAI `tools` / legacy `functions` / `content`; Anthropic `tool_use`
block / `text` block."""
Ending = Literal["end", "drop", "stall"]
"""After the last chunk: end the body, abort the connection, or hang until the client goes."""

DEFAULT_MODELS: dict[Provider, str] = {
    "openai": "gpt-4o-2024-08-06",
    "anthropic": "claude-sonnet-4-20250514",
}
SYSTEM_FINGERPRINT = "fp_5c3d9f0a1e"
_ALNUM = string.ascii_letters + string.digits


def _json(obj: Any) -> str:
    """Compact JSON as both services send it (UTF-8 kept, not escaped)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Ids:
    """Makes provider-shaped ids; seed it for reproducible output."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def _alnum(self, n: int) -> str:
        return "".join(self._rng.choice(_ALNUM) for _ in range(n))

    def completion(self) -> str:
        return "chatcmpl-" + self._alnum(29)

    def call(self) -> str:
        return "call_" + self._alnum(24)

    def message(self) -> str:
        return "msg_01" + self._alnum(22)

    def tool_use(self) -> str:
        return "toolu_01" + self._alnum(22)

    def request(self, provider: Provider) -> str:
        if provider == "openai":
            return "req_" + "".join(self._rng.choice("0123456789abcdef") for _ in range(32))
        return "req_011C" + self._alnum(20)


@dataclass(frozen=True)
class Chunk:
    """One SSE event to send, after waiting `delay` seconds."""

    data: bytes
    delay: float = 0.0


@dataclass(frozen=True)
class StreamPlan:
    """A whole streamed answer: the events in order, then how the body ends."""

    chunks: list[Chunk]
    ending: Ending
    sent_text: str

    @property
    def body(self) -> bytes:
        """Every event concatenated: the SSE body as a client reads it."""
        return b"".join(c.data for c in self.chunks)


# -- reading the request -----------------------------------------------------------------------


def _name_of(obj: Any, *path: str) -> str | None:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj if isinstance(obj, str) else None


def openai_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """How an OpenAI chat request wants its answer, and the tool/function name to use.

    A named `tool_choice` wins; then `response_format` json_schema/json_object (content); then
    `tools`; then legacy `functions`; otherwise plain content.
    """
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    forced = _name_of(choice, "function", "name")
    if tools and forced:
        return "tools", forced
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
        return "content", ""
    if tools and choice != "none":
        return "tools", _name_of(tools[0], "function", "name") or "tasks"
    functions = [f for f in body.get("functions") or [] if isinstance(f, dict)]
    call = body.get("function_call")
    if functions and call != "none":
        return "functions", _name_of(call, "name") or _name_of(functions[0], "name") or "tasks"
    return "content", ""


def anthropic_mode(body: dict[str, Any]) -> tuple[Mode, str]:
    """How an Anthropic messages request wants its answer: a `tool_use` block, or `text`."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not tools or kind == "none":
        return "text", ""
    if kind == "tool":
        return "tool_use", _name_of(choice, "name") or "tasks"
    return "tool_use", _name_of(tools[0], "name") or "tasks"


def _model(provider: Provider, body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODELS[provider]


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A rough token count of the prompt (4 characters a token), for realistic usage blocks."""
    parts = [body.get(k) for k in ("messages", "system", "tools", "functions")]
    return max(1, len(_json([p for p in parts if p is not None])) // 4)


def split_text(text: str, size: int) -> list[str]:
    """The answer text in deltas of `size` characters (the last may be shorter)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- streams -----------------------------------------------------------------------------------


def stream_plan(
    provider: Provider,
    body: dict[str, Any],
    script: Script,
    *,
    ids: Ids | None = None,
    now: float | None = None,
) -> StreamPlan:
    """The events that stream `script`'s answer to `body`, as the provider would send them."""
    ids = ids or Ids()
    created = int(time.time() if now is None else now)
    if provider == "openai":
        return _openai_stream(body, script, ids, created)
    return _anthropic_stream(body, script, ids)


def _ending(cut: Cut) -> Ending:
    return "drop" if cut is Cut.DROP else "stall" if cut is Cut.STALL else "end"


def _openai_error_payload(script: Script, status: int = 500) -> dict[str, Any]:
    """The `error` object of a mid-stream error: the script's `error_body`, or a server error."""
    if script.error_body is not None:
        inner = script.error_body.get("error", script.error_body)
        return inner if isinstance(inner, dict) else {"message": str(inner)}
    error = default_error("openai", status)["error"]
    assert isinstance(error, dict)
    return error


def _anthropic_error_payload(script: Script, request_id: str) -> dict[str, Any]:
    """The data of a mid-stream `error` event: the script's `error_body`, or overloaded."""
    if script.error_body is not None:
        return script.error_body
    payload = default_error("anthropic", 529, request_id=request_id)
    payload.pop("request_id", None)
    return payload


def _openai_stream(body: dict[str, Any], script: Script, ids: Ids, created: int) -> StreamPlan:
    mode, name = openai_mode(body)
    sent, cut = script.cut()
    pieces = split_text(sent, script.chunk_size)
    envelope = {
        "id": ids.completion(),
        "object": "chat.completion.chunk",
        "created": created,
        "model": _model("openai", body),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {_json({**envelope, 'choices': [choice]})}\n\n".encode()

    if mode == "tools":
        call = {
            "index": 0,
            "id": ids.call(),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        first: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [call],
            "refusal": None,
        }
    elif mode == "functions":
        first = {
            "role": "assistant",
            "content": None,
            "function_call": {"name": name, "arguments": ""},
            "refusal": None,
        }
    else:
        first = {"role": "assistant", "content": "", "refusal": None}

    def delta_of(piece: str) -> dict[str, Any]:
        if mode == "tools":
            return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        if mode == "functions":
            return {"function_call": {"arguments": piece}}
        return {"content": piece}

    chunks = [Chunk(event(first))]
    chunks += [Chunk(event(delta_of(p)), script.delay) for p in pieces]
    if cut is Cut.ERROR:
        error = {"error": _openai_error_payload(script)}
        chunks.append(Chunk(f"data: {_json(error)}\n\n".encode()))
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        finish = {"tools": "tool_calls", "functions": "function_call"}.get(mode, "stop")
        chunks.append(Chunk(event({}, "length" if cut is Cut.TRUNCATE else finish)))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            prompt, completion = _prompt_tokens(body), max(1, len(pieces))
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": 0},
            }
            data = _json({**envelope, "choices": [], "usage": usage})
            chunks.append(Chunk(f"data: {data}\n\n".encode()))
        chunks.append(Chunk(b"data: [DONE]\n\n"))
    return StreamPlan(chunks, _ending(cut), sent)


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {_json(data)}\n\n".encode()


_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def _anthropic_stream(body: dict[str, Any], script: Script, ids: Ids) -> StreamPlan:
    mode, name = anthropic_mode(body)
    sent, cut = script.cut()
    pieces = split_text(sent, script.chunk_size)
    message: dict[str, Any] = {
        "id": ids.message(),
        "type": "message",
        "role": "assistant",
        "model": _model("anthropic", body),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _prompt_tokens(body),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard",
        },
    }
    chunks = [Chunk(_sse("message_start", {"type": "message_start", "message": message}))]
    if mode == "tool_use":
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": ids.tool_use(),
            "name": name,
            "caller": {"type": "direct"},
            "input": {},
        }
    else:
        block = {"type": "text", "text": ""}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    chunks += [Chunk(_sse("content_block_start", start)), Chunk(_PING)]

    def delta(piece: str) -> bytes:
        inner = (
            {"type": "input_json_delta", "partial_json": piece}
            if mode == "tool_use"
            else {"type": "text_delta", "text": piece}
        )
        return _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": inner}
        )

    if mode == "tool_use":
        chunks.append(Chunk(delta("")))
    chunks += [Chunk(delta(p), script.delay) for p in pieces]
    if cut is Cut.ERROR:
        # The docs show error events spaced like `ping`, not compact like the others.
        error = json.dumps(_anthropic_error_payload(script, ids.request("anthropic")))
        chunks.append(Chunk(f"event: error\ndata: {error}\n\n".encode()))
    elif cut in (Cut.COMPLETE, Cut.TRUNCATE):
        if cut is Cut.COMPLETE:
            # A cut-off block gets no content_block_stop (see the incomplete_partial_json capture).
            stop = {"type": "content_block_stop", "index": 0}
            chunks.append(Chunk(_sse("content_block_stop", stop)))
            reason = "tool_use" if mode == "tool_use" else "end_turn"
        else:
            reason = "max_tokens"
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": max(1, len(pieces))},
        }
        chunks.append(Chunk(_sse("message_delta", message_delta)))
        chunks.append(Chunk(_sse("message_stop", {"type": "message_stop"})))
    return StreamPlan(chunks, _ending(cut), sent)


# -- non-streaming answers ---------------------------------------------------------------------


def error_status_for_cut(provider: Provider) -> int:
    """The HTTP status a non-streaming request gets for `error_after` (the error can't be sent
    mid-body, so the whole answer is that error): 500 for OpenAI, 529 (overloaded) for Anthropic.
    """
    return 500 if provider == "openai" else 529


def completion_body(
    provider: Provider,
    body: dict[str, Any],
    script: Script,
    *,
    ids: Ids | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The non-streaming answer: an OpenAI ChatCompletion or an Anthropic Message.

    Honours `truncate_after` (finish_reason `length` / stop_reason `max_tokens`); the other cuts
    are the I/O shell's business.
    """
    ids = ids or Ids()
    sent, cut = script.cut()
    truncated = cut is Cut.TRUNCATE
    tokens = max(1, len(split_text(sent, script.chunk_size)))
    prompt = _prompt_tokens(body)
    if provider == "openai":
        mode, name = openai_mode(body)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if mode == "tools":
            function = {"name": name, "arguments": sent}
            message["tool_calls"] = [{"id": ids.call(), "type": "function", "function": function}]
        elif mode == "functions":
            message["function_call"] = {"name": name, "arguments": sent}
        else:
            message["content"] = sent
        message.update(refusal=None, annotations=[])
        finish = {"tools": "tool_calls", "functions": "function_call"}.get(mode, "stop")
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "length" if truncated else finish,
        }
        return {
            "id": ids.completion(),
            "object": "chat.completion",
            "created": int(time.time() if now is None else now),
            "model": _model("openai", body),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
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
    mode, name = anthropic_mode(body)
    if mode == "tool_use":
        try:
            parsed = json.loads(sent)
        except ValueError:
            parsed = None
        # A tool's input is always an object; a cut or malformed answer becomes `{}`.
        tool_input = parsed if isinstance(parsed, dict) else {}
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": ids.tool_use(),
            "name": name,
            "input": tool_input,
        }
        reason = "tool_use"
    else:
        block = {"type": "text", "text": sent}
        reason = "end_turn"
    return {
        "id": ids.message(),
        "type": "message",
        "role": "assistant",
        "model": _model("anthropic", body),
        "content": [block],
        "stop_reason": "max_tokens" if truncated else reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": tokens,
            "service_tier": "standard",
        },
    }


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


def default_error(
    provider: Provider, status: int, *, message: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """The error JSON the provider sends with `status` (a realistic default per status)."""
    if provider == "openai":
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
    fallback_a = ("api_error" if status >= 500 else "invalid_request_error", "")
    kind, text = _ANTHROPIC_ERRORS.get(status, fallback_a)
    payload: dict[str, Any] = {
        "type": "error",
        "error": {"type": kind, "message": message or text or f"HTTP {status}"},
    }
    if request_id is not None:
        payload["request_id"] = request_id
    return payload


def json_body(provider: Provider, payload: Any, *, error: bool = False) -> bytes:
    """A JSON response body laid out as the provider lays it out.

    OpenAI pretty-prints (2 spaces for answers, 4 for errors); Anthropic sends compact JSON.
    """
    if provider == "openai":
        return json.dumps(payload, indent=4 if error else 2, ensure_ascii=False).encode()
    return _json(payload).encode()


# -- headers -----------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    """A number of seconds as a header value: no exponent, no needless `.0`."""
    return str(int(value)) if value == int(value) else f"{value:.3f}".rstrip("0").rstrip(".")


def response_headers(
    provider: Provider,
    *,
    request_id: str,
    content_type: Literal["stream", "json"],
    content_length: int | None = None,
    keep_alive: bool = True,
    retry_after: float | None = None,
    extra: dict[str, str] | None = None,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """Response headers like the provider's: chunked for a stream, else `content_length`.

    `extra` headers come last and replace any default of the same name (case-insensitive).
    """
    headers: list[tuple[str, str]] = [("date", formatdate(now, usegmt=True))]
    if content_type == "stream":
        sse = "text/event-stream; charset=utf-8" if provider == "openai" else "text/event-stream"
        headers += [("content-type", sse), ("transfer-encoding", "chunked")]
    else:
        headers.append(("content-type", "application/json"))
        headers.append(("content-length", str(content_length or 0)))
    headers.append(("connection", "keep-alive" if keep_alive else "close"))
    if provider == "openai":
        headers += [
            ("access-control-expose-headers", "X-Request-ID"),
            ("openai-organization", "user-test"),
            ("openai-processing-ms", "42"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", request_id),
        ]
    else:
        headers += [
            ("request-id", request_id),
            ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
        ]
        if content_type == "stream":
            headers.append(("cache-control", "no-cache"))
    if retry_after is not None:
        headers.append(("retry-after", _seconds(retry_after)))
        headers.append(("retry-after-ms", _seconds(retry_after * 1000)))
    if extra:
        replaced = {name.lower() for name in extra}
        headers = [(k, v) for k, v in headers if k not in replaced]
        headers += [(k.lower(), v) for k, v in extra.items()]
    return headers
