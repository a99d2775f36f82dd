"""`multitask extract` on a directory of files: output lines, progress, resume and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
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
from multitask.testing import RecordedRequest, Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel

class User(BaseModel):
    name: str
    age: int
"""


def users_for(text: str) -> list[dict[str, Any]]:
    """The scripted answer for a document: the names written in it."""
    return [{"name": n, "age": len(n)} for n in re.findall(r"\b[A-Z][a-z]+\b", text)]


def document_text(request: RecordedRequest) -> str:
    return str(request.body["messages"][-1]["content"])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "schema.py").write_text(SCHEMA)
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    texts = {
        "a.txt": "Ada and Alan met.",
        "b.txt": "Grace wrote to Edsger and Barbara.",
        "c.txt": "Nobody here.",
        "sub/d.txt": "Linus, Guido and Bjarne.",
    }
    for name, text in texts.items():
        (docs / name).write_text(text)
    return tmp_path


@pytest.fixture
def served() -> Iterator[tuple[ScriptedModelServer, dict[str, Any]]]:
    """A scripted server in a worker thread; `control["fail"]` names documents to refuse."""
    control: dict[str, Any] = {"fail": set(), "pace": None}

    def script(request: RecordedRequest) -> Script:
        text = document_text(request)
        if any(word in text for word in control["fail"]):
            return Script(status=400)
        return Script(items=users_for(text), tokens_per_second=control["pace"], chunk_size=3)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        yield server, control


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def items_by_key(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if "item" in line:
            out.setdefault(line["key"], []).append(line["item"])
    return out


def run(corpus: Path, server: ScriptedModelServer, *extra: str) -> int:
    return main(
        [
            "extract",
            "--schema",
            f"{corpus / 'schema.py'}:User",
            "--model",
            "openai:test",
            "--base-url",
            server.openai_base_url,
            "--no-progress",
            str(corpus / "docs"),
            *extra,
        ]
    )


def expected(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted((corpus / "docs").rglob("*.txt")):
        users = users_for(path.read_text())
        if users:
            out[str(path)] = users
    return out


def test_directory_to_json_lines(
    corpus: Path,
    served: tuple[ScriptedModelServer, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _ = served
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test")
    out = corpus / "out.jsonl"
    assert run(corpus, server, "--output", str(out)) == 0
    lines = read_lines(out)
    assert items_by_key(lines) == expected(corpus)
    done = {line["key"] for line in lines if line.get("done")}
    assert done == {str(p) for p in (corpus / "docs").rglob("*.txt")}
    assert "sk-cli-test" not in out.read_text()
    assert len(server.requests) == 4


def test_resume_skips_finished_and_reruns_failed(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, control = served
    out = corpus / "out.jsonl"
    control["fail"] = {"Grace"}
    assert run(corpus, server, "--output", str(out), "--max-retries", "0") == 1  # one failed
    first = read_lines(out)
    errors = [line for line in first if "error" in line]
    assert [e["key"] for e in errors] == [str(corpus / "docs" / "b.txt")]
    assert errors[0]["error_type"] == "APIStatusError"

    control["fail"] = set()
    before = len(server.requests)
    assert run(corpus, server, "--output", str(out)) == 0
    assert len(server.requests) - before == 1  # only the failed document ran again
    final = read_lines(out)
    assert items_by_key(final) == expected(corpus)
    assert not any("error" in line for line in final)
    keys = [line["key"] for line in final if line.get("done")]
    assert len(keys) == len(set(keys)) == 4


def test_resume_drops_the_lines_of_a_document_cut_off(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, _ = served
    out = corpus / "out.jsonl"
    b = str(corpus / "docs" / "b.txt")
    a = str(corpus / "docs" / "a.txt")
    out.write_text(
        json.dumps({"key": a, "item": {"name": "Ada", "age": 3}})
        + "\n"
        + json.dumps({"key": a, "item": {"name": "Alan", "age": 4}})
        + "\n"
        + json.dumps({"key": a, "done": True, "items": 2})
        + "\n"
        + json.dumps({"key": b, "item": {"name": "Grace", "age": 5}})
        + "\n"
        + '{"key": "'  # a line cut in the middle of a write
    )
    assert run(corpus, server, "--output", str(out)) == 0
    assert len(server.requests) == 3  # a.txt was done
    assert items_by_key(read_lines(out)) == expected(corpus)


def test_jsonl_from_stdin(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]], capsys: Any
) -> None:
    server, _ = served
    stdin = "\n".join(
        json.dumps({"id": f"row{i}", "body": text})
        for i, text in enumerate(["Ada and Alan.", "Grace."])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "multitask",
            "extract",
            "--schema",
            f"{corpus / 'schema.py'}:User",
            "--model",
            "openai:test",
            "--base-url",
            server.openai_base_url,
            "--jsonl",
            "--text-field",
            "body",
            "--key-field",
            "id",
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "k"},
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert items_by_key(lines) == {
        "row0": users_for("Ada and Alan."),
        "row1": users_for("Grace."),
    }
    assert "2 document(s) done" in done.stderr


def test_ctrl_c_stops_cleanly_and_the_rerun_completes(
    corpus: Path, served: tuple[ScriptedModelServer, dict[str, Any]]
) -> None:
    server, control = served
    docs = corpus / "docs"
    for i in range(30):
        (docs / f"many{i:02}.txt").write_text(f"Ann{chr(97 + i % 26)} and Bob{chr(97 + i % 26)}.")
    control["pace"] = 40  # each document takes about a second
    out = corpus / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "multitask",
        "extract",
        "--schema",
        f"{corpus / 'schema.py'}:User",
        "--model",
        "openai:test",
        "--base-url",
        server.openai_base_url,
        "--concurrency",
        "4",
        "--output",
        str(out),
        str(docs),
    ]
    env = {**os.environ, "OPENAI_API_KEY": "k"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or '"done"' not in out.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr  # 128 + SIGINT, as a shell reports it
    assert "interrupted" in stderr
    assert "docs" in stderr or "doc/s" in stderr or "doc" in stderr  # the progress bar ran
    partial = read_lines(out)  # every line is whole JSON
    finished_first = {line["key"] for line in partial if line.get("done")}
    assert 0 < len(finished_first) < 34

    control["pace"] = None
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    final = read_lines(out)
    assert items_by_key(final) == expected(corpus)
    done_keys = [line["key"] for line in final if line.get("done")]
    assert len(done_keys) == len(set(done_keys)) == 34
