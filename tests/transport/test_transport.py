"""`StreamingTransport` over real sockets: HTTPS, the keep-alive pool, its limits, proxies.

The client's own transport is exercised by every HTTP test in the suite (it is the default);
these tests cover what only it does: TLS with a throwaway CA (trustme), connection reuse and
its failure modes, the connection limit and its pool timeout, and the fallback to httpx's
transport for the URLs a configured proxy applies to.
"""

from __future__ import annotations

import contextvars
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pydantic
import pytest
import trustme
from pydantic import BaseModel

import multitask
from multitask._transport import ResponseBody, response_body
from multitask.lowlevel import StreamingTransport
from multitask.testing import HostileServer, Reply, Script, ScriptedModelServer
from multitask.testing._http import RequestParser
from multitask.testing._listener import read_request

pytestmark = pytest.mark.anyio

KEY = "sk-test-transport"


class User(BaseModel):
    name: str
    age: int


ITEMS = [{"name": "Jason", "age": 10}, {"name": "John", "age": 30}]
EXPECTED = [User(**item) for item in ITEMS]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The throwaway CA trusted the way a user would: SSL_CERT_FILE (httpx honours it)."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


async def extract_all(client: multitask.Client, text: str = "two users") -> list[User]:
    return [user async for user in client.extract_stream(User, text)]


# -- HTTPS -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("trusted")
@pytest.mark.parametrize("model", ["openai:m", "anthropic:m"])
async def test_https_with_the_default_client(server_context: ssl.SSLContext, model: str) -> None:
    async with ScriptedModelServer(Script(items=ITEMS), ssl_context=server_context) as server:
        assert server.url.startswith("https://")
        base = server.openai_base_url if model.startswith("openai") else server.url
        async with multitask.Client(model, base_url=base, api_key=KEY) as client:
            assert isinstance(client._client()._transport, StreamingTransport)
            assert await extract_all(client) == EXPECTED
            assert await extract_all(client) == EXPECTED  # and again, on the same connection
        assert [r.connection for r in server.requests] == [1, 1]
        assert server.requests[0].headers["authorization" if "openai" in model else "x-api-key"]


async def test_an_untrusted_certificate_is_refused(server_context: ssl.SSLContext) -> None:
    async with ScriptedModelServer(Script(items=ITEMS), ssl_context=server_context) as server:
        client = multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY, max_retries=0
        )
        async with client:
            with pytest.raises(multitask.APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await extract_all(client)
        assert server.requests == []  # nothing was sent over the unverified connection


@pytest.mark.usefixtures("trusted")
async def test_the_certificate_must_name_the_host(ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.example.com").configure_cert(context)
    async with ScriptedModelServer(Script(items=ITEMS), ssl_context=context) as server:
        client = multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY, max_retries=0
        )
        async with client:
            with pytest.raises(multitask.APIConnectionError, match=r"127\.0\.0\.1"):
                await extract_all(client)
        assert server.requests == []


# -- the keep-alive pool -----------------------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    async with ScriptedModelServer(Script(items=ITEMS)) as server:
        async with multitask.Client("openai:m", base_url=server.openai_base_url, api_key=KEY) as c:
            for _ in range(5):
                assert await extract_all(c) == EXPECTED
            transport = c._client()._transport
            assert isinstance(transport, StreamingTransport)
            assert (transport.connections, transport.idle_connections) == (1, 1)
        assert transport.connections == 0  # closing the client closed the idle connection
    assert {r.connection for r in server.requests} == {1}


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """The server ends each kept-alive connection right after its response, without saying
    `connection: close`; the next request must not fail on the dead connection."""
    body = (b'{"tasks": [{"name": "Jason", "age": 10}]}',)
    reply = Reply(
        headers=[("content-type", "application/json"), ("connection", "keep-alive")],
        body=body,
        framing="length",
    )
    async with HostileServer(reply) as server:
        transport = StreamingTransport()
        async with httpx2.AsyncClient(transport=transport) as http:
            for _ in range(3):
                response = await http.post(server.url + "/x", json={})
                assert response.json() == {"tasks": [{"name": "Jason", "age": 10}]}
                await anyio.sleep(0.05)  # the server's close reaches us while idle
        assert server.connections == 3
        assert transport.connections == 0


class RawServer:
    """A loopback server that reads whole requests and does, per connection, what a test says:
    `plan[k]` lists, for the k-th connection, "ok" (answer, keep the connection) or "drop"
    (close it without answering) for each request it gets."""

    OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def __init__(self, plan: list[list[str]]) -> None:
        self.plan = plan
        self.connections = 0
        self.requests: list[tuple[int, str]] = []  # (connection, path)

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        steps = self.plan[number - 1] if number <= len(self.plan) else ["ok"] * 100
        parser = RequestParser()
        async with stream:
            for step in steps:
                request = await read_request(stream, parser)
                if request is None:
                    return
                self.requests.append((number, request.path))
                if step == "drop":
                    return
                await stream.send(self.OK)


@pytest.fixture
async def raw_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer(request.param)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server, f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("raw_server", [[["ok", "drop"]]], indirect=True)
async def test_a_kept_alive_connection_dropped_before_answering_is_retried_once(
    raw_server: tuple[RawServer, str],
) -> None:
    """The keep-alive race: the server drops a reused connection after the request went out
    and before any of the response came; the request goes again on a fresh connection."""
    server, url = raw_server
    async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
        assert (await http.post(url + "/first", json={})).json() == {}
        assert (await http.post(url + "/second", json={})).json() == {}
    assert server.requests == [(1, "/first"), (1, "/second"), (2, "/second")]


@pytest.mark.parametrize("raw_server", [[["drop"]]], indirect=True)
async def test_a_fresh_connection_dropped_before_answering_is_an_error(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await http.post(url + "/only", json={})
    assert server.requests == [(1, "/only")]  # not sent twice: a new connection is not stale


async def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    async with ScriptedModelServer(Script(items=ITEMS * 10, tokens_per_second=400)) as server:
        async with multitask.Client("openai:m", base_url=server.openai_base_url, api_key=KEY) as c:
            async with c.extract_stream(User, "many") as stream:
                async for _ in stream:
                    break
            transport = c._client()._transport
            assert isinstance(transport, StreamingTransport)
            assert transport.connections == 0
            await server.wait_disconnect()
            assert await extract_all(c) != []
        assert [r.connection for r in server.requests] == [1, 2]


async def test_the_connection_limit_queues_requests() -> None:
    async with ScriptedModelServer(Script(items=ITEMS, tokens_per_second=400)) as server:
        client = multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY, max_connections=2
        )
        results: list[list[User]] = []
        busiest = 0

        async def one(k: int) -> None:
            results.append(await extract_all(client, f"doc {k}"))

        async def watch() -> None:
            nonlocal busiest
            transport = client._client()._transport
            assert isinstance(transport, StreamingTransport)
            while True:
                busiest = max(busiest, transport.connections)
                await anyio.sleep(0.001)

        async with client, anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as inner:
                for k in range(6):
                    inner.start_soon(one, k)
            tg.cancel_scope.cancel()
    assert results == [EXPECTED] * 6
    assert busiest == 2
    assert len({r.connection for r in server.requests}) == 2


async def test_the_pool_timeout_names_the_limit() -> None:
    async with HostileServer(Reply(body=(b"data: {}\n\n",), then="hang")) as server:
        transport = StreamingTransport(max_connections=1)
        timeout = httpx2.Timeout(5.0, pool=0.05)
        async with httpx2.AsyncClient(transport=transport, timeout=timeout) as http:
            async with http.stream("POST", server.url + "/a", json={}) as held:
                assert held.status_code == 200
                with pytest.raises(httpx2.PoolTimeout, match="no connection free among 1"):
                    await http.post(server.url + "/b", json={})
            # the held response was closed: its slot is free again
            assert transport.connections == 0


async def test_idle_connections_expire() -> None:
    async with ScriptedModelServer(Script(items=ITEMS)) as server:
        transport = StreamingTransport(keepalive_expiry=0.0)
        http = httpx2.AsyncClient(transport=transport)
        client = multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=http
        )
        async with http, client:
            for _ in range(3):
                assert await extract_all(client) == EXPECTED
                await anyio.sleep(0.01)
        assert [r.connection for r in server.requests] == [1, 2, 3]


async def test_a_closed_transport_takes_no_requests() -> None:
    transport = StreamingTransport()
    await transport.aclose()
    async with httpx2.AsyncClient(transport=transport) as http:
        with pytest.raises(RuntimeError, match="closed"):
            await http.get("http://127.0.0.1:9/")


async def test_an_unsupported_scheme() -> None:
    async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
        with pytest.raises(httpx2.UnsupportedProtocol, match="ftp"):
            await http.get("ftp://127.0.0.1/")


async def test_a_refused_connection_names_the_address() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
        with pytest.raises(httpx2.ConnectError, match=f"127.0.0.1:{port}"):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_streamed_request_body_is_sent_whole() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    async with HostileServer(Reply(body=(b"ok",), framing="length")) as server:
        async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
            response = await http.post(server.url + "/x", content=parts())
            assert response.text == "ok"
    assert server.requests[0].body == b'{"a": 1}'


# -- which transport a client uses -------------------------------------------------------------


async def test_a_proxy_in_the_environment_is_mounted_beside_the_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx2's proxy transport serves what the proxy applies to; ours stays the default
    (tests/client/test_http_stack.py sends real requests through a proxy and past it)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    async with multitask.Client("openai:m", api_key=KEY) as client:
        http = client._client()
        assert isinstance(http._transport, StreamingTransport)
        proxied = http._transport_for_url(httpx2.URL("https://api.openai.com/v1"))
        assert isinstance(proxied, httpx2.AsyncHTTPTransport)
        direct = http._transport_for_url(httpx2.URL("http://127.0.0.1:8080/v1"))
        assert direct is http._transport
    monkeypatch.delenv("HTTPS_PROXY")
    async with multitask.Client("openai:m", api_key=KEY) as client:
        http = client._client()
        assert http._transport_for_url(httpx2.URL("https://x/")) is http._transport


async def test_a_zero_keepalive_expiry_never_reuses_a_connection() -> None:
    """uvloop's clock ticks in milliseconds, so a connection returned and taken again in the
    same tick is 0.0 s old: a zero expiry must still refuse it (the server hangs after one
    reply, so a reused connection would time out)."""
    reply = Reply(
        headers=[("content-type", "application/json"), ("connection", "keep-alive")],
        body=(b"{}",),
        framing="length",
        then="hang",
    )
    async with HostileServer(reply) as server:
        transport = StreamingTransport(keepalive_expiry=0.0)
        async with httpx2.AsyncClient(transport=transport, timeout=2.0) as http:
            for _ in range(30):
                response = await http.post(server.url + "/x", json={})
                assert response.json() == {}
    assert server.connections == 30


async def test_concurrent_requests_while_idle_connections_expire() -> None:
    """Requests that find expired idle connections close them (an await) while others take
    and return connections: the pool must stay consistent (this once raised IndexError)."""
    reply = Reply(
        headers=[("content-type", "application/json"), ("connection", "keep-alive")],
        body=(b"{}",),
        framing="length",
        then="hang",
    )
    async with HostileServer(reply) as server:
        transport = StreamingTransport(keepalive_expiry=0.0)
        async with httpx2.AsyncClient(transport=transport) as http:

            async def one() -> None:
                response = await http.post(server.url + "/x", json={})
                assert response.json() == {}

            for _ in range(4):
                async with anyio.create_task_group() as tg:
                    for _ in range(40):
                        tg.start_soon(one)
                assert transport.connections == transport.idle_connections == 40
        assert transport.connections == 0
    assert server.connections == 160


# -- ResponseBody.read_into: the body fed to a parser in the socket's callback -------------


def lines(buffer: bytearray) -> Callable[[bytes], list[bytes]]:
    """A parser of newline-ended lines: what it returns is the lines completed by `data`."""

    def parse(data: bytes) -> list[bytes]:
        buffer.extend(data)
        *done, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        if b"boom" in done:
            raise ValueError("the parser gave up on 'boom'")
        return done

    return parse


async def read_lines(body: ResponseBody, parse: Callable[[bytes], list[bytes]]) -> list[bytes]:
    out: list[bytes] = []
    while got := await body.read_into(parse):
        out += got
    return out


def keep_alive(body: tuple[bytes, ...], **reply: Any) -> Reply:
    headers = [("content-type", "text/event-stream"), ("connection", "keep-alive")]
    return Reply(headers=headers, body=body, **reply)


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_read_into_gives_what_the_parser_makes_then_pools_the_connection(
    framing: str,
) -> None:
    pieces = (b"one\ntw", b"o\n", b"", b"thr", b"ee\nfour\nfive", b"\n")
    reply = keep_alive(tuple(p for p in pieces if p), framing=framing, delay=0.01)
    if framing == "close":
        reply = Reply(body=reply.body, framing="close", delay=0.01)
    async with HostileServer(reply) as server:
        transport = StreamingTransport()
        async with httpx2.AsyncClient(transport=transport) as http:
            for _ in range(2):
                async with http.stream("POST", server.url + "/x", json={}) as response:
                    body = response_body(response)
                    assert body is not None
                    assert await read_lines(body, lines(bytearray())) == [
                        b"one",
                        b"two",
                        b"three",
                        b"four",
                        b"five",
                    ]
                    assert await body.read_into(lines(bytearray())) == []  # the end stays
                # Pooled once read to its end (unless the body ended with the connection).
                assert transport.idle_connections == (1 if framing != "close" else 0)


async def test_read_into_raises_the_parsers_error_after_what_it_made() -> None:
    reply = keep_alive((b"one\ntwo\n", b"boom\n", b"never\n"), delay=0.05)
    async with HostileServer(reply) as server:
        transport = StreamingTransport()
        async with httpx2.AsyncClient(transport=transport) as http:
            async with http.stream("POST", server.url + "/x", json={}) as response:
                body = response_body(response)
                assert body is not None
                parse = lines(bytearray())
                assert await body.read_into(parse) == [b"one", b"two"]
                with pytest.raises(ValueError, match="gave up on 'boom'"):
                    await body.read_into(parse)
                with pytest.raises(ValueError, match="gave up on 'boom'"):  # and stays raised
                    await body.read_into(parse)
            assert transport.connections == 0  # not read to its end: not reused


async def test_read_into_maps_a_broken_body_to_httpx_errors() -> None:
    reply = keep_alive((b"one\n", b"two\n"), delay=0.02, then="close")  # no final chunk
    async with HostileServer(reply) as server:
        async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
            async with http.stream("POST", server.url + "/x", json={}) as response:
                body = response_body(response)
                assert body is not None
                parse = lines(bytearray())
                assert await body.read_into(parse) == [b"one"]
                assert await body.read_into(parse) == [b"two"]
                with pytest.raises(httpx2.RemoteProtocolError, match="no final chunk"):
                    await body.read_into(parse)


async def test_read_into_times_out_between_reads() -> None:
    reply = keep_alive((b"one\n", b"tw"), delay=0.02, then="hang")
    async with HostileServer(reply) as server:
        async with httpx2.AsyncClient(transport=StreamingTransport()) as http:
            timeout = httpx2.Timeout(5.0, read=0.2)
            async with http.stream("POST", server.url + "/x", json={}, timeout=timeout) as r:
                body = response_body(r)
                assert body is not None
                parse = lines(bytearray())
                assert await body.read_into(parse) == [b"one"]
                with pytest.raises(httpx2.ReadTimeout, match=r"no data from the server for 0\.2 s"):
                    await body.read_into(parse)


async def test_only_streaming_transport_responses_have_a_response_body() -> None:
    async with ScriptedModelServer(Script(items=ITEMS)) as server:
        async with httpx2.AsyncClient() as http:  # httpx's own transport
            response = await http.post(server.openai_base_url + "/chat/completions", json={})
            assert response_body(response) is None


# -- the caller's context ----------------------------------------------------------------------

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("WHO", default="nobody")


class Seen(BaseModel):
    """An item whose validator notes the context variable it sees."""

    name: str
    age: int
    seen_by: str = ""

    @pydantic.model_validator(mode="after")
    def _note(self) -> Seen:
        self.seen_by = WHO.get()
        return self


async def test_validators_see_the_callers_context_variables() -> None:
    """Items are validated where the bytes arrive (the socket's callback on asyncio), which
    runs in the context of the task that opened the connection; validators must still see
    the context of the task that reads the stream, over a reused connection too."""
    async with ScriptedModelServer(Script(items=ITEMS, tokens_per_second=400)) as server:
        async with multitask.Client("openai:m", base_url=server.openai_base_url, api_key=KEY) as c:
            seen: dict[str, list[str]] = {}

            async def reader(name: str) -> None:
                WHO.set(name)
                seen[name] = [item.seen_by async for item in c.extract_stream(Seen, name)]

            for name in ("first", "second", "third"):
                async with anyio.create_task_group() as tg:  # a task of its own each
                    tg.start_soon(reader, name)
        assert [r.connection for r in server.requests] == [1, 1, 1]  # one reused connection
    assert seen == {name: [name, name] for name in ("first", "second", "third")}
