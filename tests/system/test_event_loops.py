"""multitask on the event loops its users run, from outside the test process: asyncio in debug
mode (every stream shape, no warning of any kind), and the web helpers served by a real
`uvicorn --loop uvloop` process, read over HTTP. (Every other async test runs on asyncio,
uvloop and trio through the `anyio_backend` fixture.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]

DEBUG_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, logging, sys, warnings
    import multitask
    from multitask.testing import Script, ScriptedModelServer
    from pydantic import BaseModel

    class User(BaseModel):
        name: str
        age: int

    USERS = [{"name": f"u{i}", "age": i} for i in range(8)]

    async def main():
        loop = asyncio.get_running_loop()
        assert loop.get_debug()
        loop.slow_callback_duration = 1.0  # a loaded CI machine is slow; a blocked loop is not
        def script(request):
            text = request.body["messages"][-1]["content"]
            if text == "status":
                return Script(status=500)
            if text == "drop":
                return Script(items=USERS, drop_after=3)
            if text == "truncate":
                return Script(items=USERS, truncate_after=60)
            return Script(items=USERS, chunk_size=5)
        async with ScriptedModelServer(script) as server:
            for provider, base in (("openai", server.openai_base_url),
                                   ("anthropic", server.anthropic_base_url)):
                async with multitask.Client(f"{provider}:m", base_url=base, api_key="k",
                                            max_retries=1) as client:
                    assert len(await client.extract(User, "all")) == 8
                    async with client.extract_stream(User, "all") as stream:  # left early
                        async for _ in stream:
                            break
                    stream = client.extract_stream(User, "all")  # left early, no async with
                    async for _ in stream:
                        break
                    del stream
                    gc.collect()
                    for text in ("status", "drop", "truncate"):
                        try:
                            await client.extract(User, text)
                        except multitask.MultitaskError:
                            pass
                        else:
                            raise AssertionError(text)
                    async with client.extract_events(User, "all") as events:
                        async for _ in events:
                            pass
                    docs = [f"doc {i}" for i in range(20)]
                    async with client.extract_many(User, docs, max_concurrency=5) as results:
                        done = [r async for r in results if r.done]
                    assert len(done) == 20
                    await asyncio.gather(*(client.extract(User, "all") for _ in range(30)))
        await asyncio.sleep(0.05)
        gc.collect()
        print("ok")

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(), debug=True)
    gc.collect()
    """
)


def test_asyncio_debug_mode_warns_of_nothing() -> None:
    """Under `asyncio.run(..., debug=True)` with Python's development mode and every warning
    an error: whole streams, streams left early (with and without `async with`), failures,
    events, a fan-out and concurrent streams, on OpenAI and Anthropic. asyncio's debug mode
    reports unclosed transports, never-retrieved exceptions, coroutines never awaited and
    callbacks that block the loop; any of these, or a ResourceWarning, fails the test."""
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "PYTHONDEVMODE": "1"}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-X", "tracemalloc=5", "-c", DEBUG_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == "ok"
    assert done.stderr == "", done.stderr[-4000:]


# -- a real uvicorn on uvloop ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def uvloop_app() -> Iterator[str]:
    """examples/web_demo's app, served by `python -m uvicorn --loop uvloop` in its own process
    (its scripted model in the app's lifespan, on the same uvloop)."""
    pytest.importorskip("uvloop", reason="uvloop is not installed: pip install -e '.[dev]'")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed: pip install -e '.[dev]'")
    pytest.importorskip("fastapi", reason="fastapi is not installed: pip install -e '.[dev]'")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app:create_app",
        "--app-dir",
        str(ROOT / "examples" / "web_demo"),
        "--loop",
        "uvloop",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                _, err = server.communicate()
                pytest.fail(f"uvicorn --loop uvloop did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


#: The demo's offline model reads the names in the text it is sent.
PEOPLE_TEXT = "Ada Lovelace, 36. Alan Turing, 41. Grace Hopper, 85. Edsger Dijkstra, 72."


def test_uvicorn_on_uvloop_streams_the_web_demo(uvloop_app: str) -> None:
    """The FastAPI demo's SSE endpoint under `uvicorn --loop uvloop`: every person, each
    validated, the first well before the end, then `done`; no `failed` event."""
    arrivals: list[tuple[float, str, dict[str, object]]] = []
    with (
        httpx2.Client(base_url=uvloop_app, timeout=30) as http,
        http.stream("POST", "/api/extract", json={"text": PEOPLE_TEXT}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                arrivals.append((time.monotonic(), event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for _, kind, _ in arrivals]
    assert "failed" not in kinds, arrivals[-1]
    assert kinds[-1] == "done"
    items = [data for _, kind, data in arrivals if kind == "item"]
    names = [item["item"]["name"] for item in items]  # type: ignore[index]
    assert names == ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"]
    first = next(t for t, kind, _ in arrivals if kind == "item")
    assert arrivals[-1][0] - first > 0.5  # the first person came well before the end
