"""`multitask extract --output`: a torn or damaged output file is repaired, so a rerun has every
item exactly once; the exit status says whether every document succeeded; the input streams;
Ctrl-C exits 130 and leaves a file the rerun completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from multitask._cli import main
from multitask._extract_cli import prepare_output
from multitask.testing import RecordedRequest, Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel

class User(BaseModel):
    name: str
    age: int
"""

#: Each document's text and the users the scripted model finds in it (names outside ASCII, so
#: that a cut can fall inside a character).
DOCUMENTS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "a.txt": ("Ada and Zoë.", [{"name": "Ada", "age": 36}, {"name": "Zoë", "age": 7}]),
    "b.txt": ("Jürgen and Grace.", [{"name": "Jürgen", "age": 52}, {"name": "Grace", "age": 85}]),
    "c.txt": ("Émile.", [{"name": "Émile", "age": 41}]),
    "d.txt": ("Nobody here.", []),
}


def script_for(text: str, control: dict[str, Any]) -> Script:
    """The answer to the document `text` (the request's last message); a status 400 for one
    holding a word of `fail`; one user named as the text for a document not in DOCUMENTS."""
    if any(word in text for word in control["fail"]):
        return Script(status=400)
    for body, users in DOCUMENTS.values():
        if body in text:
            return Script(items=users, chunk_size=3, tokens_per_second=control["pace"])
    return Script(items=[{"name": text, "age": 1}], tokens_per_second=control["pace"])


@pytest.fixture
def served() -> Iterator[tuple[ScriptedModelServer, dict[str, Any]]]:
    """A scripted server in a worker thread; `control` sets failures and pace as it runs."""
    control: dict[str, Any] = {"fail": set(), "pace": None}

    def script(request: RecordedRequest) -> Script:
        return script_for(str(request.body["messages"][-1]["content"]), control)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        yield server, control


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """schema.py and docs/ in a temporary folder, the current directory (short keys)."""
    (tmp_path / "schema.py").write_text(SCHEMA)
    (tmp_path / "docs").mkdir()
    for name, (text, _) in DOCUMENTS.items():
        (tmp_path / "docs" / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return tmp_path


def command(server: ScriptedModelServer, *extra: str) -> list[str]:
    return [
        "extract",
        "--schema",
        "schema.py:User",
        "--model",
        "openai:test",
        "--base-url",
        server.openai_base_url,
        "--no-progress",
        *extra,
    ]


def assert_complete(out: Path, names: list[str] | None = None) -> None:
    """Every document of `names` (default: all) done once in `out`, each item exactly once."""
    data = out.read_bytes()
    assert data.endswith(b"\n")
    lines = [json.loads(line) for line in data.splitlines()]
    names = names if names is not None else list(DOCUMENTS)
    items: dict[str, list[Any]] = {}
    for line in lines:
        if "item" in line:
            items.setdefault(line["key"], []).append(line["item"])
    assert items == {f"docs/{n}": DOCUMENTS[n][1] for n in names if DOCUMENTS[n][1]}
    done = sorted(line["key"] for line in lines if line.get("done"))
    assert done == sorted(f"docs/{n}" for n in names)
    assert not [line for line in lines if "error" in line]


def test_a_line_torn_at_any_byte_is_repaired_and_the_rerun_loses_nothing(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    out = corpus / "out.jsonl"
    run = command(server, "docs", "--output", str(out), "--concurrency", "1")
    assert main(run) == 0
    whole = out.read_bytes().splitlines(keepends=True)
    keys = [json.loads(line)["key"] for line in whole]
    # c.txt's item line and its done line, each cut after every byte before its newline:
    # a.txt and b.txt are done before it, d.txt comes after (one document at a time).
    torn = [i for i, key in enumerate(keys) if key == "docs/c.txt"]
    assert len(torn) == 2
    for i in torn:
        for cut in range(len(whole[i])):
            out.write_bytes(b"".join(whole[:i]) + whole[i][:cut])
            before = len(server.requests)
            assert main(run) == 0, (i, cut)
            assert_complete(out)
            assert len(server.requests) - before == 2, (i, cut)  # c and d; not a nor b


def test_a_whole_last_line_without_its_newline_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = json.dumps({"key": "a", "done": True, "items": 0})
    out.write_text(done + "\n" + json.dumps({"key": "b", "done": True, "items": 0}))
    assert prepare_output(out) == {"a"}
    assert out.read_text() == done + "\n"


def test_a_document_with_a_damaged_line_counts_as_not_finished(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    out = corpus / "out.jsonl"
    run = command(server, "docs", "--output", str(out), "--concurrency", "1")
    assert main(run) == 0
    whole = out.read_bytes().splitlines(keepends=True)
    keys = [json.loads(line)["key"] for line in whole]
    a_item, b_item = keys.index("docs/a.txt"), keys.index("docs/b.txt")
    # a.txt's first item lost in the middle of the file, its done line still there; and a torn
    # piece glued onto b.txt's first item (what an older version appended after a crash).
    damaged = list(whole)
    damaged[a_item] = b"\x00garbage\n"
    damaged[b_item] = b'{"key": "docs/d.t' + whole[b_item]
    out.write_bytes(b"".join(damaged))
    os.chmod(out, 0o640)
    assert prepare_output(out) == {"docs/c.txt", "docs/d.txt"}
    assert out.stat().st_mode & 0o777 == 0o640  # the repaired file keeps its permissions
    before = len(server.requests)
    assert main(run) == 0
    assert len(server.requests) - before == 2
    assert_complete(out)


def test_exit_status_1_when_a_document_failed_then_0_once_the_rerun_succeeds(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, control = served
    control["fail"] = {"Jürgen"}
    args = [sys.executable, "-m", "multitask", *command(server, "docs", "-o", "out.jsonl")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stderr
    assert "3 document(s) done, 1 failed" in first.stderr
    control["fail"] = set()
    second = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "resuming: 3 document(s) already done" in second.stderr
    assert_complete(corpus / "out.jsonl")


def wait_for(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def done_keys(out: Path) -> list[str]:
    if not out.exists():
        return []
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(x)["key"] for x in lines if x.endswith("\n") and '"done"' in x]


def test_lines_from_a_pipe_start_before_the_writer_has_finished(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    out = corpus / "out.jsonl"
    args = [sys.executable, "-m", "multitask", *command(server, "--jsonl", "-o", str(out))]
    process = subprocess.Popen(
        args, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    assert process.stdin is not None
    try:
        for number, (text, _) in enumerate(DOCUMENTS.values(), 1):
            process.stdin.write(json.dumps({"text": text}) + "\n")
            process.stdin.flush()
            # The document is extracted while the pipe is still open: the input is not read
            # to its end before the work starts.
            wait_for(lambda n=number: f"stdin:{n}" in done_keys(out), f"stdin:{number}")
        _, stderr = process.communicate(timeout=30)  # closes stdin: the end of the input
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert done_keys(out) == ["stdin:1", "stdin:2", "stdin:3", "stdin:4"]


def test_stdin_that_cannot_be_waited_on_is_read_all_the_same(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    args = [sys.executable, "-m", "multitask", *command(server)]
    with open(os.devnull, "rb") as null:  # epoll refuses /dev/null
        done = subprocess.run(args, stdin=null, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "0 document(s) done" in done.stderr


def test_ctrl_c_exits_130_and_the_rerun_completes_without_loss(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, control = served
    docs = corpus / "docs"
    for i in range(8):
        (docs / f"more{i}.txt").write_text(f"More {i}.")
    control["pace"] = 30  # about half a second a document
    out = corpus / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "multitask",
        *command(server, "docs", "-o", str(out), "--concurrency", "3"),
    ]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: done_keys(out), "a first document done")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    first = done_keys(out)
    assert 0 < len(first) < 12
    assert out.read_bytes().endswith(b"\n")  # every line whole

    control["pace"] = None
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    final = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    items: dict[str, list[Any]] = {}
    for line in final:
        if "item" in line:
            items.setdefault(line["key"], []).append(line["item"])
    expected = {f"docs/{n}": users for n, (_, users) in DOCUMENTS.items() if users}
    expected |= {f"docs/more{i}.txt": [{"name": f"More {i}.", "age": 1}] for i in range(8)}
    assert items == expected
    done = [line["key"] for line in final if line.get("done")]
    assert len(done) == len(set(done)) == 12


def test_ctrl_c_while_waiting_on_an_open_pipe_exits_130_at_once(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    out = corpus / "out.jsonl"
    args = [sys.executable, "-m", "multitask", *command(server, "-o", str(out))]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out.exists, "the output file")  # opened just before the event loop starts
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)  # stdin still open: no blocked read
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
