"""Web helpers: stream an extraction to a browser as server-sent events or NDJSON.

    @app.post("/extract")
    async def extract(body: Body):
        return multitask.web.sse_response(client.extract_events(User, body.text))

`sse_response` and `ndjson_response` return ASGI responses: plain ASGI callables that work
under any ASGI framework (Starlette, FastAPI, Litestar, Quart, ...), and subclasses of
Starlette's `Response` when Starlette is installed, so FastAPI passes them through as they are.

Each response:

- sends every item (or every event of `Client.extract_events`) the moment it arrives, as one
  JSON object with a `type`: `item`, `started`, `updated`, `skipped` (an `item` of a type
  with a `multitask.Quote` also has `start`, `end` and `match`: where it is in the text);
- sends a keep-alive (an SSE comment, or a blank NDJSON line) when nothing else was sent for
  `keep_alive` seconds, so proxies and browsers keep an idle stream open;
- ends with one event that says how the extraction ended: `done` (with `items`, `usage` and
  `finish_reason`), `truncated`, or `failed`, each with a safe `message` and an `error` code.
  Exception texts never reach the browser: they can hold internal URLs or a provider's words;
  they are logged on the `multitask.web` logger instead;
- watches the ASGI `receive` channel while it streams, and cancels the extraction, closing the
  model's HTTP response, the moment the browser goes away.

The stream must outlive the endpoint function: create the `Client` in the app's lifespan, not
in an `async with` around the `return`.

`highlight(text, items)` builds a static HTML page of a text with each item's grounded quotes
(`multitask.Quote`) marked, its fields shown on hover: to look at what an extraction found.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from pydantic_core import to_json

from ._events import Finished, ItemSkipped
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ContentFilterError,
    IncompleteOutputError,
    ItemTooLargeError,
    ItemValidationError,
    MalformedOutputError,
    MultitaskError,
    ProviderError,
    RefusalError,
    StreamDecodeError,
    StreamError,
)
from ._highlight import highlight
from ._partial import ItemDone, ItemStarted, ItemUpdated
from ._quote import first_quote

__all__ = [
    "DEFAULT_KEEP_ALIVE",
    "NDJSONResponse",
    "SSEResponse",
    "highlight",
    "ndjson_response",
    "safe_error",
    "sse_response",
]

#: Seconds of silence after which a keep-alive is sent, by default.
DEFAULT_KEEP_ALIVE = 15.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("multitask.web")

if TYPE_CHECKING:
    _ResponseBase = object
else:
    try:  # a Starlette `Response`, when Starlette is there: FastAPI returns those as they are
        from starlette.responses import Response as _ResponseBase
    except ImportError:  # pragma: no cover - exercised only without Starlette
        _ResponseBase = object


def sse_response(
    stream: AsyncIterable[Any],
    *,
    keep_alive: float | None = DEFAULT_KEEP_ALIVE,
    headers: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> SSEResponse:
    """A `text/event-stream` response: one SSE event per item or event, then how it ended.

    Each event is `event: <type>` and `data: <json>`, the JSON holding the same `type`.
    """
    return SSEResponse(stream, keep_alive=keep_alive, headers=headers, status_code=status_code)


def ndjson_response(
    stream: AsyncIterable[Any],
    *,
    keep_alive: float | None = DEFAULT_KEEP_ALIVE,
    headers: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> NDJSONResponse:
    """An `application/x-ndjson` response: one JSON object a line; blank lines are keep-alives."""
    return NDJSONResponse(stream, keep_alive=keep_alive, headers=headers, status_code=status_code)


def safe_error(exc: BaseException) -> tuple[str, str, str]:
    """How to tell a browser about `exc`: (final event type, error code, safe message).

    The message is written here, never taken from the exception, so no key, internal URL or
    provider text can leak through it.
    """
    if isinstance(exc, IncompleteOutputError):
        return "truncated", "truncated", "The answer was cut off before it was complete."
    if isinstance(exc, ItemValidationError):
        return "failed", "invalid_item", f"Item {exc.index} did not match the expected schema."
    if isinstance(exc, ItemTooLargeError):
        return "failed", "too_large", "The answer grew past a size limit."
    if isinstance(exc, MalformedOutputError):
        return "failed", "malformed_output", "The model's answer was not in the expected format."
    if isinstance(exc, ContentFilterError):
        return "failed", "content_filter", "The provider's content filter stopped the answer."
    if isinstance(exc, RefusalError):
        return "failed", "refused", "The model declined to answer."
    if isinstance(exc, APIStatusError):
        status = exc.status_code or 0
        if status in (401, 403):
            return "failed", "auth", "The model provider did not accept the credentials."
        if status == 429:
            return "failed", "rate_limited", "The model provider is busy; try again later."
        if status >= 500:
            return "failed", "provider_error", "The model provider had an error; try again later."
        return "failed", "bad_request", "The model provider rejected the request."
    if isinstance(exc, StreamError):
        return "failed", "provider_error", "The model provider reported an error mid-answer."
    if isinstance(exc, ProviderError):
        return "failed", "provider_error", "The model provider returned an error."
    if isinstance(exc, APITimeoutError):
        return "failed", "timeout", "The model provider did not answer in time."
    if isinstance(exc, APIConnectionError):
        return "failed", "unavailable", "Could not reach the model provider."
    if isinstance(exc, StreamDecodeError):
        return "failed", "bad_response", "The model provider's response could not be read."
    if isinstance(exc, MultitaskError):
        return "failed", "failed", "The extraction failed."
    return "failed", "internal", "Internal error."


class _StreamResponse(_ResponseBase):
    """The ASGI response both formats share: streaming, keep-alives, disconnect, final event."""

    media_type = "application/octet-stream"
    _keep_alive_frame = b"\n"

    def __init__(
        self,
        stream: AsyncIterable[Any],
        *,
        keep_alive: float | None = DEFAULT_KEEP_ALIVE,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        if keep_alive is not None and keep_alive <= 0:
            raise ValueError(f"keep_alive must be positive or None, not {keep_alive}")
        self.stream = stream
        self.keep_alive = keep_alive
        self.status_code = status_code
        self.background: Any = None  # Starlette's and FastAPI's background tasks, if set
        given = {k.lower(): v for k, v in (headers or {}).items()}
        defaults = {
            "content-type": self.media_type,
            "cache-control": "no-cache",
            "x-accel-buffering": "no",  # nginx: do not buffer the stream
        }
        self.raw_headers: list[tuple[bytes, bytes]] = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**defaults, **given}.items()
        ]

    def frame(self, message: Mapping[str, Any]) -> bytes:
        """One message as this format writes it."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"{type(self).__name__} serves HTTP, not {scope['type']!r}")
        writer = _Writer(send)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with anyio.create_task_group() as tg:
            writer.scope = tg.cancel_scope
            tg.start_soon(_watch_disconnect, receive, writer)
            if self.keep_alive is not None:
                tg.start_soon(writer.keep_alive, self.keep_alive, self._keep_alive_frame)
            await self._pump(writer)
            tg.cancel_scope.cancel()
        if not writer.gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:
            await self.background()

    async def _pump(self, writer: _Writer) -> None:
        """Send each item or event, then the final event; a disconnect cancels all this."""
        stream = self.stream
        items = 0
        finished: Finished | None = None
        try:
            try:
                async for value in stream:
                    if isinstance(value, Finished):
                        finished = value
                        continue
                    message = _message(value, items)
                    if message["type"] == "item":
                        items += 1
                    await writer.write(self.frame(message))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        except Exception as exc:
            kind, code, text = safe_error(exc)
            if isinstance(exc, MultitaskError):
                logger.warning("extraction ended (%s): %s: %s", code, type(exc).__name__, exc)
            else:
                logger.exception("extraction stream raised")
            final: dict[str, Any] = {"type": kind, "items": items, "error": code, "message": text}
            if isinstance(exc, IncompleteOutputError):
                final["finish_reason"] = exc.finish_reason
        else:
            usage = finished.usage if finished else getattr(stream, "usage", None)
            reason = finished.finish_reason if finished else getattr(stream, "finish_reason", None)
            final = {"type": "done", "items": items, "finish_reason": reason, "usage": None}
            if usage is not None:
                final["usage"] = {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                }
        await writer.write(self.frame(final))


class SSEResponse(_StreamResponse):
    """Server-sent events: `event: <type>` / `data: <json>`; keep-alives are `: keep-alive`."""

    media_type = "text/event-stream; charset=utf-8"
    _keep_alive_frame = b": keep-alive\n\n"

    def frame(self, message: Mapping[str, Any]) -> bytes:
        """`event: TYPE`, then the JSON on `data:` lines, then a blank line."""
        data = to_json(message)
        if b"\n" in data or b"\r" in data:  # never from compact JSON; kept safe all the same
            lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            data = b"\ndata: ".join(lines)
        return b"event: " + str(message["type"]).encode() + b"\ndata: " + data + b"\n\n"


class NDJSONResponse(_StreamResponse):
    """Newline-delimited JSON: one object a line; blank lines are keep-alives, to be skipped."""

    media_type = "application/x-ndjson"
    _keep_alive_frame = b"\n"

    def frame(self, message: Mapping[str, Any]) -> bytes:
        """The JSON object and a newline."""
        return to_json(message) + b"\n"


class _Writer:
    """Serialises writes to ASGI `send` from the stream and the keep-alive task.

    A write that finds the client gone (ASGI 2.4 raises `OSError`) cancels the response.
    """

    __slots__ = ("_lock", "_send", "gone", "last", "scope")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock()
        self.last = anyio.current_time()
        self.gone = False
        self.scope: anyio.CancelScope | None = None

    def disconnected(self) -> None:
        """The client went away: stop streaming, cancel the extraction."""
        self.gone = True
        if self.scope is not None:
            self.scope.cancel()

    async def write(self, body: bytes) -> None:
        async with self._lock:
            try:
                await self._send({"type": "http.response.body", "body": body, "more_body": True})
            except OSError:
                self.disconnected()
                await anyio.lowlevel.checkpoint()  # the cancellation takes effect here
            self.last = anyio.current_time()

    async def keep_alive(self, interval: float, frame: bytes) -> None:
        while True:
            wait = self.last + interval - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            else:
                await self.write(frame)


async def _watch_disconnect(receive: Receive, writer: _Writer) -> None:
    """Read the request channel until the client disconnects; then cancel the response."""
    while True:
        try:
            message = await receive()
        except OSError:
            break
        if message["type"] == "http.disconnect":
            break
    writer.disconnected()


def _message(value: Any, items: int) -> dict[str, Any]:
    """The JSON message for one item or event of the stream."""
    if isinstance(value, ItemDone):
        return _item(value.index, value.item)
    if isinstance(value, ItemUpdated):
        return {"type": "updated", "index": value.index, "partial": value.partial}
    if isinstance(value, ItemStarted):
        return {"type": "started", "index": value.index}
    if isinstance(value, ItemSkipped):
        return {
            "type": "skipped",
            "index": value.index,
            "message": f"Item {value.index} did not match the expected schema and was skipped.",
        }
    return _item(items, value)


def _item(index: int, item: Any) -> dict[str, Any]:
    """An `item` message; with `start`, `end` and `match` when the item has a grounded
    `multitask.Quote` (its first, in field order), as `Result` and the CLI's rows have."""
    message = {"type": "item", "index": index, "item": item}
    quote = first_quote(item)
    if quote is not None:
        message |= {"start": quote.start, "end": quote.end, "match": quote.match}
    return message
