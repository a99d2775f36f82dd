"""`multitask extract` on a folder as users have it: PDFs (their text layer read here, rows
with the page), HTML pages (their visible text), Markdown and text; and a rerun after a crash
that repeats no item. PDFs are written by pypdf in the tests; the command runs as a
subprocess against the scripted server's reading model."""

from __future__ import annotations

import base64
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

from _text_pdf import text_pdf
from multitask import Document
from multitask.testing import ReadingModel, Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel
from multitask import Quote

class Mention(BaseModel):
    name: str
    quote: Quote
"""

PATTERN = r"Name\d+"

INVOICE = [
    "Invoice 17 for Name1.\nIssued by Name2.",
    "Line items, as agreed with Name3.",
    "Signed: Name4 and Name5.",
]
PAGE = """<!doctype html><html><head><title>Team</title>
<script>const who = "Name90";</script><style>.x::after { content: "Name91" }</style></head>
<body><h1>Our team</h1><p>Name10 leads &amp; Name11 builds.</p>
<div hidden>Name92 left</div><p aria-hidden="true">Name93</p>
<ul><li>Name12</li></ul></body></html>"""
NOTES = "# Notes\n\nName20 wrote to Name21.\n"
PLAIN = "Just Name30 here."


def mention(match: re.Match[str]) -> dict[str, Any]:
    return {"name": match[0], "quote": match[0]}


@pytest.fixture
def served() -> Iterator[tuple[ScriptedModelServer, ReadingModel]]:
    model = ReadingModel(PATTERN, item=mention, script=Script(chunk_size=16))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(model)) as server,
    ):
        yield server, model


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "schema.py").write_text(SCHEMA)
    docs = tmp_path / "docs"
    (docs / "web").mkdir(parents=True)
    (docs / "invoice.pdf").write_bytes(text_pdf(INVOICE, title="Invoice 17"))
    (docs / "web" / "team.html").write_text(PAGE, encoding="utf-8")
    (docs / "notes.md").write_text(NOTES)
    (docs / "plain.txt").write_text(PLAIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return tmp_path


def command(server: ScriptedModelServer, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "multitask",
        "extract",
        "--schema",
        "schema.py:Mention",
        "--model",
        "openai:reader",
        "--base-url",
        server.openai_base_url,
        "--no-progress",
        *extra,
    ]


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def document_of(path: Path) -> Document:
    """The text the command reads a file as."""
    if path.suffix == ".pdf":
        return Document.from_pdf(path)
    if path.suffix in (".html", ".htm"):
        return Document.from_html(path.read_text(encoding="utf-8"))
    return Document(path.read_text(encoding="utf-8"))


def assert_every_mention_once_with_its_page(out: Path, paths: list[Path]) -> None:
    lines = rows(out)
    assert {r["key"] for r in lines} == {str(p) for p in paths}
    for path in paths:
        document = document_of(path)
        items = [r for r in lines if r["key"] == str(path) and "item" in r]
        expected = [m.span() for m in re.finditer(PATTERN, document.text)]
        assert sorted((r["start"], r["end"]) for r in items) == expected, path
        for r in items:
            assert document.text[r["start"] : r["end"]] == r["item"]["name"]
            assert r.get("page") == document.page_of(r["start"]), r
        (done,) = [r for r in lines if r["key"] == str(path) and "item" not in r]
        assert done["done"] is True
        assert done["items"] == len(items)


def test_a_folder_of_pdf_html_markdown_and_text(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, model = served
    result = run(command(server, "docs", "-o", "out.jsonl"))
    assert result.returncode == 0, result.stderr
    paths = sorted(p.relative_to(folder) for p in (folder / "docs").rglob("*") if p.is_file())
    assert_every_mention_once_with_its_page(folder / "out.jsonl", paths)
    by_name = {r["item"]["name"]: r for r in rows(folder / "out.jsonl") if "item" in r}
    # the PDF's mentions on the pages they are on; the others have no pages
    assert {n: by_name[n]["page"] for n in ("Name1", "Name2", "Name3", "Name4", "Name5")} == {
        "Name1": 1, "Name2": 1, "Name3": 2, "Name4": 3, "Name5": 3,
    }  # fmt: skip
    assert all("page" not in by_name[n] for n in ("Name10", "Name20", "Name30"))
    # the page's visible text only: no script, style or hidden element reached the model
    assert set(by_name) == {
        "Name1", "Name2", "Name3", "Name4", "Name5", "Name10", "Name11", "Name12", "Name20",
        "Name21", "Name30",
    }  # fmt: skip
    (sent,) = [t for t in model.texts if "Name10" in t]
    assert sent == "Our team\n\nName10 leads & Name11 builds.\n\nName12"
    assert not re.search(r"Name9\d", "".join(model.texts))


def test_globs_pick_the_kinds_they_name(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, _ = served
    result = run(command(server, "docs/*.pdf", "docs/**/*.html", "-o", "out.jsonl"))
    assert result.returncode == 0, result.stderr
    paths = [Path("docs/invoice.pdf"), Path("docs/web/team.html")]
    assert_every_mention_once_with_its_page(folder / "out.jsonl", paths)


@pytest.mark.parametrize("read", ["whole", "chunked"])
def test_a_rerun_after_a_crash_repeats_no_item_and_keeps_the_pages(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel], read: str
) -> None:
    server, model = served
    books = folder / "books"
    books.mkdir()
    for b in range(4):
        pages = [
            "\n".join(f"Part {p}, line {i}: Name{b}{p:02}{i:02} speaks." for i in range(12))
            for p in range(6)
        ]
        (books / f"book{b}.pdf").write_bytes(text_pdf(pages))
    (books / "index.html").write_text("<p>" + " ".join(f"Name9{i:03}" for i in range(40)))
    chunks = ["--chunk-chars", "1500", "--overlap-chars", "80", "--max-continuations", "5"]
    args = command(
        server,
        *("books", "-o", "out.jsonl", "--concurrency", "1"),
        *(chunks if read == "chunked" else []),
    )
    model.script.tokens_per_second = 1200  # about half a second a book
    out = folder / "out.jsonl"
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_bytes().count(b"\n") >= 110):
            assert time.monotonic() < deadline, "no items written"
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=20)
    finally:
        process.kill()
    data = out.read_bytes()
    out.write_bytes(data[: data.rindex(b"\n") - 5])  # the last line torn mid-write
    kept = [json.loads(line) for line in out.read_bytes().splitlines(keepends=True)[:-1]]
    done_before = {r["key"] for r in kept if r.get("done")}
    assert done_before  # at least one book was done before the crash
    assert all(r["page"] >= 1 for r in kept if "item" in r)

    before = len(model.texts)
    model.script.tokens_per_second = None
    rerun = run(args)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 document(s) already done in" in rerun.stderr
    # chunked, the book cut off is read on from its last item; else it runs again whole
    assert ("1 read on from their last item" in rerun.stderr) == (read == "chunked")
    paths = sorted(p.relative_to(folder) for p in books.iterdir())
    assert_every_mention_once_with_its_page(out, paths)
    # the books already done were not sent again
    again = "".join(model.texts[before:])
    for key in done_before:
        assert not re.search(rf"Name{Path(key).stem[-1]}\d{{4}}\b", again), key


def test_a_pdf_pypdf_cannot_read_is_one_line_naming_it(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, _ = served
    (folder / "docs" / "zz-broken.pdf").write_bytes(b"%PDF-1.4\nnot really a PDF\n")
    result = run(command(server, "docs", "-o", "out.jsonl", "--concurrency", "1"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "multitask extract: error: cannot read docs/zz-broken.pdf: not a PDF pypdf can read"
    ), result.stderr
    assert "Traceback" not in result.stderr
    done = {r["key"] for r in rows(folder / "out.jsonl") if r.get("done")}
    assert "docs/invoice.pdf" in done  # the documents before it were delivered


def test_without_pypdf_the_pdfs_are_refused_before_anything_starts(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, model = served
    hide = "import sys; sys.modules['pypdf'] = None; from multitask._cli import main; "
    args = command(server, "docs", "-o", "out.jsonl")[3:]
    result = run([sys.executable, "-c", hide + f"sys.exit(main({args!r}))"])
    assert result.returncode == 2
    assert result.stderr == (
        "multitask extract: error: --pdf text reads a PDF's text layer with pypdf: "
        'pip install "multitask[pdf]" (or send the files to the model with --pdf native)\n'
    )
    assert not model.texts
    # without a PDF among the inputs, nothing needs it
    args = command(server, "docs/web", "docs/notes.md", "-o", "out2.jsonl")[3:]
    result = run([sys.executable, "-c", hide + f"sys.exit(main({args!r}))"])
    assert result.returncode == 0, result.stderr


def test_pdf_native_sends_the_file_itself(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, _ = served
    result = run(command(server, "docs", "--pdf", "native", "-o", "out.jsonl"))
    assert result.returncode == 0, result.stderr
    (request,) = [
        r for r in server.requests if any(p.get("type") == "file" for p in _parts_of(r.body))
    ]
    (part,) = _parts_of(request.body)
    assert part["file"]["filename"] == "invoice.pdf"
    data = (folder / "docs" / "invoice.pdf").read_bytes()
    assert part["file"]["file_data"] == (
        "data:application/pdf;base64," + base64.b64encode(data).decode()
    )
    lines = rows(folder / "out.jsonl")
    pdf_items = [r for r in lines if r["key"] == "docs/invoice.pdf" and "item" in r]
    # the reading model reads the file's text layer; no local text, so no span and no page
    assert [r["item"]["name"] for r in pdf_items] == [f"Name{i}" for i in range(1, 6)]
    assert all("start" not in r and "page" not in r for r in pdf_items)
    # a rerun finds every document done and sends nothing
    requests = len(server.requests)
    again = run(command(server, "docs", "--pdf", "native", "-o", "out.jsonl"))
    assert again.returncode == 0, again.stderr
    assert "4 document(s) already done" in again.stderr
    assert len(server.requests) == requests
    assert rows(folder / "out.jsonl") == lines


def _parts_of(body: Any) -> list[dict[str, Any]]:
    """The content parts of a chat request's last user message (none for a plain text)."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, list) else []


def test_pdf_native_is_not_read_in_chunks(
    folder: Path, served: tuple[ScriptedModelServer, ReadingModel]
) -> None:
    server, model = served
    result = run(command(server, "docs", "--pdf", "native", "--chunk-chars", "500"))
    assert result.returncode == 2
    assert result.stderr == (
        "multitask extract: error: --chunk-chars, --overlap-chars and --max-continuations read "
        "a text in chunks, and a PDF sent with --pdf native is a file, not a text here: use "
        "--pdf text\n"
    )
    assert not server.requests
    assert not model.texts
