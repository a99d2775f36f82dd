"""The providers' wire formats, sans-IO: what bytes answer a request, knowing nothing of sockets.

Given a provider, the parsed request body and a `Script`, this module computes the response:
the stream's events (each one chunk, with the pause to take before sending it), the JSON of a
non-streaming answer, the error JSON of an HTTP error, and the response headers. It routes
request paths to providers too. Each provider's shapes live in a `_wire_*` module beside this
one and follow the real services: OpenAI's and Anthropic's match the captures in
`shared/wire/` byte for byte (compact JSON, the same keys in the same order, the same events).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Literal

from multitask.testing._script import Script
from multitask.testing._wire_anthropic import (
    anthropic_error,
    anthropic_message,
    anthropic_mode,
    anthropic_stream,
)
from multitask.testing._wire_base import (
    DEFAULT_MODELS,
    PROVIDERS,
    SYSTEM_FINGERPRINT,
    Chunk,
    Ending,
    Ids,
    Mode,
    Provider,
    StreamPlan,
    prompt_tokens,
    split_text,
)
from multitask.testing._wire_chat import (
    azure_error,
    chat_completion,
    chat_stream,
    openai_error,
    openai_mode,
)
from multitask.testing._wire_gemini import gemini_body, gemini_error, gemini_mode, gemini_stream
from multitask.testing._wire_ollama import go_json, ollama_body, ollama_error, ollama_stream
from multitask.testing._wire_responses import responses_body, responses_mode, responses_stream

__all__ = [
    "DEFAULT_MODELS",
    "PROVIDERS",
    "SYSTEM_FINGERPRINT",
    "Chunk",
    "Ending",
    "Ids",
    "Mode",
    "Provider",
    "Route",
    "StreamPlan",
    "anthropic_mode",
    "completion_body",
    "default_error",
    "error_status_for_cut",
    "gemini_mode",
    "json_body",
    "openai_mode",
    "prompt_tokens",
    "response_headers",
    "responses_mode",
    "route",
    "split_text",
    "stream_plan",
    "wants_stream",
]

_prompt_tokens = prompt_tokens  # the name it had before the providers got modules of their own

# -- routes ------------------------------------------------------------------------------------

_PATHS: dict[str, Provider] = {
    "/v1/chat/completions": "openai",
    "/chat/completions": "openai",
    "/v1/messages": "anthropic",
    "/v1/responses": "openai-responses",
    "/responses": "openai-responses",
    "/api/chat": "ollama",
    "/openai/v1/chat/completions": "azure",
}
_GEMINI_PATH = re.compile(
    r"^/(?:v1|v1beta|v1alpha)/models/([^/:]+):(streamGenerateContent|generateContent)$"
)
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


@dataclass(frozen=True)
class Route:
    """Where a request path leads: the provider, and the model (or deployment) it names."""

    provider: Provider
    model: str | None = None


def route(path: str) -> Route | None:
    """The provider that serves `path` (POST), or None for an unknown path."""
    provider = _PATHS.get(path)
    if provider is not None:
        return Route(provider)
    match = _GEMINI_PATH.match(path)
    if match:
        return Route("gemini", match.group(1))
    match = _AZURE_PATH.match(path)
    if match:
        return Route("azure", match.group(1))
    return None


def wants_stream(provider: Provider, path: str, body: Any) -> bool:
    """Whether the request asks for a stream: Gemini by its path, Ollama unless `stream` is
    false, the others when `stream` is true."""
    if provider == "gemini":
        return path.endswith(":streamGenerateContent")
    if not isinstance(body, dict):
        return False
    if provider == "ollama":
        return body.get("stream", True) is not False
    return body.get("stream") is True


# -- answers -----------------------------------------------------------------------------------


def stream_plan(
    provider: Provider,
    body: dict[str, Any],
    script: Script,
    *,
    ids: Ids | None = None,
    now: float | None = None,
    model: str | None = None,
) -> StreamPlan:
    """The events that stream `script`'s answer to `body`, as the provider would send them.

    `model` is the model the URL names (Gemini's `models/{model}`), if any.
    """
    ids = ids or Ids()
    now = time.time() if now is None else now
    if provider in ("openai", "azure"):
        return chat_stream(provider, body, script, ids, int(now))
    if provider == "anthropic":
        return anthropic_stream(body, script, ids)
    if provider == "openai-responses":
        return responses_stream(body, script, ids, int(now))
    if provider == "gemini":
        return gemini_stream(body, script, ids, model)
    return ollama_stream(body, script, now)


def completion_body(
    provider: Provider,
    body: dict[str, Any],
    script: Script,
    *,
    ids: Ids | None = None,
    now: float | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The non-streaming answer in the provider's shape (a ChatCompletion, a Message, ...).

    Honours `truncate_after` (the provider's truncation finish); the other cuts are the I/O
    shell's business.
    """
    ids = ids or Ids()
    now = time.time() if now is None else now
    if provider in ("openai", "azure"):
        return chat_completion(provider, body, script, ids, int(now))
    if provider == "anthropic":
        return anthropic_message(body, script, ids)
    if provider == "openai-responses":
        return responses_body(body, script, ids, int(now))
    if provider == "gemini":
        return gemini_body(body, script, ids, model)
    return ollama_body(body, script, now)


def error_status_for_cut(provider: Provider) -> int:
    """The HTTP status a non-streaming request gets for `error_after` (the error can't be sent
    mid-body, so the whole answer is that error): 529 (overloaded) for Anthropic, 503 for
    Gemini, 500 for the others.
    """
    return {"anthropic": 529, "gemini": 503}.get(provider, 500)


# -- errors ------------------------------------------------------------------------------------


def default_error(
    provider: Provider,
    status: int,
    *,
    message: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The error JSON the provider sends with `status` (a realistic default per status).

    `request_id` goes in Anthropic's body, `retry_after` in Gemini's (a RetryInfo detail), and
    `model` in Ollama's not-found message.
    """
    if provider in ("openai", "openai-responses"):
        return openai_error(status, message)
    if provider == "azure":
        return azure_error(status, message)
    if provider == "gemini":
        return gemini_error(status, message, retry_after)
    if provider == "ollama":
        return ollama_error(status, message, model or "")
    return anthropic_error(status, message, request_id)


def json_body(provider: Provider, payload: Any, *, error: bool = False) -> bytes:
    """A JSON response body laid out as the provider lays it out.

    OpenAI pretty-prints (2 spaces for answers, 4 for errors); Google pretty-prints with 2;
    Ollama writes Go's compact JSON; Anthropic and Azure send compact JSON.
    """
    if provider in ("openai", "openai-responses"):
        return json.dumps(payload, indent=4 if error else 2, ensure_ascii=False).encode()
    if provider == "gemini":
        return json.dumps(payload, indent=2, ensure_ascii=False).encode()
    if provider == "ollama":
        return go_json(payload).encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# -- headers -----------------------------------------------------------------------------------

_STREAM_TYPES: dict[Provider, str] = {
    "openai": "text/event-stream; charset=utf-8",
    "openai-responses": "text/event-stream; charset=utf-8",
    "azure": "text/event-stream; charset=utf-8",
    "anthropic": "text/event-stream",
    "gemini": "text/event-stream",
    "ollama": "application/x-ndjson",
}
_JSON_TYPES: dict[Provider, str] = {
    "gemini": "application/json; charset=UTF-8",
    "ollama": "application/json; charset=utf-8",
}


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
        headers += [("content-type", _STREAM_TYPES[provider]), ("transfer-encoding", "chunked")]
    else:
        headers.append(("content-type", _JSON_TYPES.get(provider, "application/json")))
        headers.append(("content-length", str(content_length or 0)))
    headers.append(("connection", "keep-alive" if keep_alive else "close"))
    if provider in ("openai", "openai-responses"):
        headers += [
            ("access-control-expose-headers", "X-Request-ID"),
            ("openai-organization", "user-test"),
            ("openai-processing-ms", "42"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", request_id),
        ]
    elif provider == "anthropic":
        headers += [
            ("request-id", request_id),
            ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000"),
        ]
        if content_type == "stream":
            headers.append(("cache-control", "no-cache"))
    elif provider == "azure":
        headers += [
            ("apim-request-id", request_id),
            ("x-request-id", request_id),
            ("x-ms-region", "East US"),
            ("x-ratelimit-remaining-requests", "99"),
            ("x-ratelimit-remaining-tokens", "99000"),
            ("azureml-model-session", "d001-20240925044034"),
            ("x-content-type-options", "nosniff"),
            ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ]
    elif provider == "gemini":
        headers += [
            ("vary", "Origin, X-Origin, Referer"),
            ("server", "scaffolding on HTTPServer2"),
            ("x-xss-protection", "0"),
            ("x-frame-options", "SAMEORIGIN"),
            ("x-content-type-options", "nosniff"),
            ("server-timing", "gfet4t7; dur=412"),
        ]
    # Gemini says how long to wait only in its error body (a RetryInfo detail).
    if retry_after is not None and provider != "gemini":
        headers.append(("retry-after", _seconds(retry_after)))
        if provider != "ollama":
            headers.append(("retry-after-ms", _seconds(retry_after * 1000)))
    if extra:
        replaced = {name.lower() for name in extra}
        headers = [(k, v) for k, v in headers if k not in replaced]
        headers += [(k.lower(), v) for k, v in extra.items()]
    return headers
