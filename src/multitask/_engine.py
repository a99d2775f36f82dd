"""The request engine: one extraction from its options to the items, retried as it may be.

    Engine.prepare -> Prepared (options, schema, RequestSpec, HTTPRequest)
    Engine.run     -> send; open_body(response).read_into(pipeline.feed_bytes) until the
                      end; on a failure, translate it and retry (Replay: each item once)

`Client`, `extract_events` and `extract_many` all go through an `Engine`: they differ only in
the pipeline they build per attempt (`Extraction` for items, `PartialExtraction` for events)
and in whether a retry may follow delivered items (`resume`, the fan-out's exactly-once).
Nothing here knows a provider's wire format (the provider builds the request and its decoder
reads the events) or HTTP framing (the transport's, or httpx2's).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Hashable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar, cast

import anyio
import httpx2
from httpx2._utils import get_environment_proxies
from pydantic_core import to_json

from ._align import Aligner
from ._body import open_body, read_error_body, unbind
from ._exceptions import APIStatusError, MultitaskError, ProviderError
from ._extraction import Extraction, Pipeline
from ._httperrors import HTTPX2_ERRORS, name_request, translate
from ._options import DEFAULT_TIMEOUT, Options, merge_options
from ._parts import Parts
from ._prompt import build_messages, default_system
from ._providers import HTTPRequest, Provider, RequestSpec, TaskSchema
from ._quote import contains_quote
from ._ratelimit import RateLimiter
from ._retry import Replay, backoff, retry_delay
from ._stream import ItemStream, StreamInfo
from ._taskmodel import MultiTask, MultiTaskModel
from ._telemetry import ExtractionTrace, Telemetry
from ._transport import StreamingTransport

__all__ = ["Engine", "Prepared", "schema_for"]

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Prepared(Generic[T]):
    """One extraction, ready to send."""

    opts: Options
    schema: type[MultiTaskModel[T]]
    spec: RequestSpec
    request: HTTPRequest
    #: The extraction's aligner, when its item type has a `Quote` and there is a text: one
    #: for all its attempts, each of which starts from no owned span (see `Engine.run`).
    aligner: Aligner | None = None


class Engine:
    """Sends a client's extractions: its connection pool, provider, defaults and limiter."""

    def __init__(
        self,
        provider: Provider,
        *,
        model: str,
        model_name: str,
        options: Options,
        headers: Mapping[str, str],
        http_client: httpx2.AsyncClient | None,
        max_connections: int,
        limiter: RateLimiter,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.provider = provider
        #: `"provider:model_name"`, as streams and results name it.
        self.model = model
        #: The model's name as the provider is asked for it.
        self.model_name = model_name
        self.options = options
        self.limiter = limiter
        #: Its spans (see `_telemetry`): the global tracer provider's, content off, by default.
        self.telemetry = telemetry or Telemetry(provider, model_name)
        self._headers = dict(headers)
        #: The pool is ours (made on first use, closed by `aclose`), not the caller's.
        self.own_pool = http_client is None
        self._http = http_client
        self._max_connections = max_connections

    def http(self) -> httpx2.AsyncClient:
        """The connection pool: the caller's `http_client`, or ours, made on first use."""
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

    async def aclose(self) -> None:
        """Close the connection pool, unless it was the caller's."""
        if self.own_pool and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    def prepare(
        self,
        item_type: Any,
        text: str | None,
        options: Mapping[str, Any],
        *,
        aligner: Aligner | None = None,
        parts: Parts | None = None,
        page_of: Callable[[int], int | None] | None = None,
    ) -> Prepared[Any]:
        """The options, schema, request spec and HTTP request for one extraction.

        `parts`: the user message as parts (texts, images, PDFs), sent instead of `text`,
        which is then what their quotes are grounded in (the text parts). `page_of`: the page
        of an offset in `text`, for the grounded Quotes (a `Document`'s).

        Raises what no request could get past (an unknown option, a mode the provider
        lacks, an item type with no schema, a part the provider cannot take) before
        anything is sent."""
        opts = merge_options(self.options, options) if options else self.options
        schema: type[MultiTaskModel[Any]] = schema_for(cast(Hashable, item_type))
        mode = opts.mode or self.provider.default_mode
        system = opts.system or default_system(schema.task_name, parallel=mode == "parallel_tools")
        system, messages = build_messages(text, system=system, messages=opts.messages, parts=parts)
        spec = RequestSpec(
            model=self.model_name,
            # A `Multi{Name}` class is a `TaskSchema` through its class properties, which
            # mypy does not match against a protocol's members.
            schema=cast(TaskSchema, schema),
            mode=mode,
            system=system,
            messages=messages,
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            extra_body=opts.extra_body or {},
        )
        if aligner is None and text is not None and contains_quote(schema.item_adapter):
            aligner = Aligner(text, page_of=page_of)
        return Prepared(opts, schema, spec, self.provider.request(spec), aligner)

    def items(
        self,
        item_type: Any,
        text: str | None,
        options: Mapping[str, Any],
        *,
        resume: bool = False,
        aligner: Aligner | None = None,
        parts: Parts | None = None,
        page_of: Callable[[int], int | None] | None = None,
        within: tuple[ExtractionTrace, int, int] | None = None,
    ) -> ItemStream[Any]:
        """The validated items of one extraction, as an `ItemStream` (typed by the caller).

        `aligner`: what its Quotes are grounded in, when not the text itself (a window of a
        longer text, `_chunked`). `parts`, `page_of`: as `prepare` takes them. `within`: the
        chunked text's extraction span its requests go under, the chunk and its request."""
        prepared = self.prepare(
            item_type, text, options, aligner=aligner, parts=parts, page_of=page_of
        )
        opts, schema, mode = prepared.opts, prepared.schema, prepared.spec.mode

        def new_pipeline() -> Extraction[Any]:
            return schema.extraction(
                self.provider.decoder(mode),
                on_invalid=opts.on_invalid,
                validation_context=opts.validation_context,
                max_item_bytes=opts.max_item_bytes,
                max_answer_bytes=opts.max_answer_bytes,
                max_depth=opts.max_depth,
                aligner=prepared.aligner,
            )

        info = StreamInfo()
        agen = self.run(prepared, info, new_pipeline, resume=resume, within=within)
        item = getattr(schema, "item_type", item_type)
        return ItemStream(agen, info, item_type=item, model=self.model)

    async def run(
        self,
        prepared: Prepared[Any],
        info: StreamInfo,
        new_pipeline: Callable[[], Pipeline[Any, E]],
        *,
        resume: bool = False,
        within: tuple[ExtractionTrace, int, int] | None = None,
    ) -> AsyncGenerator[E, None]:
        """The request loop: send, stream out what the pipeline completes, retry what may be.

        With `resume`, a stream that fails after delivering items is retried too, and the
        retry's first items are checked against the ones delivered and skipped, so the caller
        sees every item once (`RetryDivergedError` if the retry's answer differs).
        Each attempt is a span under the extraction's (`trace`; `within`: see `items`).
        """
        opts, spec, request = prepared.opts, prepared.spec, prepared.request
        provider, limiter = self.provider, self.limiter
        http = self.http()
        # Only what `Inflate` decodes in bounded steps (httpx2 would offer br and zstd too).
        headers = {"accept-encoding": "gzip, deflate", **request.headers, **self._headers}
        # None: the pool's own timeouts (ours are DEFAULT_TIMEOUT; a caller's client keeps its).
        timeout: Any = opts.timeout if opts.timeout is not None else httpx2.USE_CLIENT_DEFAULT
        deadline = anyio.current_time() + opts.deadline if opts.deadline is not None else math.inf
        estimate = _estimate_tokens(request.json, spec.max_tokens)
        replay: Replay[E] = Replay(resume)
        trace = self.telemetry.requests(spec, request.url, within)
        attempt = 0
        while True:
            attempt += 1
            info.attempts = attempt
            replay.restart()
            with trace.guard():  # a cancellation before the request ends the spans too
                await limiter.acquire(estimate)
            if prepared.aligner is not None:
                # An attempt reads its answer from the first item: its quotes claim their spans
                # afresh, so a replayed item gets the span it was delivered with (and `Replay`,
                # comparing Quotes by words and span, skips it) instead of the next occurrence.
                prepared.aligner.restore(0)
            # Made once the limiter lets the request go: a fan-out parks most of its documents
            # in `acquire`, and a pipeline per parked document is only more for the collector.
            pipeline = new_pipeline()
            info.skipped = pipeline.skipped
            response: httpx2.Response | None = None
            try:
                trace.attempt(attempt, info)
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
                            body = await read_error_body(response)
                            error = provider.error(response.status_code, response.headers, body)
                            raise name_request(error, provider, request)
                    reader = open_body(response, deadline=deadline, own_pool=self.own_pool)
                    stack.push_async_callback(reader.aclose)
                    feed = pipeline.feed_bytes
                    while True:
                        if deadline == math.inf:
                            out = await reader.read_into(feed)
                        else:
                            with anyio.fail_after(deadline - anyio.current_time()):
                                out = await reader.read_into(feed)
                        if not out:
                            break  # the body has ended
                        info.usage = pipeline.usage
                        for x in replay.fresh(out):
                            info.items = replay.count(pipeline.delivered)
                            if trace.content:
                                trace.item(x)
                            yield x
                out = pipeline.close()
                info.usage = pipeline.usage
                info.finish_reason = pipeline.finish_reason
                for x in replay.fresh(out):
                    info.items = replay.count(pipeline.delivered)
                    if trace.content:
                        trace.item(x)
                    yield x
                pipeline.raise_for_outcome()
                replay.check_complete()
                trace.done()
                return
            except (*HTTPX2_ERRORS, TimeoutError, ProviderError) as exc:
                provider.redact(exc)  # a key the server echoed, out of every message
                info.usage = pipeline.usage
                info.finish_reason = pipeline.finish_reason
                error = translate(exc, info.items)
                retry_items = 0 if resume else info.items
                delay = retry_delay(error, attempt, opts.max_retries, retry_items)
                if isinstance(error, APIStatusError) and error.status_code == 429:
                    limiter.backoff(delay if delay is not None else backoff(attempt))
                if delay is None or anyio.current_time() + delay >= deadline:
                    trace.failed(error)
                    raise error from exc
                trace.retrying(error, delay)
            except MultitaskError as exc:
                provider.redact(exc)
                trace.failed(exc)
                raise
            except BaseException as exc:  # cancelled, the stream closed early, or a bug
                trace.failed(exc)
                raise
            finally:
                if response is not None:
                    unbind(response)
                usage = pipeline.usage
                limiter.settle(estimate, usage.total_tokens if usage else estimate)
                trace.attempt_end(info, pipeline, response)
            with trace.guard():
                await anyio.sleep(delay)


@lru_cache(maxsize=256)
def schema_for(item_type: Any) -> Any:
    """The `Multi{Name}` schema class of an item type, made once per type."""
    if isinstance(item_type, type) and issubclass(item_type, MultiTaskModel):
        return item_type
    return MultiTask(item_type)


def _estimate_tokens(body: Mapping[str, Any], max_tokens: int | None) -> float:
    """A request's likely cost in tokens: about 4 bytes of prompt a token, plus the output cap."""
    return len(to_json(body)) / 4 + (max_tokens or 1024)


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
