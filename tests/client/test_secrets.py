"""API keys stay secret, for every provider: never in an exception (with its causes and
contexts), a repr, a log line (httpx2 and httpcore2 at DEBUG), the progress output or the CLI's
output file; never written to a file; never sent to a host a redirect names; and TLS
verification is on by default.

Each provider gets its own key, read from its environment variable or passed explicitly,
built around a random core that is searched for (so a key cut short would still be caught).
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import pytest
from pydantic import BaseModel

import multitask
import multitask.lowlevel
import multitask.providers
from _exception_text import exception_text
from multitask._cli import main
from multitask.testing import RecordedRequest, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio


class User(BaseModel):
    name: str
    age: int


USERS: list[dict[str, Any]] = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]


@dataclass(frozen=True)
class Vendor:
    """How one provider takes its key: the variable, the header, the header's value."""

    name: str
    env: str
    header: str
    bearer: bool
    v1: bool  # whether base_url ends in /v1 (OpenAI's convention)

    def base_url(self, server: ScriptedModelServer) -> str:
        return server.url + "/v1" if self.v1 else server.url

    def header_value(self, key: str) -> str:
        return f"Bearer {key}" if self.bearer else key


VENDORS = [
    Vendor("openai", "OPENAI_API_KEY", "authorization", True, True),
    Vendor("anthropic", "ANTHROPIC_API_KEY", "x-api-key", False, False),
    Vendor("openai-responses", "OPENAI_API_KEY", "authorization", True, True),
    Vendor("gemini", "GEMINI_API_KEY", "x-goog-api-key", False, False),
    Vendor("ollama", "OLLAMA_API_KEY", "authorization", True, False),
    Vendor("azure", "AZURE_OPENAI_API_KEY", "api-key", False, False),
]
KEY_VARIABLES = sorted(
    {v.env for v in VENDORS} | {"GOOGLE_API_KEY", "AZURE_OPENAI_AD_TOKEN", "OLLAMA_HOST"}
)


@dataclass(frozen=True)
class Key:
    """A key, and the random core that must never show up anywhere."""

    value: str
    core: str

    @classmethod
    def make(cls, vendor: Vendor) -> Key:
        core = secrets.token_hex(12)
        return cls(f"sk-{vendor.name}-{core}-end", core)

    def assert_absent(self, text: str, where: str) -> None:
        assert self.core not in text, f"the API key leaked into {where}: {text[:2000]}"


# -- files written -----------------------------------------------------------------------------


class FileWrites:
    """Records the paths opened for writing while active (an audit hook, installed once)."""

    active: ClassVar[FileWrites | None] = None
    installed: ClassVar[bool] = False

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __enter__(self) -> FileWrites:
        if not FileWrites.installed:
            sys.addaudithook(_audit)
            FileWrites.installed = True
        FileWrites.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        FileWrites.active = None


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    recorder = FileWrites.active
    if recorder is None or event != "open" or len(args) < 3:
        return
    path, mode, flags = args[:3]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # an fd: its opening was recorded already
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    text = os.fsdecode(path)
    if writing and "__pycache__" not in text:  # Python's own bytecode cache
        recorder.paths.append(text)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or endpoint from the developer's environment."""
    for name in [
        *KEY_VARIABLES,
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "GOOGLE_GEMINI_BASE_URL",
        "MULTITASK_MODEL",
        "OPENAI_API_VERSION",
    ]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, httpx's and httpcore's included."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx2", "httpcore2", "multitask", "anyio", "trio", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def make_client(
    vendor: Vendor, server: ScriptedModelServer, key: Key, *, from_env: bool, **options: Any
) -> multitask.Client:
    if from_env:
        os.environ[vendor.env] = key.value
    return multitask.Client(
        f"{vendor.name}:model-x",
        base_url=vendor.base_url(server),
        api_key=None if from_env else key.value,
        max_retries=0,
        **options,
    )


async def outcome(stream: multitask.ItemStream[User]) -> tuple[list[User], BaseException | None]:
    items: list[User] = []
    try:
        async with stream:
            async for item in stream:
                items.append(item)
    except multitask.MultitaskError as exc:
        return items, exc
    return items, None


def check_request(vendor: Vendor, key: Key, request: RecordedRequest) -> None:
    """The key went in its header, and nowhere else: not the URL, not the body."""
    assert request.headers.get(vendor.header) == vendor.header_value(key.value)
    others = {k: v for k, v in request.headers.items() if k != vendor.header}
    key.assert_absent(repr(others), "another request header")
    key.assert_absent(request.path + repr(request.query), "the URL")
    key.assert_absent(request.raw_body.decode("utf-8", "replace"), "the request body")


# -- the client, every provider, every way an extraction ends ----------------------------------

SCENARIOS: dict[str, Callable[[], Script]] = {
    "success": lambda: Script(items=USERS),
    "401": lambda: Script(status=401),
    "429": lambda: Script(status=429, retry_after=0.01),
    "500": lambda: Script(status=500),
    "dropped": lambda: Script(items=USERS, drop_after=30),
    "stalled": lambda: Script(items=USERS, stall_after=30),
    "truncated": lambda: Script(items=USERS, truncate_after=30),
}


@pytest.mark.parametrize("from_env", [True, False], ids=["env", "explicit"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_key_never_leaks_from_the_client(
    vendor: Vendor,
    scenario: str,
    from_env: bool,
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = Key.make(vendor)
    monkeypatch.setenv(vendor.env, "placeholder")  # restored afterwards
    with FileWrites() as writes:
        async with ScriptedModelServer(SCENARIOS[scenario]()) as server:
            client = make_client(vendor, server, key, from_env=from_env, timeout=0.3)
            async with client:
                key.assert_absent(repr(client), "repr(Client)")
                key.assert_absent(repr(client.provider), "repr(Provider)")
                stream: multitask.ItemStream[User] = client.extract_stream(User, "text")
                key.assert_absent(repr(stream) + repr(stream.info), "repr(ItemStream)")
                items, error = await outcome(stream)
                key.assert_absent(repr(stream) + repr(stream.info), "repr(ItemStream)")
            check_request(vendor, key, server.requests[0])
    if scenario == "success":
        assert error is None
        assert items == [User(**u) for u in USERS]
    else:
        assert isinstance(error, multitask.MultitaskError), scenario
        key.assert_absent(exception_text(error), f"the {type(error).__name__}")
    loggers = {r.name.split(".")[0] for r in logs.records}
    assert {"httpx2", "multitask"} <= loggers, loggers  # the logs were on (the transport's too)
    key.assert_absent(logs.text, "the logs")
    key.assert_absent(repr([r.__dict__ for r in logs.records]), "the log records")
    assert writes.paths == []


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_key_never_leaks_from_requests_or_connection_errors(
    vendor: Vendor, logs: pytest.LogCaptureFixture
) -> None:
    """The HTTPRequest's repr, and the error of a server that is not there."""
    key = Key.make(vendor)
    async with ScriptedModelServer() as server:
        client = make_client(vendor, server, key, from_env=False)
        spec = multitask.providers.RequestSpec(
            "m", multitask.MultiTask(User), client.provider.default_mode, "s", []
        )
        request = client.provider.request(spec)
        assert request.headers[vendor.header] == vendor.header_value(key.value)
        key.assert_absent(repr(request) + str(request), "repr(HTTPRequest)")
    async with client:  # the server is gone: its port refuses connections
        _, error = await outcome(client.extract_stream(User, "t"))
    assert isinstance(error, multitask.APIConnectionError)
    key.assert_absent(exception_text(error), "the connection error")
    key.assert_absent(logs.text, "the logs")


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_key_never_leaks_from_extract_many_results(
    vendor: Vendor, logs: pytest.LogCaptureFixture
) -> None:
    key = Key.make(vendor)
    scripts = [Script(items=USERS), Script(status=401), Script(items=USERS, drop_after=20)]
    async with ScriptedModelServer(scripts) as server:
        async with make_client(vendor, server, key, from_env=False) as client:
            progress: list[str] = []
            many: AbstractAsyncContextManager[multitask.Results[User]] = client.extract_many(
                User,
                ["a", "b", "c"],
                max_concurrency=1,
                on_progress=lambda p: progress.append(repr(p)),
            )
            async with many as results:
                seen = [r async for r in results]
    errors = [r.error for r in seen if r.error is not None]
    assert len(errors) == 2
    key.assert_absent(repr(seen), "repr(Result)")
    key.assert_absent("\n".join(progress), "the progress")
    for error in errors:
        key.assert_absent(exception_text(error), "a Result's error")
    key.assert_absent(logs.text, "the logs")


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", "text/event-stream"])
@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_a_redirect_is_not_followed_with_the_key(
    vendor: Vendor, content_type: str | None, logs: pytest.LogCaptureFixture
) -> None:
    """A 307 to another host, with a JSON body, an empty content type or an event-stream one:
    an APIStatusError that names the redirect; the other host sees nothing."""
    key = Key.make(vendor)
    async with ScriptedModelServer(host="127.0.0.2") as elsewhere:
        target = elsewhere.url + "/v1/chat/completions"
        headers = {"location": target}
        if content_type is not None:
            headers["content-type"] = content_type
        async with ScriptedModelServer(Script(status=307, headers=headers)) as server:
            async with make_client(vendor, server, key, from_env=False) as client:
                _, error = await outcome(client.extract_stream(User, "t"))
        assert elsewhere.requests == []
    assert isinstance(error, multitask.APIStatusError), repr(error)
    assert error.status_code == 307
    assert "redirect" in str(error)
    assert target in str(error)
    key.assert_absent(exception_text(error), "the redirect's error")
    key.assert_absent(logs.text, "the logs")


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
async def test_tls_verification_is_on_by_default(vendor: Vendor) -> None:
    client = multitask.Client(f"{vendor.name}:m", base_url="https://example.invalid", api_key="k")
    async with client:
        http = client._client()
        assert http.follow_redirects is False
        transport = http._transport
        assert isinstance(transport, multitask.lowlevel.StreamingTransport)
        context = transport.ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True


# -- the CLI -----------------------------------------------------------------------------------

SCHEMA = """
from pydantic import BaseModel

class User(BaseModel):
    name: str
    age: int
"""


@pytest.fixture
def portal_server() -> Iterator[ScriptedModelServer]:
    """A scripted server in a thread: documents whose text says "refuse" get a 401."""

    def script(request: RecordedRequest) -> Script:
        if "refuse" in request.raw_body.decode("utf-8", "replace"):
            return Script(status=401)
        return Script(items=USERS, chunk_size=5)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        yield server


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)
def test_key_never_leaks_from_the_cli(
    vendor: Vendor,
    portal_server: ScriptedModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: pytest.LogCaptureFixture,
) -> None:
    """`multitask extract` with the key in the environment, progress on, one document refused:
    the key is in no output, and the output file is the only file written."""
    key = Key.make(vendor)
    monkeypatch.setenv(vendor.env, key.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "schema.py").write_text(SCHEMA)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Ada and Alan.")
    (docs / "b.txt").write_text("please refuse this one")
    output = tmp_path / "out.jsonl"
    argv = [
        "extract",
        "--schema",
        f"{tmp_path / 'schema.py'}:User",
        "--model",
        f"{vendor.name}:model-x",
        "--base-url",
        vendor.base_url(portal_server),
        "--max-retries",
        "0",
        "--output",
        str(output),
        str(docs),
    ]
    with FileWrites() as writes:
        assert main(argv) == 1  # one document failed
    captured = capsys.readouterr()
    text = output.read_text()
    assert '"error_type": "APIStatusError"' in text  # the refused document
    assert '"done": true' in text
    assert "multitask extract: done" in captured.err  # the summary, after the progress
    key.assert_absent(text, "the output file")
    key.assert_absent(captured.out + captured.err, "stdout/stderr")
    key.assert_absent(logs.text, "the logs")
    assert writes.paths == [str(output)]
    for request in portal_server.requests:
        check_request(vendor, key, request)
