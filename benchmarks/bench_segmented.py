"""Segmented streams (issue 16): SSE events split across reads at arbitrary points.

    python benchmarks/bench_segmented.py [--quick] [--json PATH] [--loops asyncio,uvloop]
    python benchmarks/bench_segmented.py profile [--mode random|whole] [--streams 50]
    python benchmarks/bench_segmented.py memory [--repeat 5]
    python benchmarks/bench_segmented.py compare OLD_SRC [NEW_SRC] [--repeat 5]

Real networks do not align TCP segments with SSE events. The server here (`serve`, a process
of its own) answers each OpenAI tool-call request with the stream `stream_plan` renders
(about 280 bytes an event, one event per 4-character delta) in chunked encoding, one HTTP
chunk per write and one write every `1 / --rate` seconds, cut one of two ways:

- `random`: pieces of a seeded random size in [150, 300] bytes, wherever they fall, so that
  most events arrive in two reads and most reads end inside an event;
- `whole`: one event per piece (what the end-to-end benchmark of `run.py` sends).

Each client runs in a fresh process (`client`), alone, and measures its own CPU time over
`--streams` concurrent streams (after one warm-up stream); every run is repeated
`--http-repeat` times, interleaved, and the least CPU kept:

- `multitask`: `Client("openai:bench").extract_stream(Small, ...)`, its own transport;
- `one-pass`: the least a reader of the same bytes can do: an asyncio protocol that keeps
  each read, then joins the body, strips the chunk framing, one `pydantic_core.from_json`
  per event and one validation of the whole answer (`TypeAdapter` of `{"tasks": list[T]}`);
  it delivers nothing until the end;
- `floor`: an asyncio protocol that drops each read (the event loop's own cost per read).

The figure is client CPU per stream and per 1,000 SSE events, and multitask ÷ one-pass for
each segmentation. The issue's goal: at most 1.5x on any segmentation.

`compare` measures two versions of multitask on this machine in one run: the multitask client
with `PYTHONPATH` set to each source folder (`src` of a worktree at another commit, say; the
second defaults to this checkout's), interleaved with the one-pass reader, `--repeat` times,
and prints the best and the median of each, as ms per stream and as ÷ one-pass.

`memory` runs the same comparison in memory (no sockets): `Extraction.feed_bytes` given
whole events or the random pieces, beside one C parse per event; it shows how much of the
gap is the sans-IO core's. `profile` runs the multitask client under cProfile in this process
against the server and prints the functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import functools
import gc
import json
import os
import platform
import pstats
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, TypeAdapter, create_model
from pydantic_core import from_json

from _common import CHUNK_SIZE, Small, available, cpu_best, request_body, small_item
from multitask.testing import Script
from multitask.testing._wire import Ids, response_headers, stream_plan

HERE = Path(__file__).resolve().parent
MODES = ("random", "whole")
PIECE = (150, 300)  # bytes per write in the random mode, both ends included
_SPEC = re.compile(rb"seg:(\d+):(random|whole):([\w.-]+):([\w.-]+)")
Row = dict[str, Any]
_LAST = b"0\r\n\r\n"  # the last chunk of a chunked body
_END = b"\r\n" + _LAST  # ... after the chunk before it
_READ_BUFFER = 65536


# -- the bytes ---------------------------------------------------------------------------------


def pieces(events: Sequence[bytes], mode: str, seed: str) -> list[bytes]:
    """The stream cut for sending: one event per piece, or seeded random sizes in `PIECE`."""
    if mode == "whole":
        return list(events)
    blob = b"".join(events)
    rng = random.Random(seed)
    out = []
    at = 0
    while at < len(blob):
        size = rng.randint(*PIECE)
        out.append(blob[at : at + size])
        at += size
    return out


def chunked(piece: bytes) -> bytes:
    """One HTTP/1.1 chunk holding `piece`."""
    return b"%x\r\n%s\r\n" % (len(piece), piece)


def prompt(items: int, mode: str, seed: str, sid: str) -> str:
    """The user message that tells the server what to answer and how to cut it."""
    return f"Extract every item. seg:{items}:{mode}:{seed}:{sid}"


# -- the server (`serve`) ----------------------------------------------------------------------


@functools.cache
def _events(shape: str, items: int) -> tuple[bytes, ...]:
    """The events answering a request of this shape (its body without the messages)."""
    body = json.loads(shape)
    script = Script(items=[small_item(k) for k in range(items)], chunk_size=CHUNK_SIZE)
    plan = stream_plan("openai", body, script, ids=Ids(1), now=0)
    return tuple(chunk.data for chunk in plan.chunks)


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float, log: TextIO
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            raw = await reader.readexactly(int(length.group(1)) if length else 0)
            body = json.loads(raw)
            spec = _SPEC.search(raw)
            if spec is None:
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                continue
            items, mode, seed, sid = (g.decode() for g in spec.groups())
            shape = json.dumps({k: v for k, v in body.items() if k != "messages"}, sort_keys=True)
            events = _events(shape, int(items))
            cut = pieces(events, mode, seed)
            headers = response_headers("openai", request_id=f"req_{sid}", content_type="stream")
            lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers), "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            for piece in cut:
                await asyncio.sleep(interval)
                writer.write(chunked(piece))
                await writer.drain()
            writer.write(_LAST)
            await writer.drain()
            record = {"sid": sid, "events": len(events), "pieces": len(cut)}
            log.write(json.dumps(record | {"bytes": sum(map(len, events))}) + "\n")
            log.flush()
    except ConnectionError:
        return
    finally:
        writer.close()


async def _serve(args: argparse.Namespace, log: TextIO) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    handler = functools.partial(_serve_connection, interval=1 / args.rate, log=log)
    server = await asyncio.start_server(handler, "127.0.0.1", args.port, backlog=1024)
    async with server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await stop


# -- the clients (`client`) --------------------------------------------------------------------

Runner = Callable[[str], Awaitable[int]]


@functools.cache
def _answer_adapter(model: type[BaseModel]) -> TypeAdapter[Any]:
    """The whole answer's adapter: `{"tasks": list[T]}`."""
    items: Any = list[model]  # type: ignore[valid-type]
    return TypeAdapter(create_model(f"{model.__name__}Answer", tasks=(items, ...)))


def _fragment(obj: Any) -> str:
    """The answer text one OpenAI chunk carries ('' for none)."""
    for choice in obj.get("choices") or ():
        for call in (choice.get("delta") or {}).get("tool_calls") or ():
            return str(call["function"].get("arguments") or "")
    return ""


def one_pass(response: bytes, model: type[BaseModel]) -> list[Any]:
    """A whole chunked SSE response (head included) read in one pass: the items at the end."""
    at = response.index(b"\r\n\r\n") + 4
    if not response.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(response[:at].decode("latin-1"))
    parts = []
    while True:
        eol = response.index(b"\r\n", at)
        size = int(response[at:eol], 16)
        if not size:
            break
        parts.append(response[eol + 2 : eol + 2 + size])
        at = eol + 4 + size
    fragments = []
    for event in b"".join(parts).split(b"\n\n"):
        if event.startswith(b"data: ") and event != b"data: [DONE]":
            fragments.append(_fragment(from_json(event[6:])))
    return list(_answer_adapter(model).validate_json("".join(fragments)).tasks)


def _request(url: str, model: type[BaseModel], text: str) -> bytes:
    body = request_body("openai", model) | {"messages": [{"role": "user", "content": text}]}
    raw = json.dumps(body).encode()
    host = url.removeprefix("http://")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


async def _one_pass(url: str, model: type[BaseModel], keep: bool) -> tuple[Runner, Any]:
    """A connection per stream; `keep` keeps every read and parses at the end, else drops."""
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    view = memoryview(bytearray(_READ_BUFFER))  # one for every connection, as multitask's

    class Collect(asyncio.BufferedProtocol):
        """Read into one buffer (asyncio's plain `Protocol` allocates 256 KiB a read)."""

        def __init__(self) -> None:
            self.parts: list[bytes] = []
            self.done = loop.create_future()

        def get_buffer(self, sizehint: int) -> memoryview:
            return view

        def buffer_updated(self, nbytes: int) -> None:
            if keep:
                self.parts.append(view[:nbytes].tobytes())
            # The last chunk is written on its own, after a chunk's `\r\n` (no event holds a
            # `\r`, and the head ends in a header, not a chunk).
            tail = view[max(0, nbytes - len(_END)) : nbytes]
            if tail in (_END, _LAST) and not self.done.done():
                self.done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_exception(exc or ConnectionError("closed early"))

    async def run(text: str) -> int:
        transport, protocol = await loop.create_connection(Collect, host, int(port))
        transport.write(_request(url, model, text))
        await protocol.done
        transport.close()
        return len(one_pass(b"".join(protocol.parts), model)) if keep else 0

    return run, None


async def _multitask(url: str, model: type[BaseModel]) -> tuple[Runner, Any]:
    import multitask

    client = multitask.Client("openai:bench", base_url=url + "/v1", api_key="test")
    await client.__aenter__()

    async def run(text: str) -> int:
        n = 0
        stream: Any = client.extract_stream(model, text)
        async with stream:
            async for _ in stream:
                n += 1
        return n

    return run, client.aclose


Opener = Callable[[str, type[BaseModel]], Awaitable[tuple[Runner, Any]]]
CLIENTS: dict[str, Opener] = {
    "multitask": _multitask,
    "one-pass": functools.partial(_one_pass, keep=True),
    "floor": functools.partial(_one_pass, keep=False),
}


async def _client_main(args: argparse.Namespace) -> Row:
    run, close = await CLIENTS[args.contender](args.url, Small)
    await run(prompt(2, args.mode, "warm", f"{args.run}-warm"))  # schemas, a connection
    gc.collect()
    wall = time.perf_counter()
    cpu = time.process_time()
    counts: list[Any] = []
    for r in range(args.rounds):
        counts += await asyncio.gather(
            *(
                run(prompt(args.items, args.mode, f"{args.seed}-{r}.{i}", f"{args.run}-{r}.{i}"))
                for i in range(args.streams)
            ),
            return_exceptions=True,
        )
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    if close is not None:
        await close()
    errors = [repr(c) for c in counts if isinstance(c, BaseException)]
    items = sum(c for c in counts if isinstance(c, int))
    return {"cpu": cpu, "wall": wall, "items": items, "errors": errors[:5]}


def _loop_factory(loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


# -- the run -----------------------------------------------------------------------------------


class Server:
    """`serve` in a process of its own."""

    def __init__(self, log: Path, rate: float) -> None:
        self.log = log
        command = [sys.executable, str(Path(__file__).resolve()), "serve", "--log", str(log)]
        self.proc = subprocess.Popen([*command, "--rate", str(rate)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"the segmented server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def streams(self, run: str) -> list[Row]:
        """The log records of one client run's measured streams."""
        records = (json.loads(line) for line in self.log.read_text().splitlines())
        return [r for r in records if r["sid"].startswith(run + "-") and "warm" not in r["sid"]]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _client_run(server: Server, tmp: Path, job: Row, seed: int, *, src: str | None = None) -> Row:
    out = tmp / f"{job['run']}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "client", job["contender"]]
    command += [server.url, "--mode", job["mode"], "--items", str(job["items"])]
    command += ["--streams", str(job["streams"]), "--rounds", str(job["rounds"])]
    command += ["--loop", job["loop"], "--run", job["run"], "--seed", str(seed)]
    command += ["--out", str(out)]
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    if subprocess.run(command, timeout=900, env=env).returncode:
        raise RuntimeError(f"a segmented client failed: {command!r}")
    result = json.loads(out.read_text())
    sent = server.streams(job["run"])
    events = sum(r["events"] for r in sent)
    n = job["streams"] * job["rounds"]
    row = job | {
        "client_cpu": result["cpu"],
        "wall": result["wall"],
        "items_received": result["items"],
        "errors": result["errors"],
        "events": events,
        "pieces": sum(r["pieces"] for r in sent),
        "cpu_ms_per_stream": result["cpu"] * 1e3 / n,
        "cpu_per_1000_events": result["cpu"] * 1e3 / events if events else None,
    }
    expected = 0 if job["contender"] == "floor" else job["items"] * n
    if result["errors"] or row["items_received"] != expected or len(sent) != n:
        raise RuntimeError(f"a segmented run went wrong: {row}")
    return row


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def run_http(args: argparse.Namespace) -> list[Row]:
    """Every client, segmentation and loop against one server, one client process at a time;
    each `--http-repeat` times, interleaved, keeping each one's least CPU (the run the machine
    disturbed least)."""
    loops = [s for s in args.loops.split(",") if s]
    if "uvloop" in loops and not available("uvloop"):
        loops.remove("uvloop")
        print("note: uvloop not importable: its rows skipped", flush=True)
    configs = [(args.streams, 1)] + ([] if args.quick else [(1, 2)])
    best: dict[tuple[Any, ...], Row] = {}
    runs = 0
    with tempfile.TemporaryDirectory(prefix="multitask-seg-") as tmp:
        server = Server(Path(tmp) / "sent.jsonl", args.rate)
        try:
            for attempt in range(args.http_repeat):  # interleaved: drift hits every client
                for streams, rounds in configs:
                    for loop in loops:
                        for mode in MODES:
                            for contender in CLIENTS:
                                job = {
                                    "run": f"r{runs}",
                                    "contender": contender,
                                    "mode": mode,
                                    "loop": loop,
                                    "streams": streams,
                                    "rounds": rounds,
                                    "items": args.items,
                                }
                                runs += 1
                                r = _client_run(server, Path(tmp), job, args.seed)
                                key = (streams, loop, mode, contender)
                                if key not in best or r["client_cpu"] < best[key]["client_cpu"]:
                                    best[key] = r | {"runs": attempt + 1}
                                best[key]["runs"] = attempt + 1
                                print(
                                    f"  [{attempt + 1}/{args.http_repeat}] x{streams:<4} "
                                    f"{loop:<7} {mode:<6} {contender:<9} "
                                    f"{r['cpu_ms_per_stream']:.2f} ms/stream, "
                                    f"{r['cpu_per_1000_events']:.3f} s/1000 events "
                                    f"({r['pieces']:,} pieces, {r['events']:,} events)",
                                    flush=True,
                                )
        finally:
            server.stop()
    rows = list(best.values())
    for row in rows:
        key = (row["streams"], row["loop"], row["mode"])
        base = next(
            r
            for r in rows
            if r["contender"] == "one-pass" and (r["streams"], r["loop"], r["mode"]) == key
        )
        row["x_one_pass"] = row["client_cpu"] / base["client_cpu"]
    return rows


def http_table(rows: list[Row]) -> str:
    """The HTTP rows as a markdown table."""
    body = [
        [
            f"x{r['streams']}",
            r["loop"],
            r["mode"],
            r["contender"],
            f"{r['pieces']:,}",
            f"{r['events']:,}",
            _fmt(r["cpu_ms_per_stream"], 2),
            _fmt(r["cpu_per_1000_events"]),
            _fmt(r["x_one_pass"], 2),
        ]
        for r in rows
    ]
    header = ["streams", "loop", "cut", "client", "pieces", "events", "CPU ms / stream"]
    return _table([*header, "CPU s / 1000 events", "÷ one-pass"], body)


# -- in memory (`memory`) ----------------------------------------------------------------------


def memory_streams(items: int, seed: str = "mem") -> dict[str, list[bytes]]:
    """The benchmark's OpenAI stream, whole events and random pieces, as the server cuts it."""
    body = request_body("openai", Small)
    shape = json.dumps(body, sort_keys=True)
    events = list(_events(shape, items))
    return {mode: pieces(events, mode, seed) for mode in MODES}


def feed_multitask(model: type[BaseModel], chunks: Sequence[bytes]) -> int:
    """`Extraction.feed_bytes` per chunk, as the client's sink calls it."""
    from multitask import MultiTask
    from multitask._providers import OpenAIChatDecoder

    extraction = MultiTask(model).extraction(OpenAIChatDecoder("tool"))
    feed = extraction.feed_bytes
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    n += len(extraction.close())
    extraction.raise_for_outcome()
    return n


def one_pass_memory(model: type[BaseModel], chunks: Sequence[bytes]) -> int:
    """The one-pass reader on bytes already in memory (no chunk framing to strip)."""
    fragments = []
    for event in b"".join(chunks).split(b"\n\n"):
        if event.startswith(b"data: ") and event != b"data: [DONE]":
            fragments.append(_fragment(from_json(event[6:])))
    return len(_answer_adapter(model).validate_json("".join(fragments)).tasks)


def run_memory(items: int, repeat: int) -> list[Row]:
    """multitask and one-pass over the same bytes, whole events and random pieces."""
    streams = memory_streams(items)
    events = len(streams["whole"])
    feed_multitask(Small, memory_streams(2)["random"])
    one_pass_memory(Small, streams["whole"])
    rows = []
    limit = cpu_best(functools.partial(one_pass_memory, Small, streams["whole"]), repeat)
    for mode, chunks in streams.items():
        mt = cpu_best(functools.partial(feed_multitask, Small, chunks), repeat)
        assert mt.result == items, (mt.result, items)
        rows.append(
            {
                "mode": mode,
                "chunks": len(chunks),
                "events": events,
                "multitask_us_per_event": mt.best * 1e6 / events,
                "one_pass_us_per_event": limit.best * 1e6 / events,
                "x_one_pass": mt.best / limit.best,
            }
        )
        r = rows[-1]
        print(
            f"  in memory {mode:<6} multitask {r['multitask_us_per_event']:.2f} µs/event, "
            f"one-pass {r['one_pass_us_per_event']:.2f}, {r['x_one_pass']:.2f}x",
            flush=True,
        )
    return rows


def memory_table(rows: list[Row]) -> str:
    """The in-memory rows as a markdown table."""
    body = [
        [
            r["mode"],
            f"{r['chunks']:,}",
            f"{r['events']:,}",
            _fmt(r["multitask_us_per_event"], 2),
            _fmt(r["one_pass_us_per_event"], 2),
            _fmt(r["x_one_pass"], 2),
        ]
        for r in rows
    ]
    header = ["cut", "feeds", "events", "multitask µs/event", "one-pass µs/event"]
    return _table([*header, "÷ one-pass"], body)


# -- profile -----------------------------------------------------------------------------------


def _profile(args: argparse.Namespace) -> int:
    """cProfile the multitask client in this process against the server, or in memory."""
    profile = cProfile.Profile()
    if args.in_memory:
        chunks = memory_streams(args.items)[args.mode]
        feed_multitask(Small, chunks)
        profile.enable()
        for _ in range(args.rounds):
            feed_multitask(Small, chunks)
        profile.disable()
        events = len(memory_streams(args.items)["whole"]) * args.rounds
    else:
        with tempfile.TemporaryDirectory(prefix="multitask-seg-") as tmp:
            server = Server(Path(tmp) / "sent.jsonl", args.rate)
            try:
                events = _profile_http(args, server, profile)
            finally:
                server.stop()
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"{args.mode}: {events:,} events, {total * 1e6 / events:.2f} µs/event profiled")
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


def _profile_http(args: argparse.Namespace, server: Server, profile: cProfile.Profile) -> int:
    async def main() -> None:
        run, close = await _multitask(server.url, Small)
        await run(prompt(2, args.mode, "warm", "p-warm"))
        profile.enable()
        await asyncio.gather(
            *(
                run(prompt(args.items, args.mode, f"{args.seed}-0.{i}", f"p-0.{i}"))
                for i in range(args.streams)
            )
        )
        profile.disable()
        await close()

    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        runner.run(main())
    return sum(r["events"] for r in server.streams("p"))


# -- main --------------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> int:
    """Two sources of multitask, interleaved, against the same server (see the docstring)."""
    here = str(HERE.parent / "src")
    sources = {"old": args.old, "new": args.new or here}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    runs = 0
    with tempfile.TemporaryDirectory(prefix="multitask-cmp-") as tmp:
        server = Server(Path(tmp) / "sent.jsonl", args.rate)
        try:
            for _ in range(args.repeat):
                for loop in args.loops.split(","):
                    for mode in MODES:
                        for name, src in [*sources.items(), ("one-pass", here)]:
                            contender = "one-pass" if name == "one-pass" else "multitask"
                            runs += 1
                            job = {
                                "run": f"c{runs}",
                                "contender": contender,
                                "mode": mode,
                                "loop": loop,
                                "streams": args.streams,
                                "rounds": 1,
                                "items": args.items,
                            }
                            row = _client_run(server, Path(tmp), job, args.seed, src=src)
                            cpu.setdefault((loop, mode, name), []).append(row["cpu_ms_per_stream"])
        finally:
            server.stop()
    body = []
    for (loop, mode, name), values in sorted(cpu.items()):
        values.sort()
        base = sorted(cpu[(loop, mode, "one-pass")])
        best, median = values[0], values[len(values) // 2]
        body.append(
            [
                loop,
                mode,
                name if name == "one-pass" else f"{name}: {sources[name]}",
                f"{best:.2f}",
                f"{median:.2f}",
                f"{best / base[0]:.2f}",
                f"{median / base[len(base) // 2]:.2f}",
            ]
        )
    header = ["loop", "cut", "client", "best ms / stream", "median", "best ÷ one-pass", "median"]
    print(f"x{args.streams} streams, {args.repeat} runs each\n\n{_table(header, body)}")
    return 0


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=20, help="small items per stream (20)")
    parser.add_argument("--seed", type=int, default=16, help="seeds the random cuts (16)")
    parser.add_argument("--rate", type=float, default=100.0, help="writes a second (100)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench", help="the whole benchmark (the default)")
    for p in (parser, bench):
        _common_args(p)
        p.add_argument("--quick", action="store_true", help="fewer streams, one config")
        p.add_argument("--json", help="write every figure to this JSON file")
        p.add_argument("--streams", type=int, default=None, help="concurrent streams (100)")
        p.add_argument("--loops", default="asyncio,uvloop", help="comma-separated")
        p.add_argument("--repeat", type=int, default=5, help="runs per in-memory figure")
        p.add_argument(
            "--http-repeat", type=int, default=3, help="runs per HTTP figure, the best kept (3)"
        )
    serve = sub.add_parser("serve", help="the server (run by the benchmark)")
    serve.add_argument("--log", required=True)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--rate", type=float, default=100.0)
    client = sub.add_parser("client", help="one client run (run by the benchmark)")
    client.add_argument("contender", choices=sorted(CLIENTS))
    client.add_argument("url")
    client.add_argument("--mode", choices=MODES, default="random")
    client.add_argument("--items", type=int, default=20)
    client.add_argument("--streams", type=int, default=100)
    client.add_argument("--rounds", type=int, default=1)
    client.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    client.add_argument("--run", default="r")
    client.add_argument("--seed", type=int, default=16)
    client.add_argument("--out", required=True)
    prof = sub.add_parser("profile", help="cProfile multitask's client on one cut")
    _common_args(prof)
    prof.add_argument("--mode", choices=MODES, default="random")
    prof.add_argument("--streams", type=int, default=50)
    prof.add_argument("--rounds", type=int, default=20, help="in-memory runs")
    prof.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    prof.add_argument("--top", type=int, default=30)
    prof.add_argument("--in-memory", action="store_true", help="feed_bytes, no sockets")
    cmp = sub.add_parser("compare", help="two sources of multitask, interleaved")
    _common_args(cmp)
    cmp.add_argument("old", help="a source folder of multitask (holding multitask/)")
    cmp.add_argument("new", nargs="?", help="another (default: this checkout's src)")
    cmp.add_argument("--repeat", type=int, default=5, help="runs of each (5)")
    cmp.add_argument("--streams", type=int, default=100, help="concurrent streams (100)")
    cmp.add_argument("--loops", default="asyncio,uvloop", help="comma-separated")
    mem = sub.add_parser("memory", help="the in-memory comparison only")
    mem.add_argument("--items", type=int, default=200)
    mem.add_argument("--repeat", type=int, default=5)
    return parser


def _bench(args: argparse.Namespace) -> int:
    args.streams = args.streams or (50 if args.quick else 100)
    started = time.perf_counter()
    load = [os.getloadavg()[0]]
    print("in memory (best of --repeat, process CPU time)", flush=True)
    mem = run_memory(args.items * 10, 3 if args.quick else args.repeat)
    print("over HTTP (client process CPU time)", flush=True)
    rows = run_http(args)
    load.append(os.getloadavg()[0])
    seconds = time.perf_counter() - started
    print(f"\nIn memory\n\n{memory_table(mem)}\n\nOver HTTP\n\n{http_table(rows)}\n")
    print(f"load average (1 min) at start and end: {load[0]:.1f}, {load[1]:.1f} ({seconds:.0f} s)")
    if args.json:
        meta = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": load,
            "seconds": seconds,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
        }
        results = {"meta": meta, "memory": mem, "http": rows}
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch: the benchmark, or one of its parts."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        loop = "uvloop" if available("uvloop") else "asyncio"  # the less CPU it takes the better
        with (
            Path(args.log).open("a", encoding="utf-8") as log,
            asyncio.Runner(loop_factory=_loop_factory(loop)) as runner,
        ):
            runner.run(_serve(args, log))
        return 0
    if args.command == "client":
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            result = runner.run(_client_main(args))
        Path(args.out).write_text(json.dumps(result), encoding="utf-8")
        return 0
    if args.command == "profile":
        return _profile(args)
    if args.command == "compare":
        return compare(args)
    if args.command == "memory":
        run_memory(args.items, args.repeat)
        return 0
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
