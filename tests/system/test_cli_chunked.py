"""`multitask extract` over long texts: `--chunk-chars` / `--overlap-chars` /
`--max-continuations`, each item row with its quote's span, and a rerun after a crash that
reads a half-done document on from its last written item: every mention exactly once, and the
text already done never sent again.

The command runs as a subprocess (killed with SIGKILL or stopped with SIGINT mid-document);
the model is the scripted server's reading model, in a worker thread, recording requests.
"""

from __future__ import annotations

import json
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
from multitask._extract_cli import read_checkpoint
from multitask.testing import ReadingModel, RecordedRequest, Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel
from multitask import Quote

class Mention(BaseModel):
    name: str
    quote: Quote
"""

PATTERN = r"Name\d+"
BOOK = " ".join(f"In part {i}, Name{i} speaks at length." for i in range(600))
NOTE = "A short note on Name7000 and Name7001."


def mention(match: re.Match[str]) -> dict[str, Any]:
    return {"name": match[0], "quote": match[0]}


@pytest.fixture
def served() -> Iterator[tuple[ScriptedModelServer, ReadingModel]]:
    model = ReadingModel(PATTERN, item=mention, script=Script(chunk_size=32))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(model)) as server,
    ):
        yield server, model


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "schema.py").write_text(SCHEMA)
    (tmp_path / "book.txt").write_text(BOOK)
    (tmp_path / "note.txt").write_text(NOTE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return tmp_path


def command(server: ScriptedModelServer, *extra: str) -> list[str]:
    return [
        "extract",
        "--schema",
        "schema.py:Mention",
        "--model",
        "openai:reader",
        "--base-url",
        server.openai_base_url,
        "--no-progress",
        "--chunk-chars",
        "2000",
        "--overlap-chars",
        "100",
        "--max-continuations",
        "20",
        "--max-tokens",
        "300",
        *extra,
    ]


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def assert_every_mention_once(out: Path) -> None:
    lines = rows(out)
    for key, text in (("book.txt", BOOK), ("note.txt", NOTE)):
        items = [r for r in lines if r["key"] == key and "item" in r]
        assert [(r["start"], r["end"]) for r in items] == [
            m.span() for m in re.finditer(PATTERN, text)
        ], key
        for r in items:
            assert text[r["start"] : r["end"]] == r["item"]["quote"] == r["item"]["name"]
            assert r["match"] == "exact"
        (done,) = [r for r in lines if r["key"] == key and "item" not in r]
        assert done["done"] is True
        assert done["items"] == len(items)


def request_texts(requests: list[RecordedRequest]) -> list[str]:
    """Everything each request showed the model: every user message."""
    return [
        "\n".join(str(m["content"]) for m in r.body["messages"] if m["role"] == "user")
        for r in requests
    ]


def test_items_carry_their_spans_and_a_full_run_reads_each_mention_once(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, _ = served
    assert main(command(server, "book.txt", "note.txt", "-o", "out.jsonl")) == 0
    assert_every_mention_once(folder / "out.jsonl")
    assert len(server.requests) > 15  # chunks and continuations, not one request each


def test_chunks_read_side_by_side_still_come_in_document_order(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, _ = served
    out = folder / "out.jsonl"
    assert (
        main(command(server, "book.txt", "note.txt", "-o", str(out), "--chunk-concurrency", "3"))
        == 0
    )
    assert_every_mention_once(out)


@pytest.mark.parametrize("stop", ["sigkill-and-torn-line", "sigint"])
def test_a_rerun_after_a_crash_reads_the_half_done_document_on_from_its_last_item(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel], stop: str
) -> None:
    server, model = served
    model.script.tokens_per_second = 1500  # about four seconds for the book
    out = folder / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "multitask",
        *command(server, "book.txt", "note.txt", "-o", str(out), "--concurrency", "1"),
    ]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_bytes().count(b"\n") >= 150):
            assert time.monotonic() < deadline, "no items written"
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL if stop.startswith("sigkill") else signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    if stop == "sigint":
        assert process.returncode == 130, stderr
    else:
        assert process.returncode == -signal.SIGKILL
        data = out.read_bytes()
        out.write_bytes(data[: data.rindex(b"\n") - 7])  # the last line torn mid-write
    written = [line for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]
    kept = [json.loads(line) for line in written]
    assert kept
    assert all(r["key"] == "book.txt" and "item" in r for r in kept)  # half done
    assert len(kept) < 550
    kept_names = {r["item"]["name"] for r in kept}

    before = len(server.requests)
    model.script.tokens_per_second = None
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 document(s) already done in" in rerun.stderr
    assert "1 read on from their last item" in rerun.stderr
    assert_every_mention_once(out)
    # The rerun never showed the model a mention the file already had: the text before the
    # last written item was not read again (neither as the part to read nor as context).
    again = request_texts(server.requests[before:])
    assert again
    assert not [t for t in again if kept_names & set(re.findall(PATTERN, t))]


def test_a_half_done_document_without_spans_or_in_one_request_runs_again_whole(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    spanned = [{"key": "a", "item": {"q": "x"}, "start": 0, "end": 1, "match": "exact"}] * 2
    plain = [{"key": "b", "item": {"q": "x"}}]
    failed = [*spanned[:1], {"key": "c", "error": "boom", "error_type": "APIError", "items": 1}]
    failed[0] = {**failed[0], "key": "c", "start": 5, "end": 6}
    text = "".join(json.dumps(r) + "\n" for r in [*spanned, *plain, *failed])
    out.write_text(text)
    checkpoint = read_checkpoint(out, read_on=True)
    assert checkpoint.finished == set()
    assert checkpoint.read_on == {"a": (2, (0, 1)), "c": (1, (5, 6))}
    assert [r["key"] for r in rows(out)] == ["a", "a", "c"]  # b's line and c's error dropped
    out.write_text(text)
    assert read_checkpoint(out).read_on == {}  # not chunked: every line of theirs dropped
    assert out.read_text() == ""


def test_a_damaged_line_inside_the_file_means_no_document_is_read_on(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    item = {"key": "a", "item": {"q": "x"}, "start": 0, "end": 1, "match": "exact"}
    out.write_text(json.dumps(item) + "\n" + '{"key": "a", "it\n' + json.dumps(item) + "\n")
    assert read_checkpoint(out, read_on=True).read_on == {}  # an item may be missing
    assert out.read_text() == ""
