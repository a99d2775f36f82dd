"""`multitask extract --html`: one page of the run, each document a section, its quotes marked.

Run as a subprocess against the scripted server, with a model that reads (`ReadingModel`:
every capitalised word of the text it is sent is an item quoting it), so that the spans on
the page are the ones the run grounded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from multitask.testing import ReadingModel, RecordedRequest, Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel
import multitask

class Mention(BaseModel):
    name: str
    quote: multitask.Quote
"""

NAME = r"[A-Z][a-z]+"

TEXTS = {
    "a.txt": "Ada and Alan met. Ada left.",
    "b.txt": "👩‍💻 Grace & <script>Edsger</script> wrote to 東京の Barbara\u0301.",
    "c.txt": "nobody here.",
    "d.txt": "FAIL: Linus never arrives.",
}


class Report(HTMLParser):
    """The page's sections: heading, the text as shown, the marks, a failure note."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, Any]] = []
        self._where: str | None = None
        self._mark: dict[str, Any] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append({"name": "", "text": "", "marks": [], "failed": ""})
        elif tag == "h2":
            self._where = "name"
        elif tag == "div" and a.get("class") == "text":
            self._where = "text"
        elif tag == "p" and "failed" in (a.get("class") or "").split():
            self._where = "failed"
        elif tag == "mark":
            self._mark = {**a, "words": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._mark is not None:
            self.sections[-1]["marks"].append(self._mark)
            self._mark = None
        elif tag in ("h2", "div", "p"):
            self._where = None

    def handle_data(self, data: str) -> None:
        if self._where is not None and self.sections:
            self.sections[-1][self._where] += data
        if self._mark is not None:
            self._mark["words"] += data


@pytest.fixture
def served() -> Iterator[ScriptedModelServer]:
    reader = ReadingModel(NAME, item=lambda m: {"name": m[0], "quote": m[0]})

    def script(request: RecordedRequest) -> Script:
        if "FAIL" in str(request.body["messages"][-1]["content"]):
            return Script(status=400)
        return reader(request)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        yield server


def extract(
    tmp_path: Path, server: ScriptedModelServer, *extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "schema.py").write_text(SCHEMA)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "multitask",
            "extract",
            "--schema",
            f"{tmp_path / 'schema.py'}:Mention",
            "--model",
            "openai:test",
            "--base-url",
            server.openai_base_url,
            "--max-retries",
            "0",
            "--no-progress",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "k"},
    )


def test_html_report_has_each_document_in_input_order_with_its_spans(
    tmp_path: Path, served: ScriptedModelServer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TEXTS.items():
        (docs / name).write_text(text, encoding="utf-8")
    out, page = tmp_path / "out.jsonl", tmp_path / "report.html"
    done = extract(tmp_path, served, "--output", str(out), "--html", str(page), str(docs))
    assert done.returncode == 1, done.stderr  # d.txt failed
    html = page.read_text(encoding="utf-8")
    assert html.count("<script") == 1  # the page's own; the text's is escaped
    report = Report(html)

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    names = [str(docs / name) for name in sorted(TEXTS)]
    assert [s["name"] for s in report.sections] == names  # in input order
    for section, (name, text) in zip(report.sections, sorted(TEXTS.items()), strict=True):
        assert section["text"] == text
        items = [
            line["item"] for line in lines if line["key"] == section["name"] and "item" in line
        ]
        marks = section["marks"]
        # one mark per item here (no quotes overlap), in order, each on its own place
        assert len(marks) == len(items)
        assert [m["words"] for m in marks] == [i["quote"] for i in items]
        expected = [m.span() for m in re.finditer(NAME, text)] if name != "d.txt" else []
        assert [(int(m["data-start"]), int(m["data-end"])) for m in marks] == expected
        for mark in marks:
            assert mark["words"] == text[int(mark["data-start"]) : int(mark["data-end"])]
    assert [m["words"] for m in report.sections[0]["marks"]] == ["Ada", "Alan", "Ada"]
    assert [m["words"] for m in report.sections[1]["marks"]] == [
        "Grace",
        "Edsger",
        "Barbara",
    ]
    assert report.sections[2]["marks"] == []
    assert report.sections[3]["failed"].startswith("failed: ")
    assert report.sections[0]["failed"] == ""


def test_html_from_stdin_lines_and_a_path_that_cannot_be_written(
    tmp_path: Path, served: ScriptedModelServer
) -> None:
    page = tmp_path / "report.html"
    (tmp_path / "schema.py").write_text(SCHEMA)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "multitask",
            "extract",
            "--schema",
            f"{tmp_path / 'schema.py'}:Mention",
            "--model",
            "openai:test",
            "--base-url",
            served.openai_base_url,
            "--html",
            str(page),
        ],
        input="Ada met Alan.\nGrace.\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "k"},
    )
    assert done.returncode == 0, done.stderr
    report = Report(page.read_text(encoding="utf-8"))
    assert [s["name"] for s in report.sections] == ["stdin:1", "stdin:2"]
    assert [[m["words"] for m in s["marks"]] for s in report.sections] == [
        ["Ada", "Alan"],
        ["Grace"],
    ]

    bad = extract(tmp_path, served, "--html", str(tmp_path / "missing" / "r.html"), str(page))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("multitask extract: error: --html ")
    assert len(served.requests) == 2  # nothing ran
