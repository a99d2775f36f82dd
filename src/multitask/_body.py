"""A response body as the request loop reads it: `read_into(parse)`, whatever the transport.

Every streamed response is read through one interface, `Body.read_into(parse)`: feed the
body's bytes to `parse` until it makes something, return that, `[]` at the end. Over
multitask's own pool the body is the transport's `ResponseBody`, which feeds `parse` in the
socket's callback; over any other httpx2 transport (a proxy's, the caller's own, a mock) it
is `HTTPBody`, which reads httpx2's raw chunks and undoes their content-encoding in bounded
steps. `open_body` chooses, after checking the content type; the rest of a response's
handling (an error body, capped; breaking httpx2's response cycle) lives here too.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from contextlib import aclosing
from typing import Any, Final, Protocol, TypeVar

import anyio
import anyio.lowlevel
import httpx2

from ._exceptions import StreamDecodeError
from ._transport import response_body

__all__ = ["Body", "HTTPBody", "Inflate", "open_body", "read_error_body", "unbind"]

T = TypeVar("T")

_MAX_ERROR_BODY: Final = 64 * 1024
# The most decompressed bytes handed on at once: a small gzip body can inflate a thousandfold.
_INFLATE_STEP: Final = 64 * 1024
#: What a closed response's stream is replaced with (see `unbind`): empty, shared.
_SPENT: Final = httpx2.ByteStream(b"")
_UNSUPPORTED_CODINGS: Final = frozenset(
    {"br", "zstd", "compress", "x-compress", "exi", "pack200-gzip"}
)


class Body(Protocol):
    """What the request loop reads a streamed response through."""

    async def read_into(self, parse: Callable[[bytes], list[T]]) -> list[T]:
        """Feed the body to `parse` until it returns something; return that, `[]` at the end.

        After a call that returned something, the next one first calls `parse(b"")`, which
        must return `[]` or raise: a parser that held an error back behind the items before
        it (as `Pipeline` does) raises it then, not once more bytes come. What `parse` raises
        is raised here; a broken connection or a timeout raise as httpx2's errors.
        """
        ...

    async def aclose(self) -> None:
        """Stop reading: what is left of the body is not read."""
        ...


def open_body(response: httpx2.Response, *, deadline: float, own_pool: bool) -> Body:
    """The body of a streamed `response`, once its content type says it is a stream.

    `own_pool`: the response came from the client's own `StreamingTransport` (a caller's
    transport may wrap the body, so only then is the transport's body read directly).
    `deadline` bounds the steps of a body that inflates to many (`anyio.current_time()`).
    """
    check_content_type(response)
    if own_pool and "content-encoding" not in response.headers:
        own = response_body(response)
        if own is not None:
            return own
    return HTTPBody(response, deadline)


def check_content_type(response: httpx2.Response) -> None:
    """Refuse a response that is not a stream (an HTML page from a proxy, say)."""
    ctype = response.headers.get("content-type", "")
    if ctype and "event-stream" not in ctype and "ndjson" not in ctype:
        raise StreamDecodeError(
            f"expected an event stream, got HTTP {response.status_code} with content-type "
            f"{ctype!r} (is the base URL right, and is a proxy in the way?)"
        )


class HTTPBody:
    """A response body read through httpx2 (any transport, gzip or deflate, or none)."""

    __slots__ = ("_chunks", "_deadline", "_inflate", "_made", "_pieces", "_step")

    def __init__(self, response: httpx2.Response, deadline: float) -> None:
        self._chunks, self._inflate = _chunks(response)
        self._deadline = deadline
        self._pieces: Iterator[bytes] = iter(())
        self._step = 0
        self._made = False  # the last read returned items: the parser may hold an error

    async def read_into(self, parse: Callable[[bytes], list[T]]) -> list[T]:
        """See `Body.read_into`."""
        while True:
            for piece in self._pieces:
                self._step += 1
                if self._step > 1:  # a compressed chunk inflating to many steps: a bomb?
                    await anyio.lowlevel.checkpoint()
                    if anyio.current_time() >= self._deadline:
                        raise TimeoutError
                out = parse(piece)
                if out:
                    self._made = True
                    return out
            if self._made:  # an error held back after those items: raised now, not later
                self._made = False
                parse(b"")
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return []
            self._pieces = iter(self._inflate.steps(chunk))
            self._step = 0

    async def aclose(self) -> None:
        """See `Body.aclose`."""
        await self._chunks.aclose()


def _chunks(response: httpx2.Response) -> tuple[AsyncGenerator[bytes, None], Inflate]:
    """The body's bytes as they come, and what undoes their content-encoding.

    A transport may hand over a body it already read (`httpx2.MockTransport` with `content=`,
    say): httpx2 has decoded it then, and it comes as one piece."""
    try:
        content = response.content
    except httpx2.ResponseNotRead:
        return _raw(response), Inflate(response.headers.get("content-encoding", ""))
    return _whole(content), Inflate("")


async def _raw(response: httpx2.Response) -> AsyncGenerator[bytes, None]:
    raw = response.aiter_raw()
    async with aclosing(raw):
        async for chunk in raw:
            yield chunk


async def _whole(content: bytes) -> AsyncGenerator[bytes, None]:
    if content:
        yield content


async def read_error_body(response: httpx2.Response) -> bytes:
    """An error response's body, decoded, at most 64 KiB of it."""
    try:
        chunks, inflate = _chunks(response)
    except StreamDecodeError:
        chunks, inflate = _raw(response), Inflate("")  # show the bytes as they came
    body = bytearray()
    try:
        async for chunk in chunks:
            for piece in inflate.steps(chunk):
                body += piece
                if len(body) >= _MAX_ERROR_BODY:
                    return bytes(body[:_MAX_ERROR_BODY])
    except StreamDecodeError:
        pass  # a corrupt error body: what was decoded of it will do
    finally:
        await chunks.aclose()
    return bytes(body)


def unbind(response: httpx2.Response) -> None:
    """Break the reference cycle httpx2 leaves between a closed response and its stream.

    `AsyncClient.send` wraps the body in a stream that points back at the response, so every
    response would wait for the cyclic collector; unbound, reference counting frees it at
    once, and a fan-out's full collections come less often and walk less.
    """
    response.stream = _SPENT


class Inflate:
    """Undoes a response's content-encoding (gzip, deflate) in steps of bounded size.

    httpx2 inflates each network read whole: 64 KiB of gzip can become 64 MiB at once, and
    that before any size cap is checked. Here no step is larger than 64 KiB, so the caps, the
    deadline and the other tasks get their turn between two steps.
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
        # the bytes are taken as they are, as httpx2 takes them.

    def steps(self, data: bytes) -> Iterable[bytes]:
        """The decoded bytes of the next piece of the body, at most 64 KiB at a time."""
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
