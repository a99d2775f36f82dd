"""The async client: sends the request, feeds the response bytes to an `Extraction`, retries.

This is the I/O shell around the sans-IO pieces. Bytes go from the socket straight into the
pipeline as they arrive; each validated item is handed to the caller before the next read.
Over multitask's own transport the pipeline is fed in the socket's callback
(`ResponseBody.read_into`), and the caller's task wakes once per batch of items rather than
once per read; over any other httpx2 transport the body is read through httpx2
(`_BodyItems`). Every failure of httpx2's comes out as one of multitask's exceptions.
"""

from __future__ import annotations

import difflib
import math
import os
import random
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from dataclasses import dataclass, fields, replace
from functools import lru_cache, partial
from types import TracebackType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import httpx2
from httpx2._utils import get_environment_proxies
from pydantic_core import to_json

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    MultitaskError,
    ProviderError,
    RetryDivergedError,
    StreamDecodeError,
    StreamError,
)
from ._extraction import Extraction, Pipeline
from ._many import Documents, Progress, Results, extract_many
from ._multitask import MultiTask, MultiTaskModel
from ._prompt import Message, build_messages, default_system
from ._providers import (
    AzureOpenAI,
    HTTPRequest,
    Mode,
    OpenAIChat,
    OpenAIResponses,
    Provider,
    RequestSpec,
    get_provider,
    split_model,
)
from ._providers._provider import unsupported_mode
from ._ratelimit import RateLimiter
from ._stream import ItemStream, StreamInfo
from ._taskparser import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEM_BYTES
from ._transport import StreamingTransport, response_body
from ._validation import OnInvalid

if TYPE_CHECKING:
    from ._events import EventStream

__all__ = ["DEFAULT_TIMEOUT", "Client", "Options"]

T = TypeVar("T")
E = TypeVar("E")

#: Ten seconds to connect; up to ten minutes between two chunks (a model may think long).
DEFAULT_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)

_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Mid-stream error types worth a retry, as Anthropic, OpenAI and Gemini spell them.
_RETRY_ERROR_TYPES = frozenset(
    {
        "overloaded_error",
        "api_error",
        "rate_limit_error",
        "server_error",
        "rate_limit_exceeded",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "INTERNAL",
    }
)
_MAX_ERROR_BODY = 64 * 1024
# The most decompressed bytes handed on at once: a small gzip body can inflate a thousandfold.
_INFLATE_STEP = 64 * 1024
#: What a closed response's stream is replaced with (see `_unbind`): empty, shared.
_SPENT = httpx2.ByteStream(b"")


@dataclass(frozen=True, slots=True)
class Options:
    """Per-extraction settings; the client's are the defaults for every call."""

    mode: Mode | None = None  # None: the provider's default ("tools" for most)
    system: str | None = None
    messages: Sequence[Message] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    on_invalid: OnInvalid = "raise"
    validation_context: Any = None
    timeout: float | httpx2.Timeout | None = None  # None: the client's (see DEFAULT_TIMEOUT)
    deadline: float | None = None
    max_retries: int = 2
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    extra_body: Mapping[str, Any] | None = None


_DEFAULTS: Final = Options()


def _options(base: Options, given: Mapping[str, Any]) -> Options:
    """`base` with the `given` fields replaced, each name known and each value of its type.

    Checked here, where the caller passed them, so that `timeout="5"` or a misspelt `mode`
    is one line now, not a `TypeError` from deep inside the first request.
    """
    types = _option_types()
    for name, value in given.items():
        expected = types.get(name)
        if expected is None:
            close = difflib.get_close_matches(name, [*types, *_KEYWORDS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"unknown option {name!r}{hint}; the options are: {', '.join(types)}"
            )
        if not _is_a(value, expected):
            raise ConfigurationError(
                f"option {name!r} must be {_describe(expected)}, not {type(value).__name__} "
                f"({_short(value)})"
            )
    return replace(base, **given) if given else base


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


_PLAIN: Final[dict[Any, str]] = {
    float: "a number",
    int: "an integer",
    str: "a string",
    # By name: openai sets `__module__` of what it re-exports (httpx2.Timeout) to "openai".
    httpx2.Timeout: "httpx2.Timeout",
}


#: The keywords beside the options that a call may take, for "did you mean" (not options).
_KEYWORDS: Final = (
    "model",
    "base_url",
    "api_key",
    "headers",
    "provider",
    "http_client",
    "backend",
    "max_concurrency",
    "buffer",
    "on_progress",
    "rpm",
    "tpm",
    "limiter",
    "max_connections",
    "min_interval",
    "partial_strings",
    "max_snapshot_values",
)


@lru_cache(maxsize=1)
def _option_types() -> dict[str, Any]:
    """Each `Options` field's type, in the order they are declared."""
    hints = get_type_hints(Options)
    return {f.name: hints[f.name] for f in fields(Options)}


def _is_a(value: object, tp: Any) -> bool:
    """Whether `value` is of the (simple) annotated type `tp`, as `Options` spells types."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    if origin is Union or origin is UnionType:
        return any(_is_a(value, arg) for arg in get_args(tp))
    if origin is Literal:
        return isinstance(value, str) and value in get_args(tp)
    if isinstance(value, bool) and tp in (int, float):
        return False  # `max_retries=True` is a slip, not a count
    if tp is float:
        return isinstance(value, int | float)
    if origin is Sequence:
        return isinstance(value, Sequence) and not isinstance(value, str | bytes)
    check = origin or tp
    return not isinstance(check, type) or isinstance(value, check)


def _describe(tp: Any) -> str:
    """`tp` as the message for a wrong value says it: "a number or None"."""
    if tp in _PLAIN:
        return _PLAIN[tp]
    origin = get_origin(tp)
    if origin is Union or origin is UnionType:
        return " or ".join(_describe(arg) for arg in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in get_args(tp))
    if tp is type(None):
        return "None"
    kind = origin or tp
    module = getattr(kind, "__module__", "")
    name = getattr(kind, "__qualname__", str(kind))
    return (
        name if module in ("builtins", "collections.abc") else f"{module.partition('.')[0]}.{name}"
    )


class Client:
    """An extraction client: one connection pool, the defaults, and `extract_stream`.

    Use it as an async context manager so the pool is closed when you are done:

        async with multitask.Client(model="openai:gpt-4o-mini") as client:
            async for user in client.extract_stream(User, text):
                ...

    `model` is `"provider:model_name"` (default: `MULTITASK_MODEL`). `base_url` and `api_key`
    default to the provider's environment variables. Pass `http_client` to use your own
    `httpx2.AsyncClient` (proxies, custom transports); the client then leaves it open.
    Pass `provider` to use a provider instance you configured yourself (for example
    `AzureOpenAI(api_version=...)`); the model's prefix then only names it.
    Any `Options` field given here is the default for every call.

    What no request could get past (no model or key, an unknown provider, a mode the
    provider lacks, a base URL without http:// or https://, an unknown option or one of the
    wrong type) raises `ConfigurationError` here, not at the first request.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        http_client: httpx2.AsyncClient | None = None,
        provider: Provider | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 1000,
        max_concurrency: int = 100,
        rpm: float | None = None,
        tpm: float | None = None,
        limiter: RateLimiter | None = None,
        **options: Any,
    ) -> None:
        model = model or os.environ.get("MULTITASK_MODEL")
        if not model:
            raise ConfigurationError(
                "no model: pass model='provider:model_name' or set MULTITASK_MODEL"
            )
        provider_name, self.model_name = split_model(model)
        self.model = f"{provider_name}:{self.model_name}"
        self.provider: Provider = provider or get_provider(
            provider_name, base_url=base_url, api_key=api_key
        )
        self.options = _options(_DEFAULTS, options)
        self._headers = dict(headers or {})
        if http_client is not None and not isinstance(http_client, httpx2.AsyncClient):
            raise TypeError(_not_httpx2(http_client))
        # What no request could get past, said now rather than once per request.
        _check_base_url(self.provider, own_http=http_client is None)
        if self.options.mode is not None and self.options.mode not in self.provider.modes:
            raise unsupported_mode(self.provider, self.options.mode)
        self.provider.check_credentials()
        self._own_http = http_client is None
        self._http = http_client
        self._max_connections = max_connections
        #: How many documents `extract_many` works on at once, by default.
        self.max_concurrency = max_concurrency
        if limiter is not None and (rpm or tpm):
            raise ValueError("give rpm/tpm to the limiter, or a limiter, not both")
        #: Shared by every request of this client: `rpm`/`tpm`, and a global pause on 429;
        #: or the `limiter` given (one shared with other clients or processes, say).
        self.limiter = limiter if limiter is not None else RateLimiter(rpm=rpm, tpm=tpm)

    def __repr__(self) -> str:
        return f"<multitask.Client model={self.model!r} provider={self.provider!r}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless it was the caller's own)."""
        if self._own_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            most, keepalive = self._max_connections, min(self._max_connections, 100)
            limits = httpx2.Limits(max_connections=most, max_keepalive_connections=keepalive)
            self._http = httpx2.AsyncClient(
                timeout=DEFAULT_TIMEOUT,
                limits=limits,
                transport=StreamingTransport(
                    max_connections=most, max_keepalive_connections=keepalive
                ),
                mounts=_proxy_mounts(limits),
                follow_redirects=False,
            )
        return self._http

    # -- extraction ----------------------------------------------------------------------------
    # Each entry point is overloaded so that a class gives its own type (`extract(User, ...)`
    # is a `list[User]`), a `MultiTaskModel` its items' type, and anything else (a union, an
    # `Annotated`) `Any`: `type[T] | Any` in one signature would make every call `Any`.

    @overload
    def extract_stream(
        self, item_type: type[MultiTaskModel[T]], text: str | None, **options: Any
    ) -> ItemStream[T]: ...
    @overload
    def extract_stream(
        self, item_type: type[T], text: str | None, **options: Any
    ) -> ItemStream[T]: ...
    @overload
    def extract_stream(
        self, item_type: Any, text: str | None, **options: Any
    ) -> ItemStream[Any]: ...
    def extract_stream(self, item_type: Any, text: str | None, **options: Any) -> ItemStream[Any]:
        """Stream the items of type `item_type` found in `text`, each as soon as it is complete.

        Returns an `ItemStream`: iterate it with `async for`; use it with `async with` to close
        it deterministically. Raises (after the valid items) `IncompleteOutputError`,
        `RefusalError`, `ProviderError`, `APIConnectionError`, `ItemValidationError`, ...
        """
        return self._stream(item_type, text, options)

    def _stream(
        self, item_type: Any, text: str | None, options: Mapping[str, Any], *, resume: bool = False
    ) -> ItemStream[T]:
        prepared: _Prepared[T] = self._prepare(item_type, text, options)
        opts = prepared.opts

        def new_pipeline() -> Extraction[T]:
            return prepared.schema.extraction(
                self.provider.decoder(prepared.spec.mode),
                on_invalid=opts.on_invalid,
                validation_context=opts.validation_context,
                max_item_bytes=opts.max_item_bytes,
                max_answer_bytes=opts.max_answer_bytes,
                max_depth=opts.max_depth,
            )

        info = StreamInfo()
        agen = self._run(prepared, info, new_pipeline, resume=resume)
        item = getattr(prepared.schema, "item_type", item_type)
        return ItemStream(agen, info, item_type=item, model=self.model)

    def _prepare(
        self, item_type: Any, text: str | None, options: Mapping[str, Any]
    ) -> _Prepared[T]:
        """The options, schema, request spec and HTTP request for one extraction."""
        opts = _options(self.options, options) if options else self.options
        schema: type[MultiTaskModel[T]] = _multitask(cast(Hashable, item_type))
        mode = opts.mode or self.provider.default_mode
        system = opts.system or default_system(schema.task_name, parallel=mode == "parallel_tools")
        system, messages = build_messages(text, system=system, messages=opts.messages)
        spec = RequestSpec(
            model=self.model_name,
            schema=schema,
            mode=mode,
            system=system,
            messages=messages,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            extra_body=opts.extra_body or {},
        )
        request = self.provider.request(spec)  # fail fast on a bad mode or missing key
        return _Prepared(opts, schema, spec, request)

    @overload
    async def extract(
        self, item_type: type[MultiTaskModel[T]], text: str | None, **options: Any
    ) -> list[T]: ...
    @overload
    async def extract(self, item_type: type[T], text: str | None, **options: Any) -> list[T]: ...
    @overload
    async def extract(self, item_type: Any, text: str | None, **options: Any) -> list[Any]: ...
    async def extract(self, item_type: Any, text: str | None, **options: Any) -> list[Any]:
        """Extract every item into a list (the stream, collected)."""
        stream: ItemStream[Any] = self.extract_stream(item_type, text, **options)
        return await stream.collect()

    @overload
    def extract_events(
        self, item_type: type[MultiTaskModel[T]], text: str | None, **options: Any
    ) -> EventStream[T]: ...
    @overload
    def extract_events(
        self, item_type: type[T], text: str | None, **options: Any
    ) -> EventStream[T]: ...
    @overload
    def extract_events(
        self, item_type: Any, text: str | None, **options: Any
    ) -> EventStream[Any]: ...
    def extract_events(self, item_type: Any, text: str | None, **options: Any) -> EventStream[Any]:
        """Stream events for each item as it starts, grows and completes (`EventStream[T]`).

        `ItemStarted`, throttled `ItemUpdated` snapshots (`min_interval=0.05` seconds apart,
        `partial_strings=True`), `ItemDone` with the validated item, and a last `Finished`;
        errors are raised as `extract_stream` raises them. See `multitask.EventStream`.
        """
        from ._events import extract_events

        return extract_events(self, item_type, text, **options)

    @overload
    def extract_many(
        self,
        item_type: type[MultiTaskModel[T]],
        documents: Documents,
        *,
        max_concurrency: int | None = None,
        buffer: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[Results[T]]: ...
    @overload
    def extract_many(
        self,
        item_type: type[T],
        documents: Documents,
        *,
        max_concurrency: int | None = None,
        buffer: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[Results[T]]: ...
    @overload
    def extract_many(
        self,
        item_type: Any,
        documents: Documents,
        *,
        max_concurrency: int | None = None,
        buffer: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[Results[Any]]: ...
    def extract_many(
        self,
        item_type: Any,
        documents: Documents,
        *,
        max_concurrency: int | None = None,
        buffer: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[Results[Any]]:
        """Extract from many documents at once; an async context manager of `Result`s.

            async with client.extract_many(User, documents) as results:
                async for r in results:
                    ...   # r.index, and r.item, or r.done (with r.usage), or r.error

        `documents` is any iterable or async iterable of texts, or of `(key, text)` pairs,
        read lazily: only `max_concurrency` documents (default: the client's) are in
        flight; a mapping is read as its `(key, text)` items. Each item is a `Result` as it
        streams; each document ends with a `Result` whose `done` is True, with its `usage`,
        or its `error` once retries are spent. A document that fails mid-stream is retried
        and its items are delivered exactly once (see `RetryDivergedError`). The results
        wait in a buffer of `buffer`; a slow reader holds the workers back. Leaving the
        block early cancels the work in flight.

        What would fail every document (a bad option, a mode the provider lacks) raises
        `ConfigurationError` once, on entering the block; a document that is not a text
        raises `TypeError` naming its position, after the documents before it are done.
        """
        return extract_many(
            self,
            item_type,
            documents,
            max_concurrency=max_concurrency or self.max_concurrency,
            buffer=buffer,
            on_progress=on_progress,
            options=options,
        )

    async def _run(
        self,
        prepared: _Prepared[Any],
        info: StreamInfo,
        new_pipeline: Callable[[], Pipeline[Any, E]],
        *,
        resume: bool = False,
    ) -> AsyncGenerator[E, None]:
        """The request loop: send, stream out what the pipeline completes, retry what may be.

        With `resume`, a stream that fails after delivering items is retried too, and the
        retry's first items are checked against the ones delivered and skipped, so the caller
        sees every item once (`RetryDivergedError` if the retry's answer differs).
        """
        opts, spec, request = prepared.opts, prepared.spec, prepared.request
        http = self._client()
        # Only what `_Inflate` decodes in bounded steps (httpx would offer br and zstd too).
        headers = {"accept-encoding": "gzip, deflate", **request.headers, **self._headers}
        # None: the pool's own timeouts (ours are DEFAULT_TIMEOUT; a caller's client keeps its).
        timeout: Any = opts.timeout if opts.timeout is not None else httpx2.USE_CLIENT_DEFAULT
        deadline = anyio.current_time() + opts.deadline if opts.deadline is not None else math.inf
        limiter = self.limiter
        estimate = _estimate_tokens(request.json, spec.max_tokens)
        replay: _Replay[E] = _Replay(resume)
        attempt = 0
        while True:
            attempt += 1
            info.attempts = attempt
            replay.restart()
            await limiter.acquire(estimate)
            # Made once the limiter lets the request go: a fan-out parks most of its documents
            # in `acquire`, and a pipeline per parked document is only more for the collector.
            extraction = new_pipeline()
            info.skipped = extraction.skipped
            response: httpx2.Response | None = None
            try:
                async with AsyncExitStack() as stack:
                    # The deadline covers the wait for the response head and an error body too.
                    with anyio.fail_after(deadline - anyio.current_time()):
                        response = await stack.enter_async_context(
                            http.stream(
                                request.method,
                                request.url,
                                headers=headers,
                                json=request.json,
                                timeout=timeout,
                            )
                        )
                        limiter.observe(response.headers)
                        if response.status_code >= 300:  # redirects are not followed: error()
                            body = await _read_capped(response)
                            error = self.provider.error(
                                response.status_code, response.headers, body
                            )
                            raise _name_request(error, self.provider, request)
                    _check_content_type(response)
                    # Our own pool's responses only: a caller's transport may wrap the body.
                    own = response_body(response) if self._own_http else None
                    read: Callable[[], Awaitable[list[E]]]
                    if own is not None and "content-encoding" not in response.headers:
                        read = partial(own.read_into, extraction.feed_bytes)
                    else:
                        raw, inflate = _body(response)
                        chunks = await stack.enter_async_context(aclosing(raw))  # closed on exit
                        read = _BodyItems(chunks, inflate, extraction.feed_bytes, deadline).read
                    while True:
                        if deadline == math.inf:
                            out = await read()
                        else:
                            with anyio.fail_after(deadline - anyio.current_time()):
                                out = await read()
                        if not out:
                            break  # the body has ended
                        info.usage = extraction.usage
                        for x in replay.fresh(out):
                            info.items = replay.count(extraction)
                            yield x
                out = extraction.close()
                info.usage = extraction.usage
                info.finish_reason = extraction.finish_reason
                for x in replay.fresh(out):
                    info.items = replay.count(extraction)
                    yield x
                extraction.raise_for_outcome()
                replay.check_complete()
                return
            except (*_HTTPX2_ERRORS, TimeoutError, ProviderError) as exc:
                self.provider.redact(exc)  # a key the server echoed, out of every message
                info.usage = extraction.usage
                info.finish_reason = extraction.finish_reason
                error = _translate(exc, info.items)
                retry_items = 0 if resume else info.items
                delay = _retry_delay(error, attempt, opts.max_retries, retry_items)
                if isinstance(error, APIStatusError) and error.status_code == 429:
                    limiter.backoff(delay if delay is not None else _backoff(attempt))
                if delay is None or anyio.current_time() + delay >= deadline:
                    raise error from exc
            except MultitaskError as exc:
                self.provider.redact(exc)
                raise
            finally:
                if response is not None:
                    _unbind(response)
                usage = extraction.usage
                limiter.settle(estimate, usage.total_tokens if usage else estimate)
            await anyio.sleep(delay)


def _body(response: httpx2.Response) -> tuple[AsyncGenerator[bytes, None], _Inflate]:
    """The body's bytes as they come, and what undoes their content-encoding.

    A transport may hand over a body it already read (`httpx2.MockTransport` with `content=`,
    say): httpx2 has decoded it then, and it comes as one piece."""
    try:
        content = response.content
    except httpx2.ResponseNotRead:
        return _raw(response), _Inflate(response.headers.get("content-encoding", ""))
    return _whole(content), _Inflate("")


async def _raw(response: httpx2.Response) -> AsyncGenerator[bytes, None]:
    raw = response.aiter_raw()
    async with aclosing(raw):
        async for chunk in raw:
            yield chunk


async def _whole(content: bytes) -> AsyncGenerator[bytes, None]:
    if content:
        yield content


def _proxy_mounts(limits: httpx2.Limits) -> dict[str, httpx2.AsyncBaseTransport | None]:
    """httpx2's own proxy transports for the URLs a proxy in the environment applies to.

    Ours is the client's transport for everything else (`NO_PROXY` alone changes nothing).
    httpx2 reads the environment this way for a client without a transport of its own; the
    rule (schemes, `ALL_PROXY`, `NO_PROXY` patterns) is its, so ours cannot drift from it.
    """
    return {
        pattern: None if proxy is None else httpx2.AsyncHTTPTransport(proxy=proxy, limits=limits)
        for pattern, proxy in get_environment_proxies().items()
    }


def _not_httpx2(http_client: object) -> str:
    kind = type(http_client)
    name = f"{kind.__module__.partition('.')[0]}.{kind.__name__}"
    if kind.__module__.partition(".")[0] == "httpx":
        return (
            f"http_client must be an httpx2.AsyncClient, not the legacy {name}: multitask "
            "speaks httpx2 (the maintained successor of httpx 0.28, with the same API, which "
            "openai>=3 and anthropic>=2 use too); build it with httpx2.AsyncClient(...)"
        )
    return f"http_client must be an httpx2.AsyncClient, not {name}"


#: What httpx2 raises while sending or reading (anything else of its is a bug of ours).
_HTTPX2_ERRORS: Final = (httpx2.HTTPError, httpx2.StreamError, httpx2.InvalidURL)


def _unbind(response: httpx2.Response) -> None:
    """Break the reference cycle httpx leaves between a closed response and its stream.

    `AsyncClient.send` wraps the body in a stream that points back at the response, so every
    response would wait for the cyclic collector; unbound, reference counting frees it at
    once, and a fan-out's full collections come less often and walk less.
    """
    response.stream = _SPENT


@dataclass(frozen=True, slots=True)
class _Prepared(Generic[T]):
    """One extraction, ready to send."""

    opts: Options
    schema: type[MultiTaskModel[T]]
    spec: RequestSpec
    request: HTTPRequest


class _Replay(Generic[T]):
    """The items a document already handed out, so that a retry skips them, not repeats them."""

    __slots__ = ("enabled", "items", "position")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.items: list[T] = []
        self.position = 0

    def restart(self) -> None:
        self.position = 0

    def count(self, pipeline: Pipeline[Any, Any]) -> int:
        """How many items the caller has: all delivered so far, or this attempt's."""
        return len(self.items) if self.enabled else pipeline.delivered

    def fresh(self, items: list[T]) -> list[T]:
        """The items not handed out before; raises if a retry's answer contradicts them."""
        if not self.enabled:
            return items
        out: list[T] = []
        for item in items:
            if self.position < len(self.items):
                if item != self.items[self.position]:
                    raise RetryDivergedError(
                        f"the retry's item {self.position} differs from the one already "
                        f"delivered; {len(self.items)} item(s) were delivered before the retry",
                        items_delivered=len(self.items),
                    )
            else:
                self.items.append(item)
                out.append(item)
            self.position += 1
        return out

    def check_complete(self) -> None:
        if self.enabled and self.position < len(self.items):
            raise RetryDivergedError(
                f"the retry's answer has {self.position} item(s), fewer than the "
                f"{len(self.items)} already delivered",
                items_delivered=len(self.items),
            )


def _estimate_tokens(body: Mapping[str, Any], max_tokens: int | None) -> float:
    """A request's likely cost in tokens: about 4 bytes of prompt a token, plus the output cap."""
    return len(to_json(body)) / 4 + (max_tokens or 1024)


def _translate(exc: BaseException, delivered: int) -> MultitaskError:
    """Our exception for a transport failure (a provider error passes through)."""
    if isinstance(exc, MultitaskError):
        return exc
    after = f" after {delivered} item(s)" if delivered else ""
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"the total deadline passed{after}")
    if isinstance(exc, httpx2.ConnectTimeout):
        return APITimeoutError(f"timed out connecting to the provider: {exc}")
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(f"timed out waiting for the provider{after}: {type(exc).__name__}")
    if isinstance(exc, httpx2.ConnectError):
        return APIConnectionError(f"could not connect to the provider: {exc}")
    if isinstance(exc, httpx2.DecodingError):
        return StreamDecodeError(f"could not decode the response body{after}: {exc}")
    if isinstance(exc, httpx2.InvalidURL | httpx2.UnsupportedProtocol):
        return ConfigurationError(f"the request URL is not usable (check base_url): {exc}")
    if isinstance(exc, httpx2.StreamError):
        return MultitaskError(f"the HTTP client could not read the response{after}: {exc!r}")
    if isinstance(exc, httpx2.RemoteProtocolError):
        # Retried as a dropped connection is, but said as what it is: a connection closed
        # before the response's end, or bytes that are not HTTP (a proxy in the way, a server
        # that is not the API, a bad chunk size).
        if any(word in str(exc) for word in _CLOSED):
            return APIConnectionError(f"the connection dropped mid-response{after}: {exc}")
        return APIConnectionError(f"the server broke HTTP framing{after}: {exc}")
    if not isinstance(exc, httpx2.TransportError):
        return MultitaskError(f"the HTTP request failed{after}: {exc!r}")
    return APIConnectionError(f"the connection dropped mid-stream{after}: {exc}")


#: How a framing error says that the server closed the connection: ours ("the server closed
#: the connection in the middle of a chunked body"), h11's ("peer closed connection without
#: sending complete message body"), httpcore's ("Server disconnected without ...").
_CLOSED: Final = ("closed the connection", "closed connection", "disconnected")


def _name_request(
    error: MultitaskError, provider: Provider, request: HTTPRequest
) -> MultitaskError:
    """A 404 or 405 with the method and URL it answered, and a hint at a base_url without
    its `/v1`: the answer alone ("Not Found") does not say which URL was wrong."""
    if not isinstance(error, APIStatusError) or error.status_code not in (404, 405):
        return error
    text = f"{error} ({request.method} {request.url}"
    base = provider.base_url
    if (
        isinstance(provider, OpenAIChat | OpenAIResponses)
        and not isinstance(provider, AzureOpenAI)  # its URL has no /v1: it adds its own path
        and "/v1" not in urlsplit(base).path
    ):
        text += f"; is /v1 missing from base_url? try base_url={base + '/v1'!r}"
    error.args = (text + ")",)
    return error


def _check_base_url(provider: Provider, *, own_http: bool) -> None:
    """Refuse a base URL no request could go to (`127.0.0.1:8765/v1`, with no scheme).

    An empty one is the provider's to refuse (Azure's endpoint has no default). A caller's
    own HTTP client may mount transports for schemes of its own, so any scheme does for it.
    """
    base = getattr(provider, "base_url", None)
    if not isinstance(base, str) or not base:
        return
    parts = urlsplit(base)
    if parts.scheme in ("http", "https") and parts.hostname:
        return
    if not own_http and parts.scheme and parts.netloc:
        return
    hint = f"; did you mean 'http://{base}'?" if "://" not in base else ""
    raise ConfigurationError(
        f"base_url {base!r} is not a URL multitask can send to: it needs http:// or "
        f"https:// and a host{hint}"
    )


def _retry_delay(
    error: MultitaskError, attempt: int, max_retries: int, delivered: int
) -> float | None:
    """How long to wait before trying again, or None when this error is final.

    Only a request that delivered nothing is retried here: items already handed out cannot be
    taken back, and repeating them is the fan-out layer's job to prevent.
    """
    if delivered or attempt > max_retries:
        return None
    retry_after: float | None = None
    if isinstance(error, APIStatusError):
        if error.status_code not in _RETRY_STATUSES:
            return None
        retry_after = error.retry_after
    elif isinstance(error, StreamError):
        if error.error_type not in _RETRY_ERROR_TYPES:
            return None
    elif not isinstance(error, APIConnectionError):
        return None
    if retry_after is not None and retry_after <= 60:
        return float(retry_after)
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    """Exponential backoff from half a second, capped at 8 s, with jitter."""
    backoff: float = min(8.0, 0.5 * 2.0 ** (attempt - 1))
    return backoff * (0.5 + random.random() / 2)


async def _read_capped(response: httpx2.Response) -> bytes:
    """An error response's body, decoded, at most `_MAX_ERROR_BODY` of it."""
    try:
        chunks, inflate = _body(response)
    except StreamDecodeError:
        chunks, inflate = _raw(response), _Inflate("")  # show the bytes as they came
    body = bytearray()
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                for piece in inflate.steps(chunk):
                    body += piece
                    if len(body) >= _MAX_ERROR_BODY:
                        return bytes(body[:_MAX_ERROR_BODY])
        except StreamDecodeError:
            pass  # a corrupt error body: what was decoded of it will do
    return bytes(body)


class _BodyItems(Generic[E]):
    """What a parser makes of a response body read through httpx (any transport, any
    content-encoding): the general counterpart of `ResponseBody.read_into`."""

    __slots__ = ("_chunks", "_deadline", "_inflate", "_made", "_parse", "_pieces", "_step")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        inflate: _Inflate,
        parse: Callable[[bytes], list[E]],
        deadline: float,
    ) -> None:
        self._chunks = chunks
        self._inflate = inflate
        self._parse = parse
        self._deadline = deadline
        self._pieces: Iterator[bytes] = iter(())
        self._step = 0
        self._made = False  # the last read returned items: the parser may hold an error

    async def read(self) -> list[E]:
        """The next thing the parser makes; `[]` once the body has ended."""
        while True:
            for piece in self._pieces:
                self._step += 1
                if self._step > 1:  # a compressed chunk inflating to many steps: a bomb?
                    await anyio.lowlevel.checkpoint()
                    if anyio.current_time() >= self._deadline:
                        raise TimeoutError
                out = self._parse(piece)
                if out:
                    self._made = True
                    return out
            if self._made:  # an error held back after those items: raised now, not later
                self._made = False
                self._parse(b"")
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return []
            self._pieces = iter(self._inflate.steps(chunk))
            self._step = 0


class _Inflate:
    """Undoes a response's content-encoding (gzip, deflate) in steps of bounded size.

    httpx inflates each network read whole: 64 KiB of gzip can become 64 MiB at once, and
    that before any size cap is checked. Here no step is larger than `_INFLATE_STEP`, so the
    caps, the deadline and the other tasks get their turn between two steps.
    """

    __slots__ = ("_name", "_zlib")

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._name = content_encoding
        self._zlib: Any = None
        if codings in (["gzip"], ["x-gzip"]):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif codings == ["deflate"]:
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib (or gzip) framing
        elif any(c in _UNSUPPORTED_CODINGS for c in codings) or len(codings) > 1:
            raise StreamDecodeError(
                f"the response has content-encoding {content_encoding!r}, which multitask "
                "does not decode (it asks for gzip or deflate)"
            )
        # Any other token is not a compression (a server writing its charset there, say):
        # the bytes are taken as they are, as httpx takes them.

    def steps(self, data: bytes) -> Iterable[bytes]:
        """The decoded bytes of the next piece of the body, at most `_INFLATE_STEP` at a time."""
        if self._zlib is None:  # the common case, on the per-chunk path: no generator
            return (data,) if data else ()
        return self._inflate(data, self._zlib)

    def _inflate(self, data: bytes, z: Any) -> Iterator[bytes]:
        while True:
            try:
                out = z.decompress(data, _INFLATE_STEP)
            except zlib.error as exc:
                raise StreamDecodeError(
                    f"could not decode the {self._name}-encoded response body: {exc}"
                ) from None
            data = z.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < _INFLATE_STEP:
                return  # all input taken, and no output held back


_UNSUPPORTED_CODINGS = frozenset({"br", "zstd", "compress", "x-compress", "exi", "pack200-gzip"})


def _check_content_type(response: httpx2.Response) -> None:
    ctype = response.headers.get("content-type", "")
    if ctype and "event-stream" not in ctype and "ndjson" not in ctype:
        raise StreamDecodeError(
            f"expected an event stream, got HTTP {response.status_code} with content-type "
            f"{ctype!r} (is the base URL right, and is a proxy in the way?)"
        )


@lru_cache(maxsize=256)
def _multitask(item_type: Any) -> Any:
    """One `Multi{Name}` class per item type, made once."""
    if isinstance(item_type, type) and issubclass(item_type, MultiTaskModel):
        return item_type
    return MultiTask(item_type)
