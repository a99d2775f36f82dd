"""A long document end to end: 1 MB read in chunks, cut answers continued, every item once.

    python benchmarks/bench_long.py [--json results.json] [--quick] [--loops asyncio,uvloop,trio]

The document: `--chars` characters (1,000,000 by default) of sentences, one mention
(`Name<i>`, all distinct) every ~100 characters. The model: the scripted server's
`ReadingModel`, in a process of its own (`serve`), which answers every mention in the text it
is sent, streamed as OpenAI chat streams it, and cuts its answer at the request's
`max_tokens` as a real model does. The client (one process per row, `client`) extracts
`Mention(quote: multitask.Quote)` from the whole document with `chunk_chars`,
`overlap_chars`, `max_continuations` and a `max_tokens` small enough that most chunks are cut
and continued, and checks that every mention came exactly once, at its place.

Then the same through a model that takes its time (`--paced` deltas a second per answer, on
a quarter of the text), with 1, 4 and 16 chunks read at once: the wall time that reading
side by side saves.

Reported per row (event loop, `chunk_concurrency`, `order`): requests made, items, wall time,
items a second, the client's CPU per item (its process only), and its peak memory: the
process's peak RSS growth over the run, and Python's peak allocation in a second run under
tracemalloc (the document itself, about 1 MB as a str, is allocated before either). Takes
about two minutes; the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

try:
    from run import _fmt, _table
except ImportError:  # run from elsewhere: the benchmarks folder on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import _fmt, _table

PATTERN = r"Name\d+"
CHUNK_CHARS = 8000
OVERLAP_CHARS = 200
MAX_TOKENS = 400  # about 1,600 characters of answer: most chunks' answers are cut


def document(chars: int) -> str:
    """About `chars` characters, one distinct mention every ~100."""
    parts: list[str] = []
    size = i = 0
    while size < chars:
        sentence = f"In part {i} of the record, Name{i} wrote that the work went on as planned."
        parts.append(sentence)
        size += len(sentence) + 1
        i += 1
    return " ".join(parts)[:chars]


def expected(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(PATTERN, text)]


# -- the server (`serve`) --------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    import anyio

    from multitask.testing import ReadingModel, Script, ScriptedModelServer

    script = Script(chunk_size=args.chunk_size, tokens_per_second=args.tokens_per_second)
    model = ReadingModel(PATTERN, script=script)

    async def main() -> None:
        async with ScriptedModelServer(model) as server:
            print(f"PORT {server.port}", flush=True)
            await anyio.sleep_forever()

    anyio.run(main)


class Server:
    """`serve` in a process of its own."""

    def __init__(self, chunk_size: int, tokens_per_second: float | None = None) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "serve"]
        command += ["--chunk-size", str(chunk_size)]
        if tokens_per_second is not None:
            command += ["--tokens-per-second", str(tokens_per_second)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"the reading model's server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- the client (`client`) -------------------------------------------------------------------


async def _extract(url: str, text: str, concurrency: int, order: str) -> tuple[list[Any], int]:
    from pydantic import BaseModel

    import multitask

    class Mention(BaseModel):
        quote: multitask.Quote

    async with multitask.Client(
        "openai:reader", base_url=url + "/v1", api_key="bench", max_tokens=MAX_TOKENS
    ) as client:
        async with client.extract_stream(
            Mention,
            text,
            chunk_chars=CHUNK_CHARS,
            overlap_chars=OVERLAP_CHARS,
            max_continuations=50,
            chunk_concurrency=concurrency,
            order=order,
        ) as stream:
            items = [m async for m in stream]
        return items, stream.info.attempts


def _run(loop: str, coro: Any) -> Any:
    import anyio

    if loop == "trio":
        return anyio.run(lambda: coro, backend="trio")
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    return anyio.run(lambda: coro, backend="asyncio", backend_options=options)


def client(args: argparse.Namespace) -> None:
    text = document(args.chars)
    want = expected(text)
    _run(args.loop, _extract(args.url, text[:20_000], args.concurrency, args.order))  # warm
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    items, requests = _run(args.loop, _extract(args.url, text, args.concurrency, args.order))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = [(m.quote.start, m.quote.end) for m in items]
    if args.order == "arrival":
        got.sort()
    if got != want:
        missing = len(set(want) - set(got))
        raise SystemExit(f"wrong items: {len(got)} for {len(want)} mentions, {missing} missing")
    tracemalloc.start()
    _run(args.loop, _extract(args.url, text, args.concurrency, args.order))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row = {
        "loop": args.loop,
        "chunk_concurrency": args.concurrency,
        "order": args.order,
        "chars": len(text),
        "mentions": len(want),
        "items": len(items),
        "requests": requests,
        "wall_s": wall,
        "items_per_s": len(items) / wall,
        "cpu_s": cpu,
        "cpu_us_per_item": cpu * 1e6 / len(items),
        "peak_rss_growth_mib": (rss_after - rss_before) / 1024,
        "peak_traced_mib": peak / 2**20,
    }
    Path(args.out).write_text(json.dumps(row))


# -- the run ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    configs = [(1, "document"), (4, "document"), (4, "arrival")]
    if args.quick:
        configs = configs[:2]
    runs = [(None, loop, c, o, args.chars) for loop in args.loops.split(",") for c, o in configs]
    if args.paced:
        # A model that takes its time (each answer streamed at `--paced` deltas a second):
        # what reading chunks side by side saves in wall time.
        chars = args.chars // 4
        runs += [(args.paced, "asyncio", c, "document", chars) for c in (1, 4, 16)]
    servers: dict[float | None, Server] = {}
    out = Path(f"/tmp/bench_long_{id(rows)}.json")
    try:
        for pace, loop, concurrency, order, chars in runs:
            if pace not in servers:
                servers[pace] = Server(args.chunk_size, pace)
            command = [sys.executable, str(Path(__file__).resolve()), "client"]
            command += [servers[pace].url, "--loop", loop, "--concurrency", str(concurrency)]
            command += ["--order", order, "--chars", str(chars), "--out", str(out)]
            subprocess.run(command, check=True, timeout=900)
            rows.append(json.loads(out.read_text()) | {"paced": pace})
    finally:
        for server in servers.values():
            server.stop()
        out.unlink(missing_ok=True)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    header = [
        "chars",
        "paced",
        "loop",
        "chunks at once",
        "order",
        "requests",
        "items",
        "wall s",
        "items / s",
        "CPU µs / item",
        "peak RSS growth MiB",
        "peak traced MiB",
    ]
    body = [
        [
            f"{r['chars']:,}",
            "no" if r.get("paced") is None else f"{r['paced']:,.0f} deltas/s",
            r["loop"],
            str(r["chunk_concurrency"]),
            r["order"],
            str(r["requests"]),
            f"{r['items']:,}",
            _fmt(r["wall_s"], 2),
            _fmt(r["items_per_s"]),
            _fmt(r["cpu_us_per_item"]),
            _fmt(r["peak_rss_growth_mib"]),
            _fmt(r["peak_traced_mib"]),
        ]
        for r in rows
    ]
    title = (
        f"chunk_chars={CHUNK_CHARS}, overlap_chars={OVERLAP_CHARS}, max_tokens={MAX_TOKENS} "
        "(answers cut and continued)"
    )
    return title + "\n\n" + _table(header, body, right_from=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--quick", action="store_true", help="two rows per loop")
    parser.add_argument("--loops", default="asyncio,uvloop,trio")
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=16, help="characters per delta")
    parser.add_argument(
        "--paced",
        type=float,
        default=2000.0,
        help="also a paced model at this many deltas a second, a quarter of the text (0: not)",
    )
    s = sub.add_parser("serve")
    s.add_argument("--chunk-size", type=int, default=16)
    s.add_argument("--tokens-per-second", type=float, default=None)
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--loop", default="asyncio")
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--order", default="document")
    c.add_argument("--chars", type=int, default=1_000_000)
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
        return 0
    if args.command == "client":
        client(args)
        return 0
    rows = measure(args)
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"long_document": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
