"""`Client`: the user's handle on extraction, a facade over the request engine.

It checks what the caller gave (the model, the provider, the options, the base URL) once,
where it was given, and hands every extraction to its `Engine` (`_engine.py`), which owns
the connection pool, the request loop and the retries. See the design page for where a byte
goes from the socket to the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import urlsplit

import httpx2

from ._chunked import document_items
from ._engine import Engine
from ._events import EventStream, extract_events
from ._exceptions import ConfigurationError
from ._many import Documents, Progress, Results, extract_many
from ._options import DEFAULT_OPTIONS, DEFAULT_TIMEOUT, Options, merge_options
from ._parts import Input
from ._providers import Provider, get_provider, split_model
from ._providers._provider import unsupported_mode
from ._ratelimit import RateLimiter
from ._stream import ItemStream
from ._taskmodel import MultiTaskModel
from ._telemetry import Telemetry

if TYPE_CHECKING:  # the `otel` extra's, for the annotation only
    from opentelemetry.trace import (  # type: ignore[import-not-found, unused-ignore]  # pyright: ignore[reportMissingImports]
        TracerProvider,
    )

__all__ = ["DEFAULT_TIMEOUT", "Client", "Options"]

T = TypeVar("T")


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

    With `opentelemetry-api` installed, each extraction is a span, and each request attempt a
    span under it (the GenAI semantic conventions), sent to `tracer_provider` (default: the
    global one). `trace_content=True` puts the prompt and the items in them too (default: the
    `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` variable; off). See the tracing page.

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
        tracer_provider: TracerProvider | None = None,
        trace_content: bool | None = None,
        **options: Any,
    ) -> None:
        model = model or os.environ.get("MULTITASK_MODEL")
        if not model:
            raise ConfigurationError(
                "no model: pass model='provider:model_name' or set MULTITASK_MODEL"
            )
        provider_name, model_name = split_model(model)
        chosen = provider or get_provider(provider_name, base_url=base_url, api_key=api_key)
        opts = merge_options(DEFAULT_OPTIONS, options)
        if http_client is not None and not isinstance(http_client, httpx2.AsyncClient):
            raise TypeError(_not_httpx2(http_client))
        # What no request could get past, said now rather than once per request.
        _check_base_url(chosen, own_http=http_client is None)
        if opts.mode is not None and opts.mode not in chosen.modes:
            raise unsupported_mode(chosen, opts.mode)
        chosen.check_credentials()
        if limiter is not None and (rpm or tpm):
            raise ValueError("give rpm/tpm to the limiter, or a limiter, not both")
        self._engine = Engine(
            chosen,
            model=f"{provider_name}:{model_name}",
            model_name=model_name,
            options=opts,
            headers=headers or {},
            http_client=http_client,
            max_connections=max_connections,
            limiter=limiter if limiter is not None else RateLimiter(rpm=rpm, tpm=tpm),
            telemetry=Telemetry(
                chosen, model_name, tracer_provider=tracer_provider, content=trace_content
            ),
        )
        #: How many documents `extract_many` works on at once, by default.
        self.max_concurrency = max_concurrency

    @property
    def model(self) -> str:
        """`"provider:model_name"`, normalised (`"OpenAI: gpt-4o"` is `"openai:gpt-4o"`)."""
        return self._engine.model

    @property
    def model_name(self) -> str:
        """The model's name as the provider is asked for it."""
        return self._engine.model_name

    @property
    def provider(self) -> Provider:
        """The provider requests go to."""
        return self._engine.provider

    @property
    def options(self) -> Options:
        """The defaults of every call."""
        return self._engine.options

    @property
    def limiter(self) -> RateLimiter:
        """Shared by every request of this client: `rpm`/`tpm`, and a global pause on 429;
        or the `limiter` given (one shared with other clients or processes, say)."""
        return self._engine.limiter

    def __repr__(self) -> str:
        return f"<multitask.Client model={self.model!r} provider={self.provider!r}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._engine.http()
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
        await self._engine.aclose()

    def _client(self) -> httpx2.AsyncClient:
        """The connection pool (for tests that look at the transport)."""
        return self._engine.http()

    # -- extraction ----------------------------------------------------------------------------
    # Each entry point is overloaded so that a class gives its own type (`extract(User, ...)`
    # is a `list[User]`), a `MultiTaskModel` its items' type, and anything else (a union, an
    # `Annotated`) `Any`: `type[T] | Any` in one signature would make every call `Any`.

    @overload
    def extract_stream(
        self, item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
    ) -> ItemStream[T]: ...
    @overload
    def extract_stream(
        self, item_type: type[T], text: Input | None, **options: Any
    ) -> ItemStream[T]: ...
    @overload
    def extract_stream(
        self, item_type: Any, text: Input | None, **options: Any
    ) -> ItemStream[Any]: ...
    def extract_stream(self, item_type: Any, text: Input | None, **options: Any) -> ItemStream[Any]:
        """Stream the items of type `item_type` found in `text`, each as soon as it is complete.

        `text` is a str, a `multitask.Document` (its text; grounded Quotes get its `.page`),
        a `multitask.Image` or `multitask.PDF`, or a list mixing them with strs, which each
        provider gets as its own content parts (`ConfigurationError` for one it cannot take).

        Returns an `ItemStream`: iterate it with `async for`; use it with `async with` to close
        it deterministically. Raises (after the valid items) `IncompleteOutputError`,
        `RefusalError`, `ProviderError`, `APIConnectionError`, `ItemValidationError`, ...

        With `chunk_chars` (and `overlap_chars`, `max_continuations`) a long text is read in
        chunks, one request each, and an answer cut at the output limit is continued; see
        the docs' page on grounded quotes.
        """
        return document_items(self._engine, item_type, text, options, resume=False)

    @overload
    async def extract(
        self, item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
    ) -> list[T]: ...
    @overload
    async def extract(self, item_type: type[T], text: Input | None, **options: Any) -> list[T]: ...
    @overload
    async def extract(self, item_type: Any, text: Input | None, **options: Any) -> list[Any]: ...
    async def extract(self, item_type: Any, text: Input | None, **options: Any) -> list[Any]:
        """Extract every item into a list (the stream, collected)."""
        stream: ItemStream[Any] = self.extract_stream(item_type, text, **options)
        return await stream.collect()

    @overload
    def extract_events(
        self, item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
    ) -> EventStream[T]: ...
    @overload
    def extract_events(
        self, item_type: type[T], text: Input | None, **options: Any
    ) -> EventStream[T]: ...
    @overload
    def extract_events(
        self, item_type: Any, text: Input | None, **options: Any
    ) -> EventStream[Any]: ...
    def extract_events(
        self, item_type: Any, text: Input | None, **options: Any
    ) -> EventStream[Any]:
        """Stream events for each item as it starts, grows and completes (`EventStream[T]`).

        `ItemStarted`, throttled `ItemUpdated` snapshots (`min_interval=0.05` seconds apart,
        `partial_strings=True`), `ItemDone` with the validated item, and a last `Finished`;
        errors are raised as `extract_stream` raises them. See `multitask.EventStream`.
        """
        return extract_events(self._engine, item_type, text, **options)

    @overload
    def extract_many(
        self,
        item_type: type[MultiTaskModel[T]],
        documents: Documents,
        *,
        max_concurrency: int | None = None,
        buffer: int = 256,
        on_progress: Callable[[Progress], None] | None = None,
        resume_after: Mapping[Any, tuple[int, int]] | None = None,
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
        resume_after: Mapping[Any, tuple[int, int]] | None = None,
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
        resume_after: Mapping[Any, tuple[int, int]] | None = None,
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
        resume_after: Mapping[Any, tuple[int, int]] | None = None,
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

        With `chunk_chars` (and `overlap_chars`, `max_continuations`) each document is read
        in chunks as `extract_stream` reads it. `resume_after` maps a document's key (its
        position, or the key given with it) to the span `(start, end)` of the last item you
        already have of it, from an earlier run cut short: its chunked reading starts after
        that item and delivers only what follows it (items come in document order, the
        default `order="document"`, so what you have is everything before it).

        What would fail every document (a bad option, a mode the provider lacks) raises
        `ConfigurationError` once, on entering the block; a document that is not a text
        raises `TypeError` naming its position, after the documents before it are done.
        """
        return extract_many(
            self._engine,
            item_type,
            documents,
            max_concurrency=max_concurrency or self.max_concurrency,
            buffer=buffer,
            on_progress=on_progress,
            options=options,
            resume_after=resume_after,
        )


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
