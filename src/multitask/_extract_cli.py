"""`multitask extract`: run `extract_many` over files or lines, writing JSON lines as they stream.

A file is read by its kind: a `.pdf`'s text layer (`Document.from_pdf`, or the file itself sent
to the model with `--pdf native`), an `.html` or `.htm` page's visible text
(`Document.from_html`), anything else as UTF-8 text. An item row of a PDF read locally carries
the `"page"` its quote's span starts on.

The output file is its own checkpoint. Each item is a line `{"key": ..., "item": {...}}` (with
`"start"`, `"end"` and `"match"`, its quote's span, when the item has a `multitask.Quote`); each
document ends with `{"key": ..., "done": true, "items": n, ...}` or `{"key": ..., "error": ...}`.
Run again with the same `--output` and the documents whose lines are all there are skipped,
while the lines of any that are not (cut off by Ctrl-C or a crash, failed, or torn mid-write)
are dropped and those documents run again, so the file holds every item exactly once. Read in
chunks (`--chunk-chars`, `--max-continuations`), whose items come in document order, a
document cut off keeps its item lines when they carry spans, and is read on from after the
last of them: neither its items nor the text before them are asked for again.

Documents are read as `extract_many` asks for them, never all at once: a pipe's lines start
work as they arrive. Mistakes in the command line or its inputs are a `UsageError`: one line on
stderr and exit status 2, checked before any document starts where they can be known then.
"""

from __future__ import annotations

import argparse
import codecs
import glob
import importlib
import importlib.util
import json
import os
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, get_args

import anyio
import anyio.lowlevel
import anyio.to_thread
from pydantic import TypeAdapter

from ._client import Client
from ._exceptions import MultitaskError
from ._html_report import HtmlReport
from ._many import Progress, Result
from ._parts import PDF
from ._providers._request import Mode
from ._quote import contains_quote
from ._sources import Document

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Checkpoint",
    "UsageError",
    "add_extract_command",
    "open_client",
    "prepare_output",
    "read_checkpoint",
    "run_extract",
]

#: Exit statuses: every document succeeded; some failed; a usage or configuration mistake;
#: stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 128 + signal.SIGINT

DESCRIPTION = """\
Extract items from many documents: one per file (.pdf, .html/.htm, .md, .txt; any other as
text), or one per line of stdin or of JSON-lines files. Writes one JSON line per item as it
streams ({"key": ..., "item": {...}}, with "page" for a PDF's text) and one when each
document ends ({"key": ..., "done": true, ...} or {"key": ..., "error": ...}).

Run again with the same --output to resume: finished documents are skipped, and the lines of
any cut off, torn or failed are dropped before they run again, so no item is lost or doubled.
With --chunk-chars or --max-continuations, a document cut off whose items have a quote's span
("start", "end") keeps them and is read on from after the last one.

Exit status: 0 when every document succeeded, 1 when any failed, 2 for a usage or
configuration mistake, 130 after Ctrl-C.
"""

_READ_SIZE = 1 << 16


class UsageError(Exception):
    """A mistake in the command line, its configuration or its input: one line, exit status 2."""


def one_line(message: object) -> str:
    """`message` on one line, so that a mistake is always exactly one line on stderr."""
    return " ".join(str(message).split())


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None


def _positive_int(value: str) -> int:
    number = _whole(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _count(value: str) -> int:
    number = _whole(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {number}")
    return number


def _rate(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return number


def add_extract_command(commands: Any) -> None:
    """Add `extract` to the command line's subcommands."""
    cmd = commands.add_parser(
        "extract",
        help="extract items from many documents, one JSON line per item",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def error(message: str) -> NoReturn:
        """A bad flag or value: one line and exit status 2, as every other mistake."""
        print(f"{cmd.prog}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    setattr(cmd, "error", error)  # noqa: B010 - an instance's own, not a method to override
    cmd.add_argument(
        "--schema",
        required=True,
        help="the item type: path/to/module.py:User or package.module:User (from the "
        "current directory)",
    )
    cmd.add_argument("--model", help="provider:model_name (default: MULTITASK_MODEL)")
    cmd.add_argument("--base-url", help="the provider's base URL (default: its env variable)")
    cmd.add_argument(
        "inputs",
        nargs="*",
        help="files, globs or directories, one document each; none: read stdin",
    )
    cmd.add_argument(
        "--jsonl", action="store_true", help="stdin or each input file holds JSON lines"
    )
    cmd.add_argument(
        "--pdf",
        choices=("text", "native"),
        default="text",
        help="text: read each PDF's text layer here (pypdf, the pdf extra) and send it, its "
        "rows with the page; native: send the file itself to the model (default: text)",
    )
    cmd.add_argument("--text-field", default="text", help="the text's field in JSON lines")
    cmd.add_argument("--key-field", help="the key's field in JSON lines (default: line number)")
    cmd.add_argument("--output", "-o", help="write here (and resume from it); default stdout")
    cmd.add_argument(
        "--concurrency", type=_positive_int, default=32, help="documents in flight (32)"
    )
    cmd.add_argument("--rpm", type=_rate, help="requests per minute limit")
    cmd.add_argument("--tpm", type=_rate, help="tokens per minute limit")
    cmd.add_argument("--max-retries", type=_count, default=4, help="retries per document (4)")
    cmd.add_argument("--mode", choices=get_args(Mode), help="how the model is asked for JSON")
    cmd.add_argument("--max-tokens", type=_positive_int, help="output token limit per document")
    cmd.add_argument(
        "--chunk-chars",
        type=_positive_int,
        metavar="N",
        help="read each document in chunks of at most N characters, a request each",
    )
    cmd.add_argument(
        "--overlap-chars",
        type=_count,
        metavar="N",
        help="each chunk's request reads N characters past its end (needs a Quote field)",
    )
    cmd.add_argument(
        "--max-continuations",
        type=_count,
        metavar="N",
        help="up to N more requests for a chunk whose answer was cut at the output limit "
        "(needs a Quote field)",
    )
    cmd.add_argument(
        "--chunk-concurrency",
        type=_positive_int,
        metavar="N",
        help="read up to N chunks of a document at once (1); items still come in document order",
    )
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    cmd.add_argument(
        "--html",
        metavar="PATH",
        help="also write one HTML page of this run's documents with each item's quotes "
        "highlighted (written at the end; texts and items are kept in memory until then)",
    )


def open_client(
    model: str | None, *, base_url: str | None = None, mode: str | None = None, **settings: Any
) -> Client:
    """A `Client` for `model`, checked before any document starts (the model string, the
    provider, the base URL, the mode and the API key), so that a mistake is one `UsageError`
    rather than one failed document each."""
    model = model or os.environ.get("MULTITASK_MODEL")
    if not model:
        raise UsageError(
            "no model: give --model provider:model_name (e.g. openai:gpt-4o-mini) "
            "or set MULTITASK_MODEL"
        )
    if mode is not None:
        settings["mode"] = mode
    try:
        # `Client()` checks all of it; only the words change, to name the flags.
        client = Client(model, base_url=base_url, **settings)
    except (MultitaskError, ValueError, TypeError) as exc:
        message = str(exc)
        if message.startswith("base_url "):
            message = "--base-url " + message.removeprefix("base_url ")
        raise UsageError(message) from None
    return client


@dataclass
class _Job:
    """Everything one `multitask extract` run needs, checked before it starts."""

    client: Client
    item_type: Any
    adapter: TypeAdapter[Any]
    documents: Callable[[], AsyncIterator[tuple[str, Any]]]
    total: int | None
    out: IO[str]
    progress_bar: bool
    report: HtmlReport
    #: The chunk options given (`chunk_chars`, ...), for `extract_many`.
    options: dict[str, Any] = field(default_factory=dict)
    #: Documents cut off in an earlier run, by key: the items the file holds of each, and the
    #: span of the last, which the reading starts after.
    read_on: dict[str, tuple[int, tuple[int, int]]] = field(default_factory=dict)


def run_extract(args: argparse.Namespace) -> int:
    """Run `multitask extract`; returns its exit status (`EXIT_*`)."""
    item_type = load_schema(args.schema)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(item_type)
    except Exception as exc:
        raise UsageError(
            f"--schema {args.schema}: not a type pydantic can validate "
            f"({one_line(exc).split('. ')[0]})"
        ) from None
    client = open_client(
        args.model,
        base_url=args.base_url,
        mode=args.mode,
        max_concurrency=args.concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        max_retries=args.max_retries,
        max_tokens=args.max_tokens,
    )
    paths = input_paths(args.inputs) if args.inputs else None
    if paths is None and sys.stdin is None:
        raise UsageError("no input: give files, globs or directories, or pipe lines to stdin")
    options = {
        name: value
        for name in ("chunk_chars", "overlap_chars", "max_continuations", "chunk_concurrency")
        if (value := getattr(args, name)) is not None
    }
    chunked = args.chunk_chars is not None or bool(args.max_continuations)
    if paths and not args.jsonl and any(_kind(p) == "pdf" for p in paths):
        _check_pdf_support(args.pdf)
        if args.pdf == "native" and (chunked or args.overlap_chars):
            raise UsageError(
                "--chunk-chars, --overlap-chars and --max-continuations read a text in chunks, "
                "and a PDF sent with --pdf native is a file, not a text here: use --pdf text"
            )
    needs_quote = "--overlap-chars" if args.overlap_chars else "--max-continuations"
    if (args.overlap_chars or args.max_continuations) and not contains_quote(adapter):
        raise UsageError(
            f"{needs_quote} needs the item type to have a multitask.Quote field "
            f"({args.schema} has none): repeats are told apart by where each item's quote is "
            "in the text (--chunk-chars alone works without one)"
        )
    output = Path(args.output) if args.output else None
    finished: set[str] = set()
    read_on: dict[str, tuple[int, tuple[int, int]]] = {}
    if output is not None:
        try:
            checkpoint = read_checkpoint(output, read_on=chunked)
            finished, read_on = checkpoint.finished, checkpoint.read_on
            out: IO[str] = output.open("a", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise UsageError(f"--output {output}: {exc.strerror or exc}") from None
        if finished or read_on:
            more = f", {len(read_on)} read on from their last item" if read_on else ""
            print(
                f"resuming: {len(finished)} document(s) already done in {output}{more}",
                file=sys.stderr,
            )
    else:
        out = sys.stdout
    try:
        report = HtmlReport(Path(args.html) if args.html else None, schema=args.schema)
    except OSError as exc:
        raise UsageError(f"--html {args.html}: {exc.strerror or exc}") from None
    job = _Job(
        client=client,
        item_type=item_type,
        adapter=adapter,
        documents=lambda: report.read(read_documents(args, paths, skip=finished)),
        total=None if paths is None or args.jsonl else sum(str(p) not in finished for p in paths),
        out=out,
        progress_bar=not args.no_progress,
        report=report,
        options=options,
        read_on=read_on,
    )
    try:
        return anyio.run(_extract, job)
    finally:
        if output is not None:
            out.close()
        report.close()


async def _extract(job: _Job) -> int:
    bar = _ProgressBar(job.total, enabled=job.progress_bar)
    signalled: int | None = None
    mistake: BaseException | None = None
    start = time.monotonic()
    progress = Progress()
    try:
        async with job.client as client, anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                nonlocal signalled
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        signalled = signum
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            resume_after = {key: span for key, (_, span) in job.read_on.items()}
            async with client.extract_many(
                job.item_type,
                job.documents(),
                on_progress=bar.update,
                resume_after=resume_after,
                **job.options,
            ) as results:
                progress = results.progress
                async for r in results:
                    had = job.read_on[r.index][0] if r.done and r.index in job.read_on else 0
                    job.out.write(_line(r, job.adapter, had) + "\n")
                    job.out.flush()
                    job.report.add(r)
            tg.cancel_scope.cancel()
    except* UsageError as group:  # a bad input line, met as the documents are read
        mistake = _first(group)
    except* MultitaskError as group:  # a configuration error, raised before any document
        mistake = _first(group)
    finally:
        bar.close(keep=mistake is None)
    if mistake is not None:
        raise UsageError(str(mistake))
    elapsed = time.monotonic() - start
    verb = "interrupted after" if signalled else "done in"
    print(
        f"multitask extract: {verb} {elapsed:.1f}s: {progress.documents_done} document(s) "
        f"done, {progress.documents_failed} failed, {progress.items} item(s), "
        f"{progress.input_tokens} + {progress.output_tokens} tokens, "
        f"{progress.requests} request(s)"
        + (" (run again with the same --output to resume)" if signalled else ""),
        file=sys.stderr,
    )
    if signalled:
        return 128 + signalled
    return EXIT_FAILED if progress.documents_failed else EXIT_OK


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception in `group`, however deeply the task groups nested it."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _line(r: Result[Any], adapter: TypeAdapter[Any], had: int = 0) -> str:
    """One output line; `had`: the items an earlier run wrote of the document (counted in
    its last line)."""
    if not r.done:
        item = adapter.dump_python(r.item, mode="json")
        if r.start is None:
            return json.dumps({"key": r.index, "item": item}, ensure_ascii=False)
        row = {"key": r.index, "item": item, "start": r.start, "end": r.end, "match": r.match}
        if r.page is not None:
            row["page"] = r.page
        return json.dumps(row, ensure_ascii=False)
    if r.error is not None:
        return json.dumps(
            {
                "key": r.index,
                "error": str(r.error),
                "error_type": type(r.error).__name__,
                "items": had + r.items,
            },
            ensure_ascii=False,
        )
    usage = (
        {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens}
        if r.usage
        else None
    )
    return json.dumps({"key": r.index, "done": True, "items": had + r.items, "usage": usage})


# -- resuming: the output file as a checkpoint -------------------------------------------------


def _record(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """(key, record) of one output line, or None for a line that is not a whole record: cut
    by a crash (no newline, or not JSON), or glued to a torn one by an older version."""
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(record, dict) or "key" not in record:
        return None
    if not ("item" in record or "error" in record or record.get("done") is True):
        return None
    return str(record["key"]), record


@dataclass
class Checkpoint:
    """What an output file holds already (see `read_checkpoint`)."""

    #: The keys of the documents it holds whole.
    finished: set[str]
    #: Documents cut off that are read on from their last item, by key: how many item lines
    #: it holds of each, and the span `(start, end)` of the one that starts last.
    read_on: dict[str, tuple[int, tuple[int, int]]]


def prepare_output(path: Path) -> set[str]:
    """The keys of the documents `path` holds whole; rewrites it without every other line (see
    `read_checkpoint`)."""
    return read_checkpoint(path).finished


def read_checkpoint(path: Path, *, read_on: bool = False) -> Checkpoint:
    """What `path` holds whole; rewrites it without every other line.

    A document is whole when it has a `done` line, after all its item lines, counting as many
    items as there are. Every other line is dropped: those of documents cut off or failed,
    and any line that is not a whole record. A last line without its newline counts as torn
    even when it parses, and so does one glued to a torn line, so the file is left ending
    with a newline and an item lost to a crash makes its document run again. The file is
    read twice, line by line, and only the keys are held in memory.

    `read_on` (a chunked run, whose items come in document order): a document without a
    `done` line (cut off, or failed) whose item lines all carry a span keeps them (its error
    line is dropped) and is listed in `read_on`, to be read on from after the last of them;
    unless a damaged line sits before a whole one (not only the end was torn: an item may be
    missing from the middle), when the rule above holds for every document.
    """
    if not path.exists():
        return Checkpoint(set(), {})
    items: dict[str, int] = {}
    claimed: dict[str, int] = {}  # key -> the items its done line counts; -1 once it is not whole
    ended: set[str] = set()  # keys with a done line
    failed: set[str] = set()  # keys with an error line
    last: dict[str, tuple[int, int] | None] = {}  # the latest-starting span; None: one had none
    damaged = inside = False
    with path.open("rb") as f:
        for raw in f:
            parsed = _record(raw)
            if parsed is None:
                damaged = True
                continue
            inside = inside or damaged
            key, record = parsed
            if "item" in record:
                items[key] = items.get(key, 0) + 1
                if key in claimed:  # an item after the end
                    claimed[key] = -1
                if read_on:
                    span, was = _span_of(record), last.get(key, (-1, -1))
                    last[key] = None if span is None or was is None else max(was, span)
                continue
            if "error" in record:
                failed.add(key)
            else:
                ended.add(key)
            if key in claimed or "error" in record or type(record.get("items")) is not int:
                claimed[key] = -1
            else:
                claimed[key] = record["items"]
    finished = {key for key, n in claimed.items() if n >= 0 and n == items.get(key, 0)}
    partial: dict[str, tuple[int, tuple[int, int]]] = {}
    if read_on and not inside:
        partial = {
            key: (items[key], span)
            for key, span in last.items()
            if span is not None and key not in finished and key not in ended
        }
    kept = finished | partial.keys()
    if damaged or kept != items.keys() | claimed.keys() or failed & partial.keys():
        _rewrite(path, finished, partial.keys())
    return Checkpoint(finished, partial)


def _span_of(record: dict[str, Any]) -> tuple[int, int] | None:
    """The span an item line carries, or None."""
    start, end = record.get("start"), record.get("end")
    if type(start) is int and type(end) is int and 0 <= start <= end:
        return start, end
    return None


def _rewrite(path: Path, keep: set[str], items_of: Iterable[str] = ()) -> None:
    """Replace `path`, atomically, by its whole lines of the documents in `keep`, and the item
    lines of those in `items_of`."""
    items_only = set(items_of)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as dst, path.open("rb") as src:
            for raw in src:
                parsed = _record(raw)
                if parsed is None:
                    continue
                key, record = parsed
                if key in keep or (key in items_only and "item" in record):
                    dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the input: read lazily --------------------------------------------------------------------


def input_paths(inputs: list[str]) -> list[Path]:
    """The files `inputs` name (files, globs, directories), in order; a name that is none of
    these, or a glob that matches nothing, is a `UsageError` before anything starts."""
    paths: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.exists():  # a file, or a pipe such as <(command)
            paths.append(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            if not any(p.is_file() for p in matches):
                raise UsageError(f"no file matches {spec!r}")
            paths.extend(p for p in matches if p.is_file())
        else:
            raise UsageError(f"no such file or directory: {spec}")
    return paths


async def read_documents(
    args: argparse.Namespace,
    paths: list[Path] | None,
    *,
    skip: set[str],
) -> AsyncIterator[tuple[str, Any]]:
    """(key, document) pairs, read as they are asked for: one per file, or per line of stdin
    or of JSON-lines files; the keys in `skip` are left out (a skipped file is not even read).

    A file is read by its kind (`_read_file`): a PDF's text layer is a `Document`, whose
    pages `extract_many` puts on its items' `Result.page`."""
    if paths is None:
        with os.fdopen(os.dup(sys.stdin.fileno()), "rb") as f:
            async for document in _line_documents(f, "stdin", args, skip):
                yield document
        return
    for path in paths:
        if args.jsonl:
            with _open(path) as f:
                async for document in _line_documents(f, str(path), args, skip):
                    yield document
        elif str(path) not in skip:
            yield str(path), await anyio.to_thread.run_sync(_read_file, path, args.pdf)


async def _line_documents(
    f: IO[bytes], name: str, args: argparse.Namespace, skip: set[str]
) -> AsyncIterator[tuple[str, str]]:
    number = 0
    async for line in _read_lines(f):
        number += 1
        document = _document(line, name, number, args)
        if document is not None and document[0] not in skip:
            yield document


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _kind(path: Path) -> str:
    """How a file is read: "pdf", "html", or "text" (`.md`, `.txt` and anything else)."""
    suffix = path.suffix.lower()
    return "pdf" if suffix == ".pdf" else "html" if suffix in (".html", ".htm") else "text"


def _check_pdf_support(mode: str) -> None:
    """Before anything starts: `--pdf text` has pypdf to read with."""
    if mode == "text" and importlib.util.find_spec("pypdf") is None:
        raise UsageError(
            '--pdf text reads a PDF\'s text layer with pypdf: pip install "multitask[pdf]" '
            "(or send the files to the model with --pdf native)"
        )


def _read_file(path: Path, pdf: str) -> Document | PDF:
    """One file as a document: a PDF's text layer with its pages (or, `pdf="native"`, the
    file as a `multitask.PDF` part), an HTML page's visible text, or the file's text."""
    kind = _kind(path)
    try:
        if kind == "pdf" and pdf == "native":
            return PDF(path)
        if kind == "pdf":
            return Document.from_pdf(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = reason.removeprefix(f"{path.name}: ")
        raise UsageError(f"cannot read {path}: {reason}") from None
    text = _read_text(path)
    return Document.from_html(text) if kind == "html" else Document(text)


def _document(
    line: str, name: str, number: int, args: argparse.Namespace
) -> tuple[str, str] | None:
    """The (key, text) of one input line, None for a blank one; a bad JSON line is a
    `UsageError` naming it."""
    if not line.strip():
        return None
    if not args.jsonl:
        return f"{name}:{number}", line
    where = f"{name}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not a JSON line ({exc.msg} at column {exc.colno}); "
            "drop --jsonl to read each line as text"
        ) from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: a JSON line must be an object, not {type(record).__name__}")
    fields = ", ".join(map(str, record)) or "none"
    if args.text_field not in record:
        raise UsageError(
            f"{where}: no {args.text_field!r} field (its fields: {fields}); "
            "name the text's field with --text-field"
        )
    text = record[args.text_field]
    if not isinstance(text, str):
        raise UsageError(
            f"{where}: the {args.text_field!r} field is {type(text).__name__}, not text"
        )
    if not args.key_field:
        return where, text
    if args.key_field not in record:
        raise UsageError(
            f"{where}: no {args.key_field!r} field for --key-field (its fields: {fields})"
        )
    return str(record[args.key_field]), text


async def _read_lines(f: IO[bytes]) -> AsyncIterator[str]:
    """The lines of `f` (without their line ends) as they arrive.

    A pipe or a terminal is waited on until readable, then read for what is there, so a slow
    writer's first lines start work at once and Ctrl-C is not held up by a blocked read. A
    regular file, or a device that cannot be waited on (`/dev/null`), never blocks: it is read
    in blocks on the event loop.
    """
    fd = f.fileno()
    wait = not stat.S_ISREG(os.fstat(fd).st_mode)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        if wait:
            try:
                await _wait_readable(fd)
            except OSError:  # EPERM: not a file the event loop can wait on
                wait = False
        else:
            await anyio.lowlevel.checkpoint()
        chunk = os.read(fd, _READ_SIZE)
        lines = (pending + decoder.decode(chunk, final=not chunk)).split("\n")
        pending = lines.pop()
        for line in lines:
            yield line.removesuffix("\r")
        if not chunk:
            if pending:
                yield pending
            return


async def _wait_readable(fd: int) -> None:
    """Wait until `fd` has data or is at its end: on the event loop where it can (anyio 4.7+,
    not Windows), else in a worker thread."""
    wait = getattr(anyio, "wait_readable", None)
    if wait is not None and sys.platform != "win32":
        await wait(fd)
        return
    import select  # pragma: no cover - old anyio, or Windows

    await anyio.to_thread.run_sync(select.select, [fd], [], [], abandon_on_cancel=True)


def load_schema(spec: str) -> Any:
    """`path/to/module.py:User` or `package.module:User` -> the `User` type.

    A module name is imported with the current directory first on `sys.path`, as
    `python -m multitask` has it (the `multitask` script alone has its own folder there).
    Any failure is a one-line `UsageError`.
    """
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"--schema must be module:Type or path.py:Type, not {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            module = _load_file(Path(module_name))
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"--schema {spec}: no module named {exc.name!r} (from {os.getcwd()})"
        ) from None
    except Exception as exc:
        raise UsageError(f"--schema {spec}: {_failure(exc)}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"--schema {spec}: {module_name} has no {attribute!r}") from None


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"--schema: no such file: {path}")
    loader = importlib.util.spec_from_file_location(path.stem, path)
    if loader is None or loader.loader is None:
        raise UsageError(f"--schema: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(loader)
    sys.modules[path.stem] = module
    loader.loader.exec_module(module)
    return module


def _failure(exc: BaseException) -> str:
    """An import's failure in one line, with the file and line where it happened."""
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class _ProgressBar:
    """A live progress bar on stderr: tqdm's when it is installed, else a plain line. The
    total is None when it is not known before the end (lines read as they arrive)."""

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self._last = 0.0
        self._tqdm: Any = None
        if enabled:
            try:
                tqdm = importlib.import_module("tqdm").tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, unit="doc", file=sys.stderr, dynamic_ncols=True)

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        tokens = progress.input_tokens + progress.output_tokens
        postfix = (
            f"items={progress.items} failed={progress.documents_failed} "
            f"in_flight={progress.in_flight} tokens={tokens} "
            f"rpm={progress.requests_per_minute:.0f}"
        )
        if self._tqdm is not None:
            self._tqdm.n = progress.documents_ended
            self._tqdm.set_postfix_str(postfix, refresh=False)
            self._tqdm.refresh()
            return
        now = time.monotonic()
        if now - self._last >= 0.5 or progress.documents_ended == self.total:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            print(
                f"\r{progress.documents_ended}{of} docs {postfix}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self, *, keep: bool = True) -> None:
        """End the bar; `keep=False` clears tqdm's (before an error message, say)."""
        if self._tqdm is not None:
            self._tqdm.leave = keep
            self._tqdm.close()
        elif self.enabled:
            print(file=sys.stderr)
