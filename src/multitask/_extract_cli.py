"""`multitask extract`: run `extract_many` over files or lines, writing JSON lines as they stream.

The output file is its own checkpoint. Each item is a line `{"key": ..., "item": {...}}`; each
document ends with `{"key": ..., "done": true, ...}` or `{"key": ..., "error": ...}`. Run again
with the same `--output` and the documents that finished are skipped, while the lines of any
that did not (cut off by Ctrl-C or a crash, or failed) are dropped and those documents run
again, so the file never holds an item twice.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import anyio
from pydantic import TypeAdapter

from ._client import Client
from ._many import Progress, Result

__all__ = ["add_extract_command", "run_extract"]


def add_extract_command(commands: Any) -> None:
    """Add `extract` to the command line's subcommands."""
    cmd = commands.add_parser(
        "extract",
        help="extract items from many documents, one JSON line per item",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "--schema",
        required=True,
        help="the item type: path/to/module.py:User or package.module:User",
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
    cmd.add_argument("--text-field", default="text", help="the text's field in JSON lines")
    cmd.add_argument("--key-field", help="the key's field in JSON lines (default: line number)")
    cmd.add_argument("--output", "-o", help="write here (and resume from it); default stdout")
    cmd.add_argument("--concurrency", type=int, default=32, help="documents in flight (32)")
    cmd.add_argument("--rpm", type=float, help="requests per minute limit")
    cmd.add_argument("--tpm", type=float, help="tokens per minute limit")
    cmd.add_argument("--max-retries", type=int, default=4, help="retries per document (4)")
    cmd.add_argument("--mode", help="tools, json_schema, json, functions, parallel_tools")
    cmd.add_argument("--max-tokens", type=int, help="output token limit per document")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run_extract(args: argparse.Namespace) -> int:
    item_type = load_schema(args.schema)
    output = Path(args.output) if args.output else None
    finished = prepare_output(output) if output else set()
    documents = [d for d in read_documents(args) if d[0] not in finished]
    skipped = len(finished)
    if skipped:
        print(f"resuming: {skipped} document(s) already done in {output}", file=sys.stderr)
    options: dict[str, Any] = {"max_retries": args.max_retries}
    if args.mode:
        options["mode"] = args.mode
    if args.max_tokens:
        options["max_tokens"] = args.max_tokens
    summary = anyio.run(_extract, args, item_type, documents, output, options)
    print(summary, file=sys.stderr)
    return 0


async def _extract(
    args: argparse.Namespace,
    item_type: Any,
    documents: list[tuple[str, str]],
    output: Path | None,
    options: dict[str, Any],
) -> str:
    adapter: TypeAdapter[Any] = TypeAdapter(item_type)
    out: IO[str] = output.open("a", encoding="utf-8") if output else sys.stdout
    bar = _ProgressBar(len(documents), enabled=not args.no_progress)
    interrupted = False
    start = time.monotonic()
    progress = Progress()
    try:
        async with (
            Client(
                args.model,
                base_url=args.base_url,
                max_concurrency=args.concurrency,
                rpm=args.rpm,
                tpm=args.tpm,
            ) as client,
            anyio.create_task_group() as tg,
        ):

            async def stop_on_signal() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            async with client.extract_many(
                item_type, documents, on_progress=bar.update, **options
            ) as results:
                progress = results.progress
                async for r in results:
                    out.write(_line(r, adapter) + "\n")
                    out.flush()
            tg.cancel_scope.cancel()
    finally:
        bar.close()
        if output:
            out.close()
    elapsed = time.monotonic() - start
    verb = "interrupted after" if interrupted else "done in"
    return (
        f"multitask extract: {verb} {elapsed:.1f}s: {progress.documents_done} document(s) "
        f"done, {progress.documents_failed} failed, {progress.items} item(s), "
        f"{progress.input_tokens} + {progress.output_tokens} tokens, "
        f"{progress.requests} request(s)"
        + (" (run again with the same --output to resume)" if interrupted else "")
    )


def _line(r: Result[Any], adapter: TypeAdapter[Any]) -> str:
    if not r.done:
        item = adapter.dump_python(r.item, mode="json")
        return json.dumps({"key": r.index, "item": item}, ensure_ascii=False)
    if r.error is not None:
        return json.dumps(
            {
                "key": r.index,
                "error": str(r.error),
                "error_type": type(r.error).__name__,
                "items": r.items,
            },
            ensure_ascii=False,
        )
    usage = (
        {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens}
        if r.usage
        else None
    )
    return json.dumps({"key": r.index, "done": True, "items": r.items, "usage": usage})


def prepare_output(path: Path) -> set[str]:
    """The keys already finished in `path`; drops the lines of documents that were not."""
    if not path.exists():
        return set()
    lines: list[tuple[str, dict[str, Any]]] = []
    finished: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if not isinstance(record, dict) or "key" not in record:
                continue
            key = str(record["key"])
            lines.append((key, record))
            if record.get("done"):
                finished.add(key)
    kept = [record for key, record in lines if key in finished]
    if len(kept) != len(lines):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in kept:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return finished


def read_documents(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(key, text) pairs: one per file, or per line of stdin / JSON-lines files."""
    if not args.inputs:
        yield from _lines(sys.stdin, "stdin", args)
        return
    for path in _paths(args.inputs):
        if args.jsonl:
            with path.open(encoding="utf-8") as f:
                yield from _lines(f, str(path), args)
        else:
            yield str(path), path.read_text(encoding="utf-8", errors="replace")


def _paths(inputs: list[str]) -> Iterator[Path]:
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif any(c in spec for c in "*?["):
            yield from sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            yield path


def _lines(f: IO[str], name: str, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        if not args.jsonl:
            yield f"{name}:{number}", line.rstrip("\n")
            continue
        record = json.loads(line)
        key = record.get(args.key_field) if args.key_field else f"{name}:{number}"
        yield str(key), str(record[args.text_field])


def load_schema(spec: str) -> Any:
    """`path/to/module.py:User` or `package.module:User` -> the `User` type."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise SystemExit(f"--schema must be module:Type or path.py:Type, not {spec!r}")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        loader = importlib.util.spec_from_file_location(path.stem, path)
        if loader is None or loader.loader is None:
            raise SystemExit(f"--schema: cannot load {path}")
        module = importlib.util.module_from_spec(loader)
        sys.modules[path.stem] = module
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise SystemExit(f"--schema: {module_name} has no {attribute!r}") from None


class _ProgressBar:
    """A live progress bar on stderr: tqdm's when it is installed, else a plain line."""

    def __init__(self, total: int, *, enabled: bool) -> None:
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
            print(
                f"\r{progress.documents_ended}/{self.total} docs {postfix}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            print(file=sys.stderr)
