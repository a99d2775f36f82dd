"""Tracing with OpenTelemetry: a span per extraction, and a span per request attempt under it.

    extract {model}          INTERNAL  one extraction: items, requests, retries, usage, outcome
      chat {model}           CLIENT    one request attempt, as the GenAI semantic conventions
      chat {model}           CLIENT    ... the next attempt, after a `multitask.retry` event
                                       on the extraction's span

Only with `opentelemetry-api` installed (the `otel` extra), imported at a client's first
extraction, never by `import multitask`; without it, or with no tracer provider set up, every
hook is a shared no-op object. The spans go to the global tracer provider (what
`logfire.configure()` or an OpenTelemetry SDK set-up installs), or to the client's
`tracer_provider`.

No span is ever made current. An extraction's items come out of an async generator, whose
`__anext__` calls may run in different contexts (a `with` entered in one and left in another
breaks the context variables it set; PEP 789's trouble, for contexts): the extraction's span
takes the span current when the stream starts as its parent, and its request spans name it as
theirs explicitly. Spans are started and ended here, never across a `with` around a yield.

What spans carry is metadata (model, provider, server, token counts, finish reasons, counts of
items, requests, retries, chunks), never the API key or a header. The prompt and the items go
in only when content capture is on (the client's `trace_content=True`, or
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`), and then through the provider's
redactor, so that a key in the text is `[redacted]` there too.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

from pydantic_core import to_jsonable_python

from ._exceptions import APIStatusError, IncompleteOutputError, ProviderError
from ._parts import Parts
from ._providers import Provider, RequestSpec, Usage
from ._stream import StreamInfo

if TYPE_CHECKING:  # the `otel` extra's types; `Any` where it is not installed
    from opentelemetry.trace import (  # type: ignore[import-not-found, unused-ignore]  # pyright: ignore[reportMissingImports]
        Span,
        Tracer,
        TracerProvider,
    )

__all__ = [
    "CONTENT_ENV",
    "NO_EXTRACTION",
    "ExtractionTrace",
    "RequestsTrace",
    "Telemetry",
    "provider_name",
]

#: The GenAI semantic conventions' switch for recording prompts and answers.
CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: The values of `CONTENT_ENV` that turn capture on: `true`, and the span values of the
#: GenAI utilities' newer form (this records content on spans, never as log events).
_CONTENT_ON: Final = frozenset({"true", "1", "yes", "span_only", "span_and_event"})

#: multitask's provider names as the conventions' `gen_ai.provider.name` spells them; any
#: other provider (ollama, vllm, a registered one) goes by its own name.
_PROVIDER_NAMES: Final = {
    "openai": "openai",
    "openai-responses": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
}

#: The operation of the extraction span: not one of the conventions' values (which name one
#: call to a model), as the attribute allows; its requests are `chat` (Gemini's
#: `generate_content`, as the conventions name that API).
EXTRACT: Final = "extract"


def provider_name(name: str) -> str:
    """`gen_ai.provider.name` for a multitask provider."""
    return _PROVIDER_NAMES.get(name, name)


def content_from_env() -> bool:
    """Whether `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` turns content capture on."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON


class _Answer(Protocol):
    """What an attempt's end reads of its pipeline."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def finish_reason(self) -> str | None: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...


class Telemetry:
    """One client's tracing: where its spans go, and whether they may carry content."""

    __slots__ = ("_given", "_redact", "_tracer", "content", "model", "operation", "provider")

    def __init__(
        self,
        provider: Provider,
        model: str,
        *,
        tracer_provider: TracerProvider | None = None,
        content: bool | None = None,
    ) -> None:
        #: `gen_ai.provider.name`.
        self.provider = provider_name(provider.name)
        #: `gen_ai.request.model`: the model's name as the provider is asked for it.
        self.model = model
        self.operation = "generate_content" if self.provider == "gcp.gemini" else "chat"
        #: Whether spans carry the prompt and the items.
        self.content = content_from_env() if content is None else content
        self._given = tracer_provider
        redactor = provider.redactor if self.content else None
        self._redact: Callable[[str], str] | None = None if redactor is None else redactor.text
        self._tracer: Any = False  # False: not looked for yet

    def tracer(self) -> Tracer | None:
        """The tracer, or None without opentelemetry (looked for once, at first use)."""
        if self._tracer is False:
            api = _api()
            self._tracer = (
                None
                if api is None
                # The global provider's (a proxy until one is set up, then that one's).
                else api.get_tracer("multitask", _version(), tracer_provider=self._given)
            )
        tracer: Tracer | None = self._tracer
        return tracer

    def extraction(self, task: str) -> ExtractionTrace:
        """A new extraction's span, under the span current now; `NO_EXTRACTION` when nothing
        records it (no opentelemetry, no tracer provider set up, or not sampled)."""
        tracer = self.tracer()
        if tracer is None:
            return NO_EXTRACTION
        span = tracer.start_span(
            f"{EXTRACT} {self.model}",
            kind=_kind().INTERNAL,
            attributes={
                "gen_ai.operation.name": EXTRACT,
                "gen_ai.provider.name": self.provider,
                "gen_ai.request.model": self.model,
                "multitask.item_type": task,
            },
        )
        if not span.is_recording():
            span.end()
            return NO_EXTRACTION
        return _LiveExtraction(self, span)

    def requests(
        self, spec: RequestSpec, url: str, within: tuple[ExtractionTrace, int, int] | None = None
    ) -> RequestsTrace:
        """The request attempts of one `Engine.run`: under `within` (a chunked text's
        extraction, the chunk's index and that chunk's request number, from 1), or under an
        extraction of their own, started now and ended with the last attempt."""
        if within is None:
            extraction, chunk, request = self.extraction(spec.schema.task_name), None, None
        else:
            extraction, chunk, request = within
        if not isinstance(extraction, _LiveExtraction):
            return NO_REQUESTS
        return _LiveRequests(
            self, extraction, spec, url, owned=within is None, chunk=chunk, request=request
        )

    def text(self, text: str) -> str:
        """Content as spans may carry it: the provider's credentials replaced."""
        return self._redact(text) if self._redact is not None else text


@lru_cache(maxsize=1)
def _api() -> Any:
    """`opentelemetry.trace`, imported at the first extraction; None where it is not installed."""
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


@lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multitask")
    except PackageNotFoundError:  # a source tree on sys.path
        return "0+unknown"


def _kind() -> Any:
    return _api().SpanKind


def _error_status(description: str) -> Any:
    api = _api()
    return api.Status(api.StatusCode.ERROR, description)


def _context_of(span: Span) -> Any:
    """A context with `span` in it, to start a child in (never made current)."""
    return _api().set_span_in_context(span)


def error_type(error: BaseException) -> str:
    """`error.type`: the HTTP status of an error status, else the exception's class, named
    as it is imported (`multitask.APITimeoutError`)."""
    if isinstance(error, APIStatusError) and error.status_code is not None:
        return str(error.status_code)
    kind = type(error)
    module = kind.__module__
    if module == "multitask" or module.startswith("multitask."):
        return f"multitask.{kind.__qualname__}"
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _described(error: BaseException, content: bool) -> str:
    """An error's status description: its message only with content capture on (a provider's
    message or a validation error may quote the text or the answer), else its kind."""
    if content:
        return str(error)
    said = type(error).__name__
    if isinstance(error, ProviderError):
        if error.status_code is not None:
            said += f": HTTP {error.status_code}"
        if error.error_type:
            said += f" ({error.error_type})"
    return said


def _cancelled(error: BaseException) -> bool:
    """A stream closed early (GeneratorExit) or a cancelled task: not an error of ours."""
    return not isinstance(error, Exception)


class ExtractionTrace:
    """An extraction's span; this base records nothing (`NO_EXTRACTION`)."""

    __slots__ = ()

    def end(
        self,
        info: StreamInfo,
        error: BaseException | None = None,
        *,
        chunks: int | None = None,
        continuations: int | None = None,
    ) -> None:
        """End the span with what the extraction did (`chunks`, `continuations`: a chunked
        text's) and how it ended."""


NO_EXTRACTION: Final = ExtractionTrace()


class _LiveExtraction(ExtractionTrace):
    __slots__ = ("_ended", "_span", "_telemetry", "requests", "retries", "usage")

    def __init__(self, telemetry: Telemetry, span: Span) -> None:
        self._telemetry = telemetry
        self._span = span
        self._ended = False
        #: Request attempts made, and how many were retries.
        self.requests = 0
        self.retries = 0
        #: Every attempt's usage, added up (the stream's own is its last answer's).
        self.usage: Usage | None = None

    def context(self) -> Any:
        return _context_of(self._span)

    def retry(self, attributes: Mapping[str, Any]) -> None:
        self.retries += 1
        self._span.add_event("multitask.retry", attributes=attributes)

    def end(
        self,
        info: StreamInfo,
        error: BaseException | None = None,
        *,
        chunks: int | None = None,
        continuations: int | None = None,
    ) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._span
        found: dict[str, Any] = {
            "multitask.items": info.items,
            "multitask.requests": self.requests,
            "multitask.retries": self.retries,
            "multitask.skipped": len(info.skipped),
        }
        repairs = getattr(info, "repairs", None)  # with on_invalid="repair"
        if isinstance(repairs, int):
            found["multitask.repairs"] = repairs
        if chunks is not None:
            found["multitask.chunks"] = chunks
        if continuations is not None:
            found["multitask.continuations"] = continuations
        found.update(_usage("multitask.usage", self.usage))
        if info.finish_reason is not None:
            found["gen_ai.response.finish_reasons"] = [info.finish_reason]
        span.set_attributes(found)
        _record(span, error, self._telemetry.content)
        span.end()


def _usage(prefix: str, usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    found: dict[str, Any] = {
        f"{prefix}.input_tokens": usage.input_tokens,
        f"{prefix}.output_tokens": usage.output_tokens,
    }
    cost = getattr(usage, "cost", None)
    if cost is not None:
        found["multitask.usage.cost"] = cost
    return found


def _record(span: Span, error: BaseException | None, content: bool) -> None:
    """How a span's work ended: cancelled (status unset), failed (status ERROR), or well."""
    if error is None:
        return
    if _cancelled(error):
        span.set_attribute("multitask.cancelled", True)
        return
    span.set_attribute("error.type", error_type(error))
    span.set_status(_error_status(_described(error, content)))
    if content:  # the message and the traceback, as logfire and others show exceptions
        span.record_exception(error)


class RequestsTrace:
    """The request attempts of one `Engine.run`; this base records nothing (`NO_REQUESTS`).

    The engine calls `attempt` as an attempt starts, one of `done` / `retrying` / `failed`
    as it ends, and `attempt_end` in its `finally`; `guard()` is around what it awaits
    between attempts (the rate limiter, the back-off), so that a cancellation there ends the
    spans too. With `content` on, `item` is given each item delivered."""

    __slots__ = ()

    #: Whether `item` wants the items (content capture is on).
    content: bool = False

    def attempt(self, number: int, info: StreamInfo) -> None:
        """Attempt `number` starts."""

    def item(self, item: Any) -> None:
        """An item (or event) the attempt delivered."""

    def done(self) -> None:
        """The attempt ended well: the extraction is complete."""

    def retrying(self, error: BaseException, delay: float) -> None:
        """The attempt failed with `error`; another follows in `delay` seconds."""

    def failed(self, error: BaseException) -> None:
        """The attempt failed for good, was cancelled, or its stream was closed."""

    def attempt_end(self, info: StreamInfo, answer: _Answer, response: _Response | None) -> None:
        """The attempt's end, whatever it was: its usage and finish reason, and its span ends
        (and the extraction's, when it was the last)."""

    def guard(self) -> _Guard:
        """A context for an await between attempts: an exception there ends the spans."""
        return _NO_GUARD


class _Guard:
    """`RequestsTrace.guard()`: ends the extraction on an exception (the no-op one does nothing)."""

    __slots__ = ("_requests",)

    def __init__(self, requests: _LiveRequests | None) -> None:
        self._requests = requests

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._requests is not None:
            self._requests.between(exc)


_NO_GUARD: Final = _Guard(None)
NO_REQUESTS: Final = RequestsTrace()

#: What an attempt's span is left at by its end: open (an exception we did not see), well,
#: retried, or the error it failed with.
_OPEN: Final = "open"
_OK: Final = "ok"
_RETRY: Final = "retry"


class _LiveRequests(RequestsTrace):
    __slots__ = (
        "_attempt_items",
        "_base",
        "_extraction",
        "_info",
        "_items",
        "_owned",
        "_span",
        "_spec",
        "_state",
        "_telemetry",
        "content",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        extraction: _LiveExtraction,
        spec: RequestSpec,
        url: str,
        *,
        owned: bool,
        chunk: int | None,
        request: int | None,
    ) -> None:
        self._telemetry = telemetry
        self._extraction = extraction
        self._spec = spec
        self._owned = owned
        self.content = telemetry.content
        self._span: Span | None = None
        self._state: str | BaseException = _OPEN
        self._items: list[Any] = []
        self._attempt_items = 0
        self._info = StreamInfo()  # the run's, from its first attempt on
        base: dict[str, Any] = {
            "gen_ai.operation.name": telemetry.operation,
            "gen_ai.provider.name": telemetry.provider,
            "gen_ai.request.model": spec.model,
            "gen_ai.output.type": "json",
        }
        base.update(_server(url))
        if spec.max_tokens is not None:
            base["gen_ai.request.max_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            base["gen_ai.request.temperature"] = spec.temperature
        if chunk is not None:
            base["multitask.chunk"] = chunk
        if request is not None:
            base["multitask.chunk.request"] = request
        if self.content:
            base["gen_ai.system_instructions"] = telemetry.text(
                json.dumps([{"type": "text", "content": spec.system}])
            )
            base["gen_ai.input.messages"] = telemetry.text(
                json.dumps([_message(m) for m in spec.messages])
            )
        self._base = base

    def attempt(self, number: int, info: StreamInfo) -> None:
        telemetry, extraction = self._telemetry, self._extraction
        extraction.requests += 1
        self._state = _OPEN
        self._items = []
        self._info = info
        self._attempt_items = info.items
        tracer = telemetry.tracer()
        assert tracer is not None  # a live extraction has one
        self._span = tracer.start_span(
            f"{telemetry.operation} {self._spec.model}",
            context=extraction.context(),
            kind=_kind().CLIENT,
            attributes={**self._base, "multitask.attempt": number},
        )

    def item(self, item: Any) -> None:
        if type(item).__module__ in _EVENT_MODULES:  # `extract_events`: ItemDone's item only
            if not hasattr(item, "item"):
                return
            item = item.item
        self._items.append(item)

    def done(self) -> None:
        self._state = _OK

    def retrying(self, error: BaseException, delay: float) -> None:
        self._state = _RETRY
        self._failed(error)
        event: dict[str, Any] = {
            "multitask.attempt": self._extraction.requests,
            "multitask.retry.delay": delay,
            "error.type": error_type(error),
            "multitask.retry.reason": _described(error, self.content),
        }
        chunk = self._base.get("multitask.chunk")
        if chunk is not None:
            event["multitask.chunk"] = chunk
        self._extraction.retry(event)

    def failed(self, error: BaseException) -> None:
        self._state = error
        if self._owned or not isinstance(error, IncompleteOutputError):
            # A chunked text's cut answer is continued: its reader decides whether that fails.
            self._failed(error)

    def _failed(self, error: BaseException) -> None:
        if self._span is not None:
            _record(self._span, error, self.content)

    def attempt_end(self, info: StreamInfo, answer: _Answer, response: _Response | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        usage, finish_reason = answer.usage, answer.finish_reason
        found: dict[str, Any] = {"multitask.items": info.items - self._attempt_items}
        found.update(_usage("gen_ai.usage", usage))
        if finish_reason is not None:
            found["gen_ai.response.finish_reasons"] = [finish_reason]
        if response is not None:
            found["http.response.status_code"] = response.status_code
        if self.content:
            found["gen_ai.output.messages"] = self._output(finish_reason)
        span.set_attributes(found)
        span.end()
        extraction = self._extraction
        if usage is not None:
            extraction.usage = usage if extraction.usage is None else extraction.usage + usage
        state = self._state
        if self._owned and state != _RETRY:
            extraction.end(info, None if isinstance(state, str) else state)

    def _output(self, finish_reason: str | None) -> str:
        answer = json.dumps({"tasks": to_jsonable_python(self._items, fallback=repr)})
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": answer}],
            "finish_reason": finish_reason or "",
        }
        return self._telemetry.text(json.dumps([message]))

    def guard(self) -> _Guard:
        return _Guard(self)  # made each time: held here, it would be a reference cycle

    def between(self, error: BaseException) -> None:
        """An exception between attempts (cancelled in the back-off, say)."""
        if self._owned:
            self._extraction.end(self._info, error)


#: Where `extract_events`' event classes live (their items are in `ItemDone.item`).
_EVENT_MODULES: Final = frozenset({"multitask._partial", "multitask._events"})


def _server(url: str) -> dict[str, Any]:
    """`server.address` and `server.port` of a request URL (never its path or query, where a
    key may be)."""
    parts = urlsplit(url)
    found: dict[str, Any] = {}
    if parts.hostname:
        found["server.address"] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            port = {"https": 443, "http": 80}.get(parts.scheme)
        if port is not None:
            found["server.port"] = port
    return found


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message in the conventions' form: a role and its parts (no file's bytes)."""
    content = message.get("content")
    if isinstance(content, Parts):
        content = content.items
    parts: list[dict[str, Any]] = []
    pieces: Sequence[Any] = (
        [content] if isinstance(content, str) or not isinstance(content, Sequence) else content
    )
    for piece in pieces:
        if isinstance(piece, str):
            parts.append({"type": "text", "content": piece})
        elif isinstance(piece, Mapping) and isinstance(piece.get("text"), str):
            parts.append({"type": "text", "content": piece["text"]})
        else:
            media_type = getattr(piece, "media_type", None)
            part: dict[str, Any] = {"type": "blob"}
            if media_type:
                part["mime_type"] = media_type
                if media_type.startswith("image/"):
                    part["modality"] = "image"
            parts.append(part)
    return {"role": str(message.get("role", "user")), "parts": parts}
