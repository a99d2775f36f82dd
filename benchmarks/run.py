"""The benchmark suite (issue #6): parser overhead, end to end over HTTP, memory.

    python benchmarks/run.py [--json results.json] [--quick] [--only parser,e2e,memory]

Every figure is measured in this run on this machine: CPU figures are process CPU time (best
of N runs for the in-memory ones), and comparisons are ratios. Peers that cannot be imported
(instructor, openai, anthropic, pydantic-ai, orjson) are skipped with a note; install them
with `pip install -e ".[bench]"`. `--quick` runs smaller sizes in a few minutes; the full
suite takes about ten.

1. Parser overhead: the same recorded-format streams (OpenAI tool-call and Anthropic
   `input_json_delta` SSE, one event per 4-character delta), fed event by event in memory.
2. End to end: the scripted model server in a separate process, paced at a realistic token
   rate, and each client in a fresh process; client CPU per 1,000 SSE events, and the delay
   from the server sending an item's last byte to the caller holding the validated item.
3. Memory: peak RSS of one stream of up to a million small items, a fresh process each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from _common import (
    PROVIDERS,
    Provider,
    Workload,
    available,
    cpu_best,
    parser_workloads,
    percentile,
    render,
)
from _contenders import (
    instructor_version,
    items_through,
    loaders,
    parsed_events,
    run_instructor,
    run_limit,
    run_multitask,
    run_multitask_parsed,
    run_reparse,
    sdk_objects,
)

HERE = Path(__file__).resolve().parent
SECTIONS = ("parser", "e2e", "memory")
Row = dict[str, Any]


def _note(notes: list[str], text: str) -> None:
    notes.append(text)
    print(f"note: {text}", flush=True)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- 1. parser overhead ----------------------------------------------------------------------


def parser_overhead(quick: bool, repeat: int, notes: list[str]) -> list[Row]:
    """Workload 1: CPU per item of each reader over the same in-memory SSE events."""
    with_instructor = instructor_version() is not None and available("openai")
    with_instructor = with_instructor and available("anthropic")
    if not with_instructor:
        _note(notes, "instructor (with the openai and anthropic SDKs) not importable: skipped")
    rows: list[Row] = []
    for provider in PROVIDERS:
        for work in parser_workloads(quick):
            rows.append(_parser_row(provider, work, repeat, with_instructor))
            _print_parser_row(rows[-1])
    return rows


def _parser_row(provider: Provider, work: Workload, repeat: int, with_instructor: bool) -> Row:
    events, answer = render(provider, work)
    n = len(work.items)
    model = work.model
    warm_events, _ = render(provider, Workload("w", "warm-up", model, work.items[:2]))
    run_multitask(provider, model, warm_events)
    run_reparse(provider, model, warm_events)

    mt = cpu_best(functools.partial(run_multitask, provider, model, events), repeat)
    assert mt.result == n, (mt.result, n)
    limits = {
        name: cpu_best(functools.partial(run_limit, provider, model, events, loads), repeat)
        for name, loads in loaders().items()
    }
    limit_name, limit = min(limits.items(), key=lambda kv: kv[1].best)
    reparse = cpu_best(functools.partial(run_reparse, provider, model, events), repeat, 2.0)
    assert reparse.result == n
    row: Row = {
        "stream": provider,
        "workload": work.label,
        "key": work.key,
        "items": n,
        "events": len(events),
        "answer_bytes": len(answer.encode()),
        "multitask_us_per_item": mt.best * 1e6 / n,
        "multitask_us_per_event": mt.best * 1e6 / len(events),
        "limit_us_per_item": limit.best * 1e6 / n,
        "limit_parser": limit_name,
        "limit_by_parser_us_per_item": {k: v.best * 1e6 / n for k, v in limits.items()},
        "reparse_us_per_item": reparse.best * 1e6 / n,
        "runs": {"multitask": mt.runs, "limit": limit.runs, "reparse": reparse.runs},
    }
    row["multitask_x_limit"] = mt.best / limit.best
    row["reparse_x_multitask"] = reparse.best / mt.best
    if with_instructor:
        # instructor rescans an item's text from its start at every event, so its cost per
        # item does not depend on how many items came before: a prefix of the stream gives
        # the same figure per item, and keeps a 64 KB string from taking minutes per run.
        k = n if work.key != "c" else 1
        prefix = events if k == n else events[: items_through(provider, model, events, k)]
        warm_chunks = sdk_objects(provider, warm_events)
        run_instructor(provider, model, warm_chunks)
        sdk = cpu_best(functools.partial(sdk_objects, provider, prefix), repeat, 2.0)
        chunks = sdk.result
        ins = cpu_best(functools.partial(run_instructor, provider, model, chunks), repeat, 2.0)
        assert ins.result == k, (ins.result, k)
        row.update(
            instructor_items_timed=k,
            instructor_us_per_item=ins.best * 1e6 / k,
            sdk_chunks_us_per_item=sdk.best * 1e6 / k,
        )
        row["runs"].update(instructor=ins.runs, sdk=sdk.runs)
        payloads = parsed_events(provider, events)
        run_multitask_parsed(provider, model, parsed_events(provider, warm_events))
        parsed = cpu_best(
            functools.partial(run_multitask_parsed, provider, model, payloads), repeat
        )
        assert parsed.result == n
        row["multitask_parsed_us_per_item"] = parsed.best * 1e6 / n
        row["instructor_sdk_us_per_item"] = (
            row["instructor_us_per_item"] + row["sdk_chunks_us_per_item"]
        )
        row["instructor_x_multitask"] = (
            row["instructor_us_per_item"] / row["multitask_parsed_us_per_item"]
        )
        row["instructor_sdk_x_multitask"] = (
            row["instructor_sdk_us_per_item"] / row["multitask_us_per_item"]
        )
    return row


def _print_parser_row(row: Row) -> None:
    print(
        f"  {row['stream']:<9} {row['workload']:<26} multitask {_fmt(row['multitask_us_per_item'])}"
        f" µs/item, {_fmt(row['multitask_x_limit'], 2)}x limit, re-parse "
        f"{_fmt(row['reparse_x_multitask'])}x, instructor "
        f"{_fmt(row.get('instructor_x_multitask'), 2)}x (+SDK "
        f"{_fmt(row.get('instructor_sdk_x_multitask'))}x)",
        flush=True,
    )


def parser_table(rows: list[Row]) -> str:
    """Workload 1 as a markdown table."""
    header = [
        "stream",
        "workload",
        "events",
        "multitask µs/item",
        "limit µs/item",
        "multitask ÷ limit",
        "re-parse µs/item",
        "re-parse ÷ multitask",
        "instructor + SDK µs/item",
        "÷ multitask",
        "multitask from parsed events µs/item",
        "instructor from SDK objects µs/item",
        "÷ multitask (parsed)",
    ]
    body = [
        [
            r["stream"],
            r["workload"],
            f"{r['events']:,}",
            _fmt(r["multitask_us_per_item"]),
            _fmt(r["limit_us_per_item"]),
            _fmt(r["multitask_x_limit"], 2),
            _fmt(r["reparse_us_per_item"]),
            _fmt(r["reparse_x_multitask"]),
            _fmt(r.get("instructor_sdk_us_per_item")),
            _fmt(r.get("instructor_sdk_x_multitask")),
            _fmt(r.get("multitask_parsed_us_per_item")),
            _fmt(r.get("instructor_us_per_item")),
            _fmt(r.get("instructor_x_multitask"), 2),
        ]
        for r in rows
    ]
    return _table(header, body, right_from=2)


# -- 2. end to end ---------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """CPU seconds used so far by another process (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _Server:
    """The timestamping scripted server (`_server.py`) in a process of its own."""

    def __init__(self, log: Path, tokens_per_second: float) -> None:
        self.log = log
        command = [sys.executable, str(HERE / "_server.py"), "--log", str(log)]
        command += ["--tokens-per-second", str(tokens_per_second)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def streams(self, run: str) -> list[Row]:
        """The log records of one client run's measured streams."""
        prefix = run + "-"
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            sid = record["sid"]
            if sid.startswith(prefix) and not sid.endswith("-warm"):
                out.append(record)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def end_to_end(quick: bool, tokens_per_second: float, notes: list[str]) -> list[Row]:
    """Workload 2: each client against the scripted server, at 1 and 200 concurrent streams."""
    contenders = ["multitask", "asyncio-protocol", "asyncio-bytes", "httpx-bytes"]
    if instructor_version() is not None and available("openai"):
        contenders.append("instructor")
    else:
        _note(notes, "instructor + openai not importable: end-to-end column skipped")
    if available("pydantic_ai") and available("openai"):
        contenders.append("pydantic-ai")
    else:
        _note(notes, "pydantic-ai not importable: end-to-end column skipped")
    small_items, long_size, field_size = (5, 1024, 8192) if quick else (20, 2048, 65536)
    # The string field of workload 1(c): one stream, and only the clients its target compares
    # with the floor (about 3 minutes each at 100 events a second); at 200 streams
    # instructor's cost per event, which grows with the string, would need an hour of CPU.
    field_contenders = [
        c for c in contenders if c in ("multitask", "asyncio-protocol", "instructor")
    ]
    # On uvloop (what uvicorn runs when it is installed): multitask, instructor and the floor.
    if available("uvloop"):
        on_uvloop = [c for c in contenders if c in ("multitask", "asyncio-protocol", "instructor")]
    else:
        on_uvloop = []
        _note(notes, "uvloop not importable: the uvloop rows skipped")
    configs = [
        # kind, items per stream, string size, concurrent streams, rounds, clients, on uvloop
        ("small", small_items, 0, 1, 2, contenders, on_uvloop),
        ("small", small_items, 0, 200, 1, contenders, on_uvloop),
        ("long", 1, long_size, 1, 1, contenders, on_uvloop),
        ("long", 1, long_size, 200, 1, contenders, on_uvloop),
        ("long", 1, field_size, 1, 1, field_contenders, []),
    ]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="multitask-bench-") as tmp:
        server = _Server(Path(tmp) / "sent.jsonl", tokens_per_second)
        try:
            for kind, items, size, streams, rounds, clients, uvloop_clients in configs:
                # One client process at a time, even for a single stream: processes run side
                # by side evict each other's caches between events, which raised every
                # figure 3-5x, unevenly (multitask's from the floor's to 1.5x it).
                runs = [(c, "asyncio") for c in clients] + [(c, "uvloop") for c in uvloop_clients]
                for contender, loop in runs:
                    job = (f"r{len(rows)}", contender, kind, items, size, streams, rounds)
                    row = _e2e_run(server, Path(tmp), *job, loop=loop)
                    row["tokens_per_second"] = tokens_per_second
                    rows.append(row)
                    _print_e2e_row(row)
        finally:
            server.stop()
    for row in rows:
        base = _same_workload(rows, "multitask", row)
        assert base is not None  # multitask runs every workload
        row["cpu_x_multitask"] = _ratio(row["cpu_per_1000_events"], base["cpu_per_1000_events"])
    return rows


def _same_workload(
    rows: list[Row], contender: str, row: Row, loop: str | None = None
) -> Row | None:
    """`contender`'s end-to-end row for `row`'s workload and number of streams, on `row`'s
    event loop (or on `loop`), if it ran."""
    key = (row["workload"], row["streams"], loop or row["loop"])
    return next(
        (
            r
            for r in rows
            if r["contender"] == contender and (r["workload"], r["streams"], r["loop"]) == key
        ),
        None,
    )


def _e2e_run(
    server: _Server,
    tmp: Path,
    run: str,
    contender: str,
    kind: str,
    items: int,
    size: int,
    streams: int,
    rounds: int,
    *,
    loop: str = "asyncio",
) -> Row:
    """Run one client process against the server, alone, on `loop` (asyncio or uvloop), and
    read back what it measured."""
    server_cpu = _proc_cpu(server.proc.pid)
    command = [sys.executable, str(HERE / "_e2e_client.py"), contender, server.url]
    command += ["--loop", loop, "--kind", kind, "--items", str(items), "--size", str(size)]
    command += ["--streams", str(streams), "--rounds", str(rounds), "--run", run]
    command += ["--out", str(tmp / f"{run}.json")]
    proc = subprocess.Popen(command)
    if proc.wait(timeout=900):
        raise RuntimeError(f"an end-to-end client failed: {proc.args!r}")
    after = _proc_cpu(server.proc.pid)
    result = json.loads((tmp / f"{run}.json").read_text(encoding="utf-8"))
    sent = server.streams(run)
    events = sum(r["events"] for r in sent)
    sent_at = {key: t for r in sent for key, t in r["sent"]}
    delays = [(t - sent_at[key]) * 1e3 for key, t in result["received"] if key in sent_at]
    used = after - server_cpu if after is not None and server_cpu is not None else None
    return {
        "contender": contender,
        "loop": loop,
        "kind": kind,
        "workload": f"{items} items of ~60 B"
        if kind == "small"
        else f"{items} item, {size:,} B string",
        "streams": streams,
        "rounds": rounds,
        "events": events,
        "items_expected": items * streams * rounds,
        "items_received": len(result["received"]),
        "errors": result["errors"],
        "client_cpu": result["cpu"],
        "wall": result["wall"],
        "cpu_per_1000_events": result["cpu"] * 1000 / events if events else None,
        "delay_p50_ms": percentile(delays, 0.50),
        "delay_p99_ms": percentile(delays, 0.99),
        "delay_max_ms": max(delays) if delays else None,
        "server_cpu_per_1000_events": _ratio(used, events / 1000),
    }


def _print_e2e_row(row: Row) -> None:
    print(
        f"  {row['workload']:<24} x{row['streams']:<4} {row['contender']:<12} "
        f"{row['loop']:<7} "
        f"{_fmt(row['cpu_per_1000_events'], 3)} CPU s/1000 events, item delay p50 "
        f"{_fmt(row['delay_p50_ms'], 2)} ms p99 {_fmt(row['delay_p99_ms'], 2)} ms, "
        + (
            ""
            if row["contender"].startswith(("asyncio-", "httpx-"))
            else f"{row['items_received']}/{row['items_expected']} items, "
        )
        + f"wall {row['wall']:.1f} s"
        + (f", errors {row['errors']}" if row["errors"] else ""),
        flush=True,
    )


def e2e_table(rows: list[Row]) -> str:
    """Workload 2 as a markdown table."""
    header = [
        "workload (per stream)",
        "concurrent streams",
        "client",
        "event loop",
        "SSE events",
        "client CPU s / 1000 events",
        "÷ multitask",
        "item delay p50 ms",
        "p99 ms",
        "wall s",
        "server CPU s / 1000 events",
    ]
    body = [
        [
            r["workload"],
            str(r["streams"]),
            r["contender"],
            r["loop"],
            f"{r['events']:,}",
            _fmt(r["cpu_per_1000_events"], 3),
            _fmt(r["cpu_x_multitask"], 2),
            _fmt(r["delay_p50_ms"], 2),
            _fmt(r["delay_p99_ms"], 2),
            _fmt(r["wall"], 1),
            _fmt(r["server_cpu_per_1000_events"], 3),
        ]
        for r in rows
    ]
    return _table(header, body, right_from=4)


def uvloop_table(rows: list[Row]) -> str:
    """What uvloop buys: each client's CPU per event and item delay on uvloop beside asyncio."""
    header = [
        "workload (per stream)",
        "concurrent streams",
        "client",
        "CPU s / 1000 events, asyncio",
        "uvloop",
        "uvloop ÷ asyncio",
        "item delay p99 ms, asyncio",
        "uvloop",
    ]
    body = []
    for r in rows:
        if r["loop"] != "uvloop":
            continue
        a = _same_workload(rows, r["contender"], r, loop="asyncio")
        if a is None:
            continue
        body.append(
            [
                r["workload"],
                str(r["streams"]),
                r["contender"],
                _fmt(a["cpu_per_1000_events"], 3),
                _fmt(r["cpu_per_1000_events"], 3),
                _fmt(_ratio(r["cpu_per_1000_events"], a["cpu_per_1000_events"]), 2),
                _fmt(a["delay_p99_ms"], 2),
                _fmt(r["delay_p99_ms"], 2),
            ]
        )
    return _table(header, body, right_from=3)


# -- 3. memory -------------------------------------------------------------------------------


def memory(quick: bool, notes: list[str]) -> list[Row]:
    """Workload 3: peak RSS for streams of growing size, each in a fresh process (two at once:
    peak RSS and CPU time are per process)."""
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    contenders: list[tuple[str, int]] = [("multitask", sizes[-1])]
    if instructor_version() is not None and available("openai"):
        # Its SDK chunk objects cost ~15 µs an event: a million items would take 4 minutes.
        contenders.append(("instructor", 100_000))
    else:
        _note(notes, "instructor + openai not importable: memory column skipped")
    # Collecting a million items' fragments takes 40 s to show what 100,000 already show.
    contenders += [("reparse", sizes[-1]), ("limit", 100_000)]
    jobs = [(c, n) for c, largest in contenders for n in sizes if n <= largest]
    jobs.sort(key=lambda job: -job[1])  # the longest first, to share the two cores best

    def measure(job: tuple[str, int]) -> tuple[str, int, subprocess.CompletedProcess[str]]:
        command = [sys.executable, str(HERE / "_memory.py"), job[0], str(job[1])]
        return job[0], job[1], subprocess.run(command, timeout=900, capture_output=True, text=True)

    rows: list[Row] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for contender, n, done in pool.map(measure, jobs):
            if done.returncode:
                error = (done.stderr.strip().splitlines() or ["?"])[-1]
                _note(notes, f"memory: {contender} at {n:,} items failed: {error}")
                continue
            row: Row = json.loads(done.stdout.strip().splitlines()[-1])
            row["peak_mib"] = row["peak_kib"] / 1024
            row["base_mib"] = row["base_kib"] / 1024
            rows.append(row)
            print(
                f"  {contender:<10} {n:>9,} items: peak RSS {row['peak_mib']:.1f} MiB "
                f"(before the stream {row['base_mib']:.1f}), {row['cpu']:.1f} s CPU",
                flush=True,
            )
    return rows


def memory_table(rows: list[Row]) -> str:
    """Workload 3 as a markdown table: peak RSS per stream size."""
    sizes = sorted({r["items"] for r in rows})
    names = {
        "multitask": "multitask",
        "instructor": "instructor (+ SDK chunks)",
        "reparse": "re-parse (jiter partial)",
        "limit": "collect, then validate",
    }
    header = ["reader", "before the stream MiB"] + [f"{n:,} items MiB" for n in sizes]
    header += ["largest ÷ 10,000"]
    body = []
    for contender, name in names.items():
        mine = {r["items"]: r for r in rows if r["contender"] == contender}
        if not mine:
            continue
        first, last = mine[min(mine)], mine[max(mine)]
        cells = [name, f"{first['base_mib']:.1f}"]
        cells += [f"{mine[n]['peak_mib']:.1f}" if n in mine else "—" for n in sizes]
        cells.append(f"{last['peak_mib'] / first['peak_mib']:.2f}")
        body.append(cells)
    return _table(header, body)


# -- targets ---------------------------------------------------------------------------------


def targets(parser: list[Row], e2e: list[Row], mem: list[Row]) -> list[Row]:
    """The issue's targets beside what this run measured."""
    out: list[Row] = []

    def add(
        name: str, measured: float | None, goal: float, at_least: bool, ceiling: float | None = None
    ) -> None:
        met = None if measured is None else measured >= goal if at_least else measured <= goal
        out.append(
            {"target": name, "goal": goal, "measured": measured, "met": met, "ceiling": ceiling}
        )

    for r in parser:
        where = f"{r['stream']} {r['key']}"
        add(f"parser {where}: multitask ÷ limit ≤ 3", r["multitask_x_limit"], 3, False)
        goal = {"a": 5.0, "c": 50.0}.get(r["key"])
        if goal is not None and "instructor_x_multitask" in r:
            for column, what in (
                ("instructor_sdk_x_multitask", "instructor + SDK, bytes in"),
                ("instructor_x_multitask", "instructor from SDK objects (parsed in)"),
            ):
                add(f"parser {where}: {what} ÷ multitask ≥ {goal:g}", r[column], goal, True)
    for r in e2e:
        if r["loop"] != "asyncio":  # the targets are set on asyncio; uvloop's are in table 2b
            continue
        where = f"e2e {r['workload']} x{r['streams']}"
        if r["contender"] == "instructor":
            goal = 5.0 if r["kind"] == "small" else 20.0
            # What no client could beat: instructor's CPU over the raw socket's, which
            # reads the same bytes and does nothing with them.
            floor = _same_workload(e2e, "asyncio-protocol", r)
            ceiling = (
                _ratio(r["cpu_per_1000_events"], floor["cpu_per_1000_events"]) if floor else None
            )
            add(
                f"{where}: instructor+SDK CPU ÷ multitask ≥ {goal:g}",
                r["cpu_x_multitask"],
                goal,
                True,
                ceiling,
            )
        if r["contender"] == "multitask" and r["streams"] >= 200:
            add(f"{where}: multitask item delay p99 < 5 ms", r["delay_p99_ms"], 5.0, False)
    mine = {r["items"]: r for r in mem if r["contender"] == "multitask"}
    if len(mine) >= 2:
        growth = mine[max(mine)]["peak_kib"] / mine[min(mine)]["peak_kib"]
        add(
            f"memory: multitask peak RSS {max(mine):,} ÷ {min(mine):,} items ≤ 1.10",
            growth,
            1.10,
            False,
        )
    return out


def targets_table(rows: list[Row]) -> str:
    """The targets as a markdown table."""
    body = [
        [
            r["target"],
            _fmt(r["measured"], 2),
            {True: "met", False: "missed", None: "n/a"}[r["met"]],
            "" if r.get("ceiling") is None else _fmt(r["ceiling"], 2),
        ]
        for r in rows
    ]
    return _table(["target", "measured", "", "best possible (the raw socket's ratio)"], body)


# -- main ------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {}
    for name in (
        "multitask",
        "pydantic",
        "pydantic-core",
        "ijson",
        "httpx",
        "jiter",
        "orjson",
        "instructor",
        "openai",
        "anthropic",
        "pydantic-ai-slim",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print their tables, and write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated: parser,e2e,memory"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per in-memory figure")
    parser.add_argument(
        "--tokens-per-second", type=float, default=100.0, help="server pace per stream (100)"
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    repeat = args.repeat or (3 if args.quick else 5)
    notes: list[str] = []
    started = time.perf_counter()
    results: Row = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "quick": args.quick,
            "repeat": repeat,
            "versions": _versions(),
        },
        "notes": notes,
    }
    if not available("orjson"):
        _note(notes, "orjson not importable: the limit uses pydantic_core.from_json only")

    sections: list[tuple[str, str]] = []
    parser_rows: list[Row] = []
    e2e_rows: list[Row] = []
    memory_rows: list[Row] = []
    load: dict[str, list[float]] = {}
    results["meta"]["load_average"] = load
    if "parser" in only:
        print(f"1. parser overhead (in memory, best of {repeat}, process CPU time)", flush=True)
        load["parser start"] = list(os.getloadavg())
        parser_rows = parser_overhead(args.quick, repeat, notes)
        load["parser end"] = list(os.getloadavg())
        results["parser"] = parser_rows
        sections.append(("1. Parser overhead: CPU per item, in memory", parser_table(parser_rows)))
    if "e2e" in only:
        print("2. end to end over HTTP (client process CPU time)", flush=True)
        load["e2e start"] = list(os.getloadavg())
        e2e_rows = end_to_end(args.quick, args.tokens_per_second, notes)
        load["e2e end"] = list(os.getloadavg())
        results["e2e"] = e2e_rows
        sections.append(("2. End to end over HTTP, scripted server", e2e_table(e2e_rows)))
        if any(r["loop"] == "uvloop" for r in e2e_rows):
            sections.append(("2b. The same on uvloop, beside asyncio", uvloop_table(e2e_rows)))
    if "memory" in only:
        print("3. memory (peak RSS, a fresh process per figure)", flush=True)
        load["memory start"] = list(os.getloadavg())
        memory_rows = memory(args.quick, notes)
        load["memory end"] = list(os.getloadavg())
        results["memory"] = memory_rows
        sections.append(("3. Memory: peak RSS of one stream", memory_table(memory_rows)))
    target_rows = targets(parser_rows, e2e_rows, memory_rows)
    results["targets"] = target_rows
    results["meta"]["seconds"] = time.perf_counter() - started

    print()
    for title, table in sections:
        print(f"{title}\n\n{table}\n")
    if target_rows:
        print(f"Targets\n\n{targets_table(target_rows)}\n")
    for note in notes:
        print(f"note: {note}")
    print(
        "load average (1 min) at each section's start and end: "
        + ", ".join(f"{k} {v[0]:.1f}" for k, v in load.items())
    )
    print(f"({results['meta']['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
