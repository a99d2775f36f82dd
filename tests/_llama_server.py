"""llama.cpp's real `llama-server` on 127.0.0.1, running the tiny model of `_llama_model`.

`running_llama_server()` finds the binary (`MULTITASK_LLAMA_SERVER`, else the cache that
`.ci/build-llama-server` builds into), writes the model, starts the server with everything
that could reach the network turned off, waits for `/health`, and stops it on exit. Without
the binary it skips the tests, saying how to build it; with `MULTITASK_REQUIRE_LLAMA=1` (set by
CI) it fails them instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

VERSION = "0.3.36"  # llama-cpp-python's sdist, whose vendored llama.cpp .ci builds
BUILD = "bash .ci/build-llama-server"
#: Server slots: requests beyond them wait in llama-server's queue.
SLOTS = 4
#: Context per slot (llama-server splits -c between the slots).
SLOT_CONTEXT = 4096
_METRIC = re.compile(r"^llamacpp:(\w+) ([-+0-9.eE]+)$", re.MULTILINE)


def binary_path() -> Path:
    """Where the binary is looked for: `MULTITASK_LLAMA_SERVER`, else .ci's build cache."""
    named = os.environ.get("MULTITASK_LLAMA_SERVER")
    if named:
        return Path(named)
    cache = os.environ.get("MULTITASK_LLAMA_CACHE")
    if cache:
        return Path(cache) / "llama-server"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "multitask" / f"llama-server-{VERSION}" / "llama-server"


def _unavailable(message: str) -> None:
    """Skip (or, under MULTITASK_REQUIRE_LLAMA=1, fail) with `message`."""
    if os.environ.get("MULTITASK_REQUIRE_LLAMA") == "1":
        pytest.fail(f"LLAMA-SERVER REQUIRED (MULTITASK_REQUIRE_LLAMA=1): {message}", pytrace=False)
    pytest.skip(f"LLAMA-SERVER TESTS SKIPPED: {message}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    """A running llama-server: its OpenAI-compatible base URL, and what it reports."""

    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:<port>
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """`/metrics`, as {name without the `llamacpp:` prefix: value}."""
        text = httpx2.get(self.url + "/metrics", timeout=10).text
        return {name: float(value) for name, value in _METRIC.findall(text)}

    def slots(self) -> list[dict[str, Any]]:
        slots: list[dict[str, Any]] = httpx2.get(self.url + "/slots", timeout=10).json()
        return slots

    def wait_idle(self, timeout: float = 10.0) -> float:
        """Wait until no slot is processing; return how long that took."""
        start = time.monotonic()
        while any(slot["is_processing"] for slot in self.slots()):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"llama-server still busy after {timeout} s: {self.slots()}")
            time.sleep(0.01)
        return time.monotonic() - start

    def wait_log(self, start: int, text: str, count: int = 1, timeout: float = 10.0) -> str:
        """The log written since offset `start`, once it has `count` lines containing `text`
        (llama-server logs from a thread of its own, a little after the fact)."""
        deadline = time.monotonic() + timeout
        while True:
            new = self.log_text()[start:]
            if new.count(text) >= count or time.monotonic() > deadline:
                return new
            time.sleep(0.01)


def _arguments(binary: Path, model: Path, port: int) -> list[str]:
    return [
        str(binary),
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--threads", "1",  # one thread: deterministic, and light on a 2-core machine
        "--threads-batch", "1",
        "--parallel", str(SLOTS),
        "--ctx-size", str(SLOTS * SLOT_CONTEXT),
        "--jinja",  # the model's chat template: tools, and the tool-call grammar and parser
        "--metrics",
        "--slots",
        # Nothing may reach the network: no downloads, no web UI, no multimodal projector,
        # no MCP proxy, no built-in tools.
        "--offline",
        "--no-webui",
        "--no-mmproj",
        "--no-ui-mcp-proxy",
        "--log-colors", "off",
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    """This environment without llama.cpp's own settings (LLAMA_ARG_HF_REPO, HF_TOKEN...)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLAMA_ARG_", "HF_", "LLAMA_CACHE"))
    }


@contextlib.contextmanager
def running_llama_server(directory: Path) -> Iterator[LlamaServer]:
    """Write the model into `directory`, run llama-server on it, and stop it on exit."""
    binary = binary_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        _unavailable(
            f"no llama-server at {binary}. Build it with `{BUILD}` (cmake, ninja and g++; "
            "15-25 minutes on 2 cores, once per machine), or name one with "
            "MULTITASK_LLAMA_SERVER=/path/to/llama-server"
        )
    if importlib.util.find_spec("gguf") is None:
        _unavailable("the gguf package is missing (pip install -e '.[dev]')")
    from _llama_model import write_tiny_llama

    model = write_tiny_llama(directory / "tiny-llama.gguf")
    log = directory / "llama-server.log"
    for attempt in range(3):
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                _arguments(binary, model, port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(),
                cwd=directory,
            )
        server = LlamaServer(process, f"http://127.0.0.1:{port}", log)
        try:
            if _wait_healthy(server):
                break
        except BaseException:
            _stop(process)
            raise
        _stop(process)
        if attempt == 2 or "bind" not in server.log_text().lower():
            pytest.fail(f"llama-server did not start:\n{server.log_text()[-4000:]}")
    try:
        yield server
    finally:
        _stop(process)


def _wait_healthy(server: LlamaServer, timeout: float = 60.0) -> bool:
    """True once `/health` answers 200; False if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(server.url + "/health", timeout=2).status_code == 200:
                return True
        time.sleep(0.05)
    raise AssertionError(f"llama-server not healthy after {timeout} s:\n{server.log_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
