"""multitask on the HTTP stack its users have: httpx2 clients (their own, or an `AsyncOpenAI`'s),
httpx2 transports (ours inside theirs, theirs inside ours), proxies from the environment, and
a caller's transport that hands over whole bodies. Nothing of httpx2's escapes as its own
exception: every failure is one of multitask's.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest
from pydantic import BaseModel

import multitask
from multitask.lowlevel import StreamingTransport
from multitask.testing import Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

KEY = "sk-http-stack-test"
USERS = [{"name": "Jason", "age": 10}, {"name": "John", "age": 30}]


class User(BaseModel):
    name: str
    age: int


EXPECTED = [User(**u) for u in USERS]
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def items_of(client: multitask.Client, **options: Any) -> list[User]:
    return [user async for user in client.extract_stream(User, "two users", **options)]


# -- a caller's httpx2 client ------------------------------------------------------------------


async def test_an_httpx2_client_of_the_callers_streams_with_its_own_timeouts() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(5.0)) as http:
            client = multitask.Client(
                "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=http
            )
            async with client:
                assert await items_of(client) == EXPECTED
                # a float timeout per call, over the caller's client, works too
                assert await items_of(client, timeout=7.5) == EXPECTED
            assert not http.is_closed  # the caller's own: left open


async def test_one_pool_shared_with_the_openai_sdk() -> None:
    openai = pytest.importorskip("openai")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with httpx2.AsyncClient() as http:
            sdk = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=KEY, http_client=http)
            client = multitask.Client(
                "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=http
            )
            assert await items_of(client) == EXPECTED
            answer = await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "two users"}]
            )
            assert answer.choices
            assert await items_of(client) == EXPECTED
            # One pool: the SDK's request and multitask's took turns on one kept-alive connection.
            pool = http._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == 1
        assert len(server.requests) == 3


async def test_the_openai_sdks_own_client_can_be_passed() -> None:
    openai = pytest.importorskip("openai")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        sdk = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=KEY)
        async with sdk:
            client = multitask.Client(
                "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=sdk._client
            )
            assert await items_of(client) == EXPECTED


async def test_a_legacy_httpx_client_is_refused_in_one_line() -> None:
    class AsyncClient:  # what `httpx.AsyncClient` is to multitask: not httpx2's
        pass

    AsyncClient.__module__ = "httpx._client"
    with pytest.raises(TypeError, match=r"httpx2\.AsyncClient, not the legacy httpx\.AsyncClient"):
        multitask.Client("openai:m", api_key=KEY, http_client=AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be an httpx2\.AsyncClient, not builtins\.object"):
        multitask.Client("openai:m", api_key=KEY, http_client=object())  # type: ignore[arg-type]


async def test_the_real_legacy_httpx_client_is_refused() -> None:
    httpx = pytest.importorskip("httpx", reason="the legacy httpx package is not installed")
    async with httpx.AsyncClient() as http:
        with pytest.raises(TypeError, match=r"legacy httpx\.AsyncClient"):
            multitask.Client("openai:m", api_key=KEY, http_client=http)


async def test_streaming_transport_inside_an_httpx2_client() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        transport = StreamingTransport()
        async with httpx2.AsyncClient(transport=transport) as http:
            client = multitask.Client(
                "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=http
            )
            assert await items_of(client) == EXPECTED
            assert transport.connections == 1  # it carried the request, and kept it alive
            # and as a plain httpx2 transport, for any request
            response = await http.post(
                server.openai_base_url + "/chat/completions",
                json={"model": "m", "messages": [], "stream": True},
            )
            assert response.status_code == 200
            assert b"data: [DONE]" in response.content


# -- errors: multitask's, whatever httpx2 raises -----------------------------------------------


def mock_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> multitask.Client:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return multitask.Client(
        "openai:m", base_url="http://127.0.0.1:9/v1", api_key=KEY, http_client=http
    )


async def recorded_body(items: list[dict[str, Any]]) -> bytes:
    async with ScriptedModelServer(Script(items=items)) as server:
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                server.openai_base_url + "/chat/completions",
                json={"model": "m", "messages": [], "stream": True},
            )
            return response.content


async def test_a_transport_that_returns_a_whole_body() -> None:
    body = await recorded_body(USERS)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = mock_client(handler)
    assert await items_of(client) == EXPECTED


async def test_a_transport_that_returns_a_whole_gzip_body() -> None:
    body = await recorded_body(USERS)

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
        return httpx2.Response(200, headers=headers, content=gzip.compress(body))

    assert await items_of(mock_client(handler)) == EXPECTED


async def test_a_whole_error_body_from_a_transport() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(401, json={"error": {"message": "no such key", "type": "auth"}})

    with pytest.raises(multitask.APIStatusError, match="no such key") as caught:
        await items_of(mock_client(handler))
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx2.ConnectError("refused"), multitask.APIConnectionError),
        (httpx2.ConnectTimeout("slow"), multitask.APITimeoutError),
        (httpx2.ReadTimeout("slow"), multitask.APITimeoutError),
        (httpx2.PoolTimeout("full"), multitask.APITimeoutError),
        (httpx2.ReadError("reset"), multitask.APIConnectionError),
        (httpx2.WriteError("reset"), multitask.APIConnectionError),
        (httpx2.RemoteProtocolError("bad framing"), multitask.APIConnectionError),
        (httpx2.LocalProtocolError("bad header"), multitask.APIConnectionError),
        (httpx2.ProxyError("proxy said no"), multitask.APIConnectionError),
        (httpx2.UnsupportedProtocol("ftp"), multitask.MultitaskError),
        (httpx2.DecodingError("bad gzip"), multitask.StreamDecodeError),
        (httpx2.TooManyRedirects("loop"), multitask.MultitaskError),
        (httpx2.StreamConsumed(), multitask.MultitaskError),
        (httpx2.StreamClosed(), multitask.MultitaskError),
        (httpx2.InvalidURL("bad"), multitask.MultitaskError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
async def test_no_httpx2_exception_escapes(raised: Exception, expected: type[Exception]) -> None:
    calls = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        raise raised

    client = mock_client(handler)
    with pytest.raises(multitask.MultitaskError) as caught:
        await items_of(client, max_retries=2, deadline=30)
    assert type(caught.value) is expected or isinstance(caught.value, expected)
    assert not isinstance(caught.value, httpx2.HTTPError | httpx2.StreamError)
    retried = expected in (multitask.APIConnectionError, multitask.APITimeoutError)
    assert calls == (3 if retried else 1)  # connection failures are retried; the rest are not


async def test_an_unreachable_server_through_an_httpx2_client_is_retried() -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with httpx2.AsyncClient() as http:
        client = multitask.Client(
            "openai:m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, http_client=http
        )
        stream = client.extract_stream(User, "t", max_retries=1)
        with pytest.raises(multitask.APIConnectionError, match="could not connect"):
            async for _ in stream:
                pass
        assert stream.info.attempts == 2


# -- proxies from the environment --------------------------------------------------------------


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1: takes absolute-form requests, relays them to
    their origin and the answer back byte for byte, and counts what it relayed."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.url = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ForwardProxy]:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            self.url = f"http://127.0.0.1:{port}"
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, self._relay)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                try:
                    head += await client.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.split(b" ")
            url = httpx2.URL(target.decode())
            self.targets.append(str(url))
            origin_form = url.raw_path
            upstream = await anyio.connect_tcp(url.host, url.port or 80)
            async with upstream:
                await upstream.send(b" ".join((method, origin_form, version)) + b"\r\n" + rest)

                async def pipe(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
                    try:
                        async for data in src:
                            await dst.send(data)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    tg.cancel_scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipe, client, upstream)
                    tg.start_soon(pipe, upstream, client)


@pytest.mark.parametrize(
    ("settings", "proxied"),
    [
        ({}, False),
        ({"NO_PROXY": "example.com,localhost"}, False),
        ({"no_proxy": "*"}, False),
        ({"HTTP_PROXY": "{proxy}"}, True),
        ({"http_proxy": "{proxy}"}, True),
        ({"ALL_PROXY": "{proxy}"}, True),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"}, False),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "*"}, False),
        ({"HTTPS_PROXY": "{proxy}"}, False),  # a proxy for https only: the request is http
    ],
    ids=lambda s: (
        ",".join(f"{k}={v}" for k, v in s.items()) or "none" if isinstance(s, dict) else str(s)
    ),
)
async def test_the_own_transport_unless_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], proxied: bool
) -> None:
    async with (
        ScriptedModelServer(Script(items=USERS)) as server,
        ForwardProxy().running() as proxy,
    ):
        for name, value in settings.items():
            monkeypatch.setenv(name, value.format(proxy=proxy.url))
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            assert await items_of(client) == EXPECTED
            own = client._client()._transport
            assert isinstance(own, StreamingTransport)
            if proxied:
                assert proxy.targets == [server.openai_base_url + "/chat/completions"]
                assert own.connections == 0
            else:
                assert proxy.targets == []
                assert own.connections == 1
