"""The I/O shell: a real HTTP/1.1 server on anyio's TCP listener that plays `Script`s.

All protocol decisions live in the sans-IO modules (`_http` parses requests and frames
responses, `_wire` renders the provider formats); this module only moves their bytes over
sockets, sleeps where a script paces its deltas, and notices clients that go away.
"""

from __future__ import annotations

import inspect
import json
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl

import anyio
import anyio.abc

from multitask.testing import _wire
from multitask.testing._http import (
    LAST_CHUNK,
    ProtocolError,
    Request,
    RequestParser,
    encode_chunk,
    response_head,
)
from multitask.testing._listener import GONE, Listener, read_request
from multitask.testing._script import SAMPLE_ITEMS, Cut, Script

__all__ = ["RecordedRequest", "ScriptSource", "ScriptedModelServer"]


_LINGER_SECONDS = 2.0
_After = Literal["keep", "linger", "close"]
"""What a connection does after a response: serve another request, half-close and wait for
the client to close, or close at once (the client is gone)."""
# What a send or receive raises once the peer has gone (or we closed the stream ourselves).


@dataclass(eq=False)
class RecordedRequest:
    """One request the server received, and what became of its response.

    `body` is the parsed JSON (None if absent or not JSON); `provider` is None for a request
    that matched no route; `model` is the model (or Azure deployment) the URL names, if any.
    `chunks_sent` counts the stream's chunks (events, comment lines, NDJSON lines) handed to
    the socket so far. `completed` turns True once the whole response was sent;
    `client_disconnected` is set if the client went away before that.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    provider: _wire.Provider | None
    raw_body: bytes = b""
    connection: int = 0
    script: Script | None = None
    completed: bool = False
    client_disconnected: anyio.Event = field(default_factory=anyio.Event)
    model: str | None = None
    chunks_sent: int = 0

    def __repr__(self) -> str:
        """Every field, with the credentials a client sends shown as `[redacted]`: a test's
        failure output or a log line must not carry an API key."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "headers":
                value = _masked(value, _CREDENTIAL_HEADERS)
            elif f.name == "query":
                value = _masked(value, _CREDENTIAL_PARAMS)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed answer (as its provider reads requests)."""
        return self.provider is not None and _wire.wants_stream(self.provider, self.path, self.body)

    @property
    def disconnected(self) -> bool:
        """Whether the client went away before the response was fully sent."""
        return self.client_disconnected.is_set()


#: Where a client puts its credentials: these headers, and Gemini's `key` query parameter.
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)
_CREDENTIAL_PARAMS = frozenset({"key", "api_key", "api-key"})


def _masked(values: dict[str, str], names: frozenset[str]) -> dict[str, str]:
    return {k: "[redacted]" if k.lower() in names else v for k, v in values.items()}


ScriptSource: TypeAlias = (
    Script | Sequence[Script] | Callable[[RecordedRequest], Script | Awaitable[Script]]
)
"""One script for every request, one per request in order (the last repeats), or a function
of the request."""


class ScriptedModelServer(Listener):
    """A local model server that answers like the providers multitask speaks, from scripts.

    Use it as an async context manager: entering starts a listener on `host:port` (port 0
    picks a free one) in a task group the server owns; leaving stops it and closes every
    connection, so no task outlives the block. Point OpenAI (chat completions, Responses) and
    OpenAI-compatible clients at `url + "/v1"`; Anthropic, Gemini, Ollama and Azure clients
    at `url`. Routes: `/v1/chat/completions`, `/v1/messages`, `/v1/responses`,
    `/v1beta/models/{model}:streamGenerateContent` (and `:generateContent`), `/api/chat`,
    `/openai/deployments/{deployment}/chat/completions?api-version=...`. With `ssl_context`
    (a server-side `ssl.SSLContext`), it serves HTTPS.
    """

    def __init__(
        self,
        script: ScriptSource | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if script is None:
            script = Script(items=list(SAMPLE_ITEMS))
        if not isinstance(script, Script) and not callable(script):
            script = list(script)
            if not script:
                raise ValueError("an empty sequence of scripts answers nothing")
        super().__init__(host=host, port=port, ssl_context=ssl_context)
        self._script: ScriptSource = script
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self.errors: list[Exception] = []
        """Exceptions raised by a script function (each was answered with a 500)."""
        self._routed = 0
        self._connections = 0
        self._disconnects = 0
        self._changed: anyio.Event | None = None
        self._ids = _wire.Ids()

    # -- public surface ------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        """The base_url to give `openai.OpenAI` / `AsyncOpenAI`."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base_url to give `anthropic.Anthropic` / `AsyncAnthropic`."""
        return self.url

    @property
    def disconnects(self) -> int:
        """How many responses lost their client before being fully sent."""
        return self._disconnects

    async def wait_disconnect(self, count: int = 1, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until at least `count` clients went away mid-response.

        Raises TimeoutError after `timeout` seconds: a disconnect that never comes should fail
        a test, not hang it.
        """
        with anyio.fail_after(timeout):
            while self._disconnects < count:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    # -- connections ---------------------------------------------------------------------------

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        """Serve requests on one connection until it closes or either side ends it."""
        self._connections += 1
        connection = self._connections
        parser = RequestParser()
        async with stream:
            try:
                while True:
                    try:
                        request = await read_request(stream, parser)
                    except ProtocolError as exc:
                        await self._send_protocol_error(stream, exc)
                        await self._linger(stream)
                        return
                    if request is None:
                        return
                    after = await self._respond(stream, parser, request, connection)
                    if after == "linger":
                        await self._linger(stream)
                    if after != "keep":
                        return
            except GONE:
                return

    @staticmethod
    async def _linger(stream: anyio.abc.ByteStream) -> None:
        """Half-close, then wait (briefly) for the client to close: a lingering close.

        Closing outright could lose response bytes still buffered on our side, or make the
        kernel answer the client's unread bytes with a reset that discards them.
        """
        with anyio.move_on_after(_LINGER_SECONDS):
            try:
                await stream.send_eof()
                while True:
                    await stream.receive()
            except GONE:
                pass

    @staticmethod
    async def _send_protocol_error(stream: anyio.abc.ByteStream, exc: ProtocolError) -> None:
        error = _wire.default_error("openai", exc.status, message=str(exc))
        body = _wire.json_body("openai", error, error=True)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        await stream.send(response_head(exc.status, headers) + body)

    # -- one request ---------------------------------------------------------------------------

    async def _respond(
        self,
        stream: anyio.abc.ByteStream,
        parser: RequestParser,
        request: Request,
        connection: int,
    ) -> _After:
        """Answer one request; return what the connection does next."""
        where = _wire.route(request.path) if request.method == "POST" else None
        provider = where.provider if where is not None else None
        try:
            body: Any = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        model = where.model if where is not None else None
        if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(parse_qsl(request.query, keep_blank_values=True)),
            headers=dict(request.headers),
            body=body,
            provider=provider,
            raw_body=request.body,
            connection=connection,
            model=model,
        )
        self.requests.append(record)
        link = _Link(stream, record, provider or "openai", self._ids, keep_alive=request.keep_alive)

        if provider is None:
            message = f"Invalid URL ({request.method} {request.path})"
            error = _wire.default_error("openai", 404, message=message)
            error["error"]["code"] = None  # OpenAI's answer to an unknown URL has no code
            return await self._guard(link, parser, record, link.send_json(404, error))
        if provider == "azure" and "api-version" not in record.query and where and where.model:
            # Azure answers a deployment URL without `api-version` as an unknown resource.
            error = {"error": {"code": "404", "message": "Resource not found"}}
            return await self._guard(link, parser, record, link.send_json(404, error))
        if not isinstance(body, dict):
            error = _wire.default_error(
                provider,
                400,
                message="We could not parse the JSON body of your request.",
                request_id=link.anthropic_request_id,
            )
            return await self._guard(link, parser, record, link.send_json(400, error))

        try:
            script = await self._script_for(record)
        except Exception as exc:
            self.errors.append(exc)
            error = _wire.default_error(
                provider,
                500,
                message=f"scripted server: the script function raised {exc!r}",
                request_id=link.anthropic_request_id,
            )
            return await self._guard(link, parser, record, link.send_json(500, error))
        record.script = script

        action: Awaitable[_wire.Ending]
        if script.status != 200:
            error = script.error_body or _wire.default_error(
                provider,
                script.status,
                request_id=link.anthropic_request_id,
                retry_after=script.retry_after,
                model=record.model,
            )
            action = link.send_json(script.status, error, script)
        elif record.stream:
            action = self._send_stream(link, body, script)
        else:
            action = self._send_completion(link, body, script)
        return await self._guard(link, parser, record, action)

    async def _script_for(self, record: RecordedRequest) -> Script:
        index = self._routed
        self._routed += 1
        source = self._script
        if isinstance(source, Script):
            return source
        if callable(source):
            result = source(record)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Script):
                raise TypeError(f"the script function returned {result!r}, not a Script")
            return result
        return source[min(index, len(source) - 1)]

    async def _send_stream(self, link: _Link, body: dict[str, Any], script: Script) -> _wire.Ending:
        plan = _wire.stream_plan(
            link.provider, body, script, ids=self._ids, model=link.record.model
        )
        await link.send(response_head(200, link.headers("stream", script)))
        for chunk in plan.chunks:
            if chunk.delay:
                await link.sleep(chunk.delay)
            # Counted before the send: a client that read the chunk must find it counted.
            link.record.chunks_sent += 1
            await link.send(encode_chunk(chunk.data))
        if plan.ending == "end":
            await link.send(LAST_CHUNK, last=True)
        return plan.ending

    async def _send_completion(
        self, link: _Link, body: dict[str, Any], script: Script
    ) -> _wire.Ending:
        sent, cut = script.cut()
        if script.delay:
            # Pace a whole answer as long as its deltas would have taken.
            await link.sleep(script.delay * math.ceil(len(sent) / script.chunk_size))
        if cut is Cut.DROP:
            return "drop"
        if cut is Cut.STALL:
            return "stall"
        if cut is Cut.ERROR:
            status = _wire.error_status_for_cut(link.provider)
            error = script.error_body or _wire.default_error(
                link.provider, status, request_id=link.anthropic_request_id
            )
            return await link.send_json(status, error, script)
        answer = _wire.completion_body(
            link.provider, body, script, ids=self._ids, model=link.record.model
        )
        return await link.send_json(200, answer, script)

    async def _guard(
        self,
        link: _Link,
        parser: RequestParser,
        record: RecordedRequest,
        action: Awaitable[_wire.Ending],
    ) -> _After:
        """Run `action` (which sends the response) while watching for the client to go away.

        A watcher reads the socket meanwhile: bytes are buffered for the next request, and EOF
        or a reset marks the client gone, which ends the response's pauses and stops its next
        send. Returns what the connection does next.
        """

        async def watch() -> None:
            try:
                while True:
                    parser.feed(await link.stream.receive())
            except GONE:
                link.gone.set()

        ending: _wire.Ending | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                ending = await action
                if ending == "stall":
                    await link.sleep(math.inf)
            except (_ClientGone, *GONE):
                ending = None
            tg.cancel_scope.cancel()

        if ending == "end":
            return "keep" if link.keep_alive else "linger"
        if ending == "drop":
            return "linger"  # the body stops mid-chunk: the client sees the connection end
        self._record_disconnect(record)
        return "close"

    def _record_disconnect(self, record: RecordedRequest) -> None:
        record.client_disconnected.set()
        self._disconnects += 1
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()


class _ClientGone(Exception):
    """The client went away before the response was fully sent."""


class _Link:
    """The sending side of one response, which knows whether its client is still there.

    Only pauses end early when the client goes (`sleep` raises `_ClientGone`); a send is never
    interrupted by the watcher, and one that starts after the client went raises instead. The
    record is marked `completed` as the last bytes are handed to the socket (and unmarked if
    that send fails), so that a client that has read the whole response always finds it
    complete, even if the server is stopped right after.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        record: RecordedRequest,
        provider: _wire.Provider,
        ids: _wire.Ids,
        *,
        keep_alive: bool,
    ) -> None:
        self.stream = stream
        self.record = record
        self.provider: _wire.Provider = provider
        self.keep_alive = keep_alive
        self.request_id = ids.request(provider)
        self.gone = anyio.Event()

    @property
    def anthropic_request_id(self) -> str | None:
        """The request id to put in an Anthropic error body (OpenAI's bodies have none)."""
        return self.request_id if self.provider == "anthropic" else None

    def headers(
        self, kind: Literal["stream", "json"], script: Script | None, length: int | None = None
    ) -> list[tuple[str, str]]:
        return _wire.response_headers(
            self.provider,
            request_id=self.request_id,
            content_type=kind,
            content_length=length,
            keep_alive=self.keep_alive,
            retry_after=script.retry_after if script else None,
            extra=script.headers if script else None,
        )

    async def send(self, data: bytes, *, last: bool = False) -> None:
        if self.gone.is_set():
            raise _ClientGone
        if not last:
            await self.stream.send(data)
            return
        self.record.completed = True
        try:
            await self.stream.send(data)
        except BaseException:
            self.record.completed = False
            raise

    async def sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self.gone.wait()
        if self.gone.is_set():
            raise _ClientGone

    async def send_json(
        self, status: int, payload: Any, script: Script | None = None
    ) -> _wire.Ending:
        data = _wire.json_body(self.provider, payload, error=status >= 400)
        head = response_head(status, self.headers("json", script, len(data)))
        await self.send(head + data, last=True)
        return "end"
