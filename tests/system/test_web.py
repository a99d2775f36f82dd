"""`multitask.web`: SSE and NDJSON responses, keep-alives, the final event, and cancelling the
model request when the browser goes away; as bare ASGI on asyncio and trio, and under Starlette
and FastAPI on a real uvicorn server."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import BaseModel

import multitask
from multitask.testing import RecordedRequest, Script, ScriptedModelServer
from multitask.web import NDJSONResponse, SSEResponse, ndjson_response, safe_error, sse_response

KEY = "sk-test-SECRET-0123456789"
INTERNAL_URL = "http://10.1.2.3:8080/internal/admin"


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user number {i}", "age": 20 + i} for i in range(4)]


def parse_sse(body: bytes) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The (event, data) pairs of an SSE body, and how many comment-only blocks it had."""
    events: list[tuple[str, dict[str, Any]]] = []
    comments = 0
    for block in body.split(b"\n\n"):
        if not block:
            continue
        lines = block.split(b"\n")
        if all(line.startswith(b":") for line in lines):
            comments += 1
            continue
        name = b""
        data: list[bytes] = []
        for line in lines:
            field, _, value = line.partition(b": ")
            if field == b"event":
                name = value
            elif field == b"data":
                data.append(value)
        events.append((name.decode(), json.loads(b"\n".join(data))))
    return events, comments


def parse_ndjson(body: bytes) -> tuple[list[dict[str, Any]], int]:
    lines = body.split(b"\n")
    assert lines[-1] == b"", "the body ends with a newline"
    return [json.loads(line) for line in lines[:-1] if line], sum(1 for x in lines[:-1] if not x)


# -- a bare ASGI harness -----------------------------------------------------------------------


class Harness:
    """Calls an ASGI app as a server would; `gone()` makes the client disconnect."""

    def __init__(self, disconnect_after: bytes | None = None, send_error_after: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.body = b""
        self.disconnect_after = disconnect_after
        self.send_error_after = send_error_after
        self._gone = anyio.Event()
        self._asked = False

    def gone(self) -> None:
        self._gone.set()

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone.is_set():
            raise OSError("the client went away")
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.body += message["body"]
            if self.send_error_after and len(self.messages) > self.send_error_after:
                self._gone.set()
                raise OSError("connection reset")
            if self.disconnect_after is not None and self.disconnect_after in self.body:
                self.gone()

    async def run(self, app: Any) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        with anyio.fail_after(10):
            await app(scope, self.receive, self.send)

    @property
    def headers(self) -> dict[str, str]:
        start = self.messages[0]
        assert start["type"] == "http.response.start"
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def finished(self) -> bool:
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)


def openai_client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:gpt-test", base_url=server.openai_base_url, api_key=KEY, **options
    )


@pytest.mark.anyio
async def test_sse_framing_of_events() -> None:
    script = Script(items=USERS, chunk_size=3, tokens_per_second=1000)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness()
        await harness.run(sse_response(client.extract_events(User, "t", min_interval=0)))
    assert harness.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert harness.headers["cache-control"] == "no-cache"
    assert harness.finished
    events, _ = parse_sse(harness.body)
    for name, data in events:
        assert data["type"] == name
    names = [name for name, _ in events]
    assert set(names) == {"started", "updated", "item", "done"}
    assert names[-1] == "done"
    assert [d["item"] for n, d in events if n == "item"] == USERS
    assert [d["index"] for n, d in events if n == "started"] == [0, 1, 2, 3]
    done = events[-1][1]
    assert done["items"] == 4
    assert done["finish_reason"] == "tool_calls"
    assert done["usage"]["output_tokens"] > 0


@pytest.mark.anyio
async def test_ndjson_of_an_item_stream() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, openai_client(server) as client:
        harness = Harness()
        await harness.run(ndjson_response(client.extract_stream(User, "t")))
    assert harness.headers["content-type"] == "application/x-ndjson"
    lines, _ = parse_ndjson(harness.body)
    assert lines[:-1] == [{"type": "item", "index": i, "item": u} for i, u in enumerate(USERS)]
    assert lines[-1]["type"] == "done"
    assert lines[-1]["items"] == 4
    assert lines[-1]["usage"]["input_tokens"] > 0
    assert lines[-1]["finish_reason"] == "tool_calls"


class Said(BaseModel):
    who: str
    words: multitask.Quote


@pytest.mark.anyio
@pytest.mark.parametrize("respond", [sse_response, ndjson_response])
@pytest.mark.parametrize("events", [False, True])
async def test_an_item_with_a_quote_says_where_it_is(respond: Any, events: bool) -> None:
    text = "Ada said «hello there» and Alan said hello there."
    said = [{"who": "Ada", "words": "hello there"}, {"who": "Alan", "words": "hello there"}]
    async with ScriptedModelServer(Script(items=said)) as server, openai_client(server) as client:
        harness = Harness()
        stream = client.extract_events(Said, text) if events else client.extract_stream(Said, text)
        await harness.run(respond(stream))
    parse = parse_sse if respond is sse_response else parse_ndjson
    got, _ = parse(harness.body)
    messages = [m[1] if isinstance(m, tuple) else m for m in got]
    items = [m for m in messages if m["type"] == "item"]
    assert [(m["start"], m["end"], m["match"]) for m in items] == [
        (text.index("hello"), text.index("hello") + 11, "exact"),
        (text.rindex("hello"), text.rindex("hello") + 11, "exact"),
    ]
    assert [m["item"] for m in items] == said


@pytest.mark.anyio
@pytest.mark.parametrize("respond", [sse_response, ndjson_response])
async def test_keep_alives_while_idle(respond: Any) -> None:
    # A few deltas 0.1 s apart: the stream is idle between them.
    script = Script(items=USERS[:2], chunk_size=50, tokens_per_second=10)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness()
        await harness.run(respond(client.extract_stream(User, "t"), keep_alive=0.02))
    if respond is sse_response:
        events, keep_alives = parse_sse(harness.body)
        assert harness.body.startswith(b": keep-alive\n\n"), "idle before the first item"
        assert [name for name, _ in events] == ["item", "item", "done"]
    else:
        lines, keep_alives = parse_ndjson(harness.body)
        assert harness.body.startswith(b"\n")
        assert [line["type"] for line in lines] == ["item", "item", "done"]
    assert keep_alives >= 5


@pytest.mark.anyio
async def test_no_keep_alives_when_disabled() -> None:
    script = Script(items=USERS[:1], chunk_size=30, tokens_per_second=10)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness()
        await harness.run(sse_response(client.extract_stream(User, "t"), keep_alive=None))
    assert b": keep-alive" not in harness.body


@pytest.mark.anyio
async def test_final_event_for_a_truncated_answer() -> None:
    cut = len(json.dumps({"tasks": USERS[:2]})) + 10
    async with ScriptedModelServer(Script(items=USERS, truncate_after=cut)) as server:
        async with openai_client(server) as client:
            harness = Harness()
            await harness.run(sse_response(client.extract_events(User, "t")))
    events, _ = parse_sse(harness.body)
    name, data = events[-1]
    assert name == "truncated"
    assert data["items"] == 2
    assert data["error"] == "truncated"
    assert data["finish_reason"] == "length"
    assert harness.finished


@pytest.mark.anyio
async def test_final_event_for_a_failure_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    secret = f"Incorrect API key provided: {KEY}. See {INTERNAL_URL}"
    error_body = {"error": {"message": secret, "type": "invalid_request_error", "code": "k"}}
    script = Script(status=401, error_body=error_body)
    caplog.set_level(logging.WARNING, logger="multitask.web")
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness()
        await harness.run(sse_response(client.extract_events(User, "t")))
    events, _ = parse_sse(harness.body)
    assert events == [
        (
            "failed",
            {
                "type": "failed",
                "items": 0,
                "error": "auth",
                "message": "The model provider did not accept the credentials.",
            },
        )
    ]
    for leak in (KEY, "SECRET", "10.1.2.3", "internal", "Incorrect"):
        assert leak.encode() not in harness.body
    assert "auth" in caplog.text  # the server's own log says what happened


@pytest.mark.anyio
async def test_an_unexpected_exception_is_masked() -> None:
    async def items() -> AsyncIterator[dict[str, int]]:
        yield {"a": 1}
        raise RuntimeError(f"database password hunter2 at {INTERNAL_URL}")

    harness = Harness()
    await harness.run(ndjson_response(items()))
    lines, _ = parse_ndjson(harness.body)
    assert lines == [
        {"type": "item", "index": 0, "item": {"a": 1}},
        {"type": "failed", "items": 1, "error": "internal", "message": "Internal error."},
    ]
    assert b"hunter2" not in harness.body


@pytest.mark.anyio
async def test_browser_disconnect_cancels_the_model_request() -> None:
    script = Script(items=USERS, chunk_size=2, tokens_per_second=50)  # about 3 s
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness(disconnect_after=b"event: item")
        start = anyio.current_time()
        await harness.run(sse_response(client.extract_events(User, "t")))
        assert anyio.current_time() - start < 2.5, "the response ended at the disconnect"
        await server.wait_disconnect()
        assert server.requests[0].disconnected
        assert not server.requests[0].completed
    assert not harness.finished
    assert b"event: done" not in harness.body


@pytest.mark.anyio
async def test_a_failed_send_cancels_the_model_request() -> None:
    script = Script(items=USERS, chunk_size=2, tokens_per_second=100)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        harness = Harness(send_error_after=3)
        await harness.run(ndjson_response(client.extract_events(User, "t")))
        await server.wait_disconnect()
        assert not server.requests[0].completed


def test_safe_error_covers_every_error() -> None:
    S = "SECRET-MSG"
    cases: list[tuple[BaseException, str, str]] = [
        (multitask.IncompleteOutputError(S), "truncated", "truncated"),
        (multitask.ItemValidationError(S, index=2, raw={}, errors=[]), "failed", "invalid_item"),
        (multitask.ItemTooLargeError(S), "failed", "too_large"),
        (multitask.MalformedOutputError(S), "failed", "malformed_output"),
        (multitask.ContentFilterError(S), "failed", "content_filter"),
        (multitask.RefusalError(S), "failed", "refused"),
        (multitask.APIStatusError(S, status_code=403), "failed", "auth"),
        (multitask.APIStatusError(S, status_code=429), "failed", "rate_limited"),
        (multitask.APIStatusError(S, status_code=503), "failed", "provider_error"),
        (multitask.APIStatusError(S, status_code=400), "failed", "bad_request"),
        (multitask.StreamError(S), "failed", "provider_error"),
        (multitask.APITimeoutError(S), "failed", "timeout"),
        (multitask.APIConnectionError(S), "failed", "unavailable"),
        (multitask.StreamDecodeError(S), "failed", "bad_response"),
        (multitask.MultitaskError(S), "failed", "failed"),
        (ValueError(S), "failed", "internal"),
    ]
    for exc, kind, code in cases:
        got_kind, got_code, message = safe_error(exc)
        assert (got_kind, got_code) == (kind, code), exc
        assert S not in message


def test_keep_alive_must_be_positive() -> None:
    async def nothing() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ValueError, match="keep_alive"):
        sse_response(nothing(), keep_alive=0)


# -- Starlette and FastAPI on a real uvicorn server --------------------------------------------


def script_for(request: RecordedRequest) -> Script:
    """The scripted model answers by the user's text: "slow", "truncate", or fast."""
    text = request.body["messages"][-1]["content"]
    if text == "slow":
        return Script(items=USERS, chunk_size=4, tokens_per_second=60)  # about 0.8 s
    if text == "truncate":
        return Script(items=USERS, truncate_after=70)
    return Script(items=USERS, chunk_size=4, tokens_per_second=400)


class Body(BaseModel):
    text: str


class Upstream:
    """The scripted model server and client the apps share, living in the server's loop."""

    server: ScriptedModelServer
    client: multitask.Client


def make_app(upstream: Upstream) -> Any:
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Mount, Route

    async def sse(request: Request) -> SSEResponse:
        text = request.query_params["text"]
        if request.query_params.get("kind") == "items":
            return sse_response(upstream.client.extract_stream(User, text), keep_alive=0.2)
        return sse_response(upstream.client.extract_events(User, text), keep_alive=0.2)

    async def ndjson(request: Request) -> NDJSONResponse:
        text = request.query_params["text"]
        return ndjson_response(upstream.client.extract_events(User, text), keep_alive=0.2)

    api = FastAPI()

    @api.post("/sse")
    async def fastapi_sse(body: Body) -> SSEResponse:
        return sse_response(upstream.client.extract_events(User, body.text), keep_alive=0.2)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            upstream.server = await stack.enter_async_context(ScriptedModelServer(script_for))
            upstream.client = await stack.enter_async_context(openai_client(upstream.server))
            yield

    return Starlette(
        routes=[
            Route("/sse", sse, methods=["POST"]),
            Route("/ndjson", ndjson, methods=["POST"]),
            Mount("/fastapi", app=api),
        ],
        lifespan=lifespan,
    )


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 in a thread (its own asyncio loop)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, Upstream]]:
    pytest.importorskip("uvicorn", reason="the web tests need uvicorn: pip install -e '.[dev]'")
    pytest.importorskip("fastapi", reason="the web tests need fastapi: pip install -e '.[dev]'")
    upstream = Upstream()
    with serve(make_app(upstream)) as url:
        yield url, upstream


async def read_timed(response: httpx2.Response) -> list[tuple[float, bytes]]:
    chunks = []
    async for chunk in response.aiter_raw():
        chunks.append((time.monotonic(), chunk))
    return chunks


async def wait_for_disconnects(upstream: Upstream, count: int) -> None:
    with anyio.fail_after(5):
        # The server lives in uvicorn's thread and loop: poll, an Event cannot cross them.
        while upstream.server.disconnects < count:  # noqa: ASYNC110
            await anyio.sleep(0.02)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "kind"), [("/sse", "events"), ("/sse", "items"), ("/fastapi/sse", "events")]
)
async def test_uvicorn_streams_items_as_they_arrive(
    web: tuple[str, Upstream], path: str, kind: str
) -> None:
    url, _ = web
    async with httpx2.AsyncClient(base_url=url) as http:
        request = (
            http.build_request("POST", path, json={"text": "slow"})
            if path.startswith("/fastapi")
            else http.build_request("POST", path, params={"text": "slow", "kind": kind})
        )
        response = await http.send(request, stream=True)
        try:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            chunks = await read_timed(response)
        finally:
            await response.aclose()
    body = b"".join(chunk for _, chunk in chunks)
    events, _ = parse_sse(body)
    assert [d["item"] for n, d in events if n == "item"] == USERS
    assert events[-1][0] == "done"
    # The first item came well before the end: it streamed.
    first = next(t for t, chunk in chunks if b"event: item" in chunk)
    assert chunks[-1][0] - first > 0.3


@pytest.mark.anyio
async def test_uvicorn_ndjson_and_truncation(web: tuple[str, Upstream]) -> None:
    url, _ = web
    async with httpx2.AsyncClient(base_url=url) as http:
        response = await http.post("/ndjson", params={"text": "truncate"})
    lines, _ = parse_ndjson(response.content)
    assert response.headers["content-type"] == "application/x-ndjson"
    assert lines[-1]["type"] == "truncated"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/sse", "/fastapi/sse"])
async def test_uvicorn_disconnect_cancels_the_model_request(
    web: tuple[str, Upstream], path: str
) -> None:
    url, upstream = web
    before = upstream.server.disconnects
    requests_before = len(upstream.server.requests)
    async with httpx2.AsyncClient(base_url=url) as http:
        kwargs: dict[str, Any] = (
            {"json": {"text": "slow"}}
            if path.startswith("/fastapi")
            else {"params": {"text": "slow"}}
        )
        async with http.stream("POST", path, **kwargs) as response:
            async for line in response.aiter_lines():
                if line == "event: item":
                    break  # leave after the first item: the connection closes
    await wait_for_disconnects(upstream, before + 1)
    request = upstream.server.requests[requests_before]
    assert request.disconnected
    assert not request.completed
