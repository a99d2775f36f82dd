"""Where validators run, measured: in the socket's callback (today) or in the caller's task.

    python benchmarks/bench_validators.py [--json results.json] [--only many|beside]

On multitask's own pool under asyncio and uvloop the user's validators run in the socket's
callback (`AsyncioSocket.buffer_updated` -> `ResponseBody._sink` -> the pipeline); under
trio in the task reading the stream. Against the timestamping scripted server (`_server.py`,
a process of its own), one client process per row, on asyncio, uvloop and trio:

* many streams (`--streams` concurrent, `--items` small items each), the item type's
  validation varied: `plain` (no validator of the user's), `noop` (a field validator that
  returns its value), `work` (validators doing what real ones do: normalising and checking
  the email and the name), and `work in caller`, which approximates moving validation into
  the caller's task: the stream's items are `dict[str, Any]` (the callback only parses) and
  the caller validates each with the `work` model. Reported: client CPU, CPU per item, what
  validating one item costs alone (the `TypeAdapter` call the pipeline makes, timed in this
  process), the loop's lag (a task asking to sleep 5 ms: how late it wakes) and how long each
  read holds the loop in the sink (framing, parsing, validating; wrapped in the client
  process only), over all reads and over the reads that completed an item (the only ones
  that validate);
* a slow stream beside fast ones (`--fast` streams of `--beside-items` plain items, started
  spread over one item's time, and one slow stream whose items cost 5 ms each): `alone` (no
  slow stream), `cpu 5 ms` (a validator spinning 5 ms of CPU), `sleep 5 ms` (a validator
  calling `time.sleep(0.005)`), `cpu in caller` (the same 5 ms of CPU in the caller's loop
  body, as moved validation would run it) and `sleep in thread` (the caller hands the 5 ms
  to `anyio.to_thread.run_sync`). Reported: the fast streams' item delay (the server handing
  an item's last byte to its socket -> the caller holding it validated), p50 and p99, and
  the loop's lag.

Takes about 2 minutes. The figures depend on the machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, field_validator

from _common import Small, available, percentile, small_item
from run import _fmt, _Server, _table

BACKENDS = ("asyncio", "uvloop", "trio")
MANY = ("plain", "noop", "work", "work in caller")
BESIDE = ("alone", "cpu 5 ms", "sleep 5 ms", "cpu in caller", "sleep in thread")
#: What one slow item costs.
SLOW_S = 0.005
#: How often the lag probe asks to wake (more often costs CPU the rows would count).
TICK_S = 0.005
#: About how many delta events a small item takes (60 characters, 4 a delta).
EVENTS_PER_ITEM = 16
_EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$")
_DOMAINS = frozenset({"example.com", "example.org"})


class Noop(Small):
    """`Small` with a field validator that does nothing: the cost of calling one."""

    @field_validator("email")
    @classmethod
    def _same(cls, v: str) -> str:
        return v


class Work(Small):
    """`Small` with validators doing what real ones do: normalise, match, look up."""

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        v = unicodedata.normalize("NFKC", v).strip().lower()
        if not _EMAIL.match(v) or v.rsplit("@", 1)[1] not in _DOMAINS:
            raise ValueError(f"not an address we accept: {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = " ".join(unicodedata.normalize("NFKC", v).split())
        if not v or not v.isprintable():
            raise ValueError("a name must be printable")
        return v


def _spin(seconds: float) -> None:
    """Hold the CPU (and the GIL) for `seconds`."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class SlowCPU(Small):
    """`Small` whose validator spins 5 ms of CPU."""

    @field_validator("email")
    @classmethod
    def _slow(cls, v: str) -> str:
        _spin(SLOW_S)
        return v


class SlowSleep(Small):
    """`Small` whose validator blocks 5 ms in `time.sleep`."""

    @field_validator("email")
    @classmethod
    def _slow(cls, v: str) -> str:
        time.sleep(SLOW_S)
        return v


# -- one client process ----------------------------------------------------------------------

Holds = list[tuple[float, bool]]


def _instrument() -> Holds:
    """Time every call of the transport's sink (what one read runs on the loop), in seconds,
    with whether it completed something (an item: then it validated it)."""
    from multitask import _transport

    holds: Holds = []
    sink = _transport.ResponseBody._sink
    clock = time.perf_counter

    def timed(self: Any, data: bytes) -> bool:
        start = clock()
        made = False
        try:
            made = sink(self, data)
            return made
        finally:
            holds.append((clock() - start, made))

    _transport.ResponseBody._sink = timed  # type: ignore[method-assign]
    return holds


def _slow_stream(scenario: str) -> tuple[Any, Callable[[Any], Any] | None]:
    """The slow stream's item type, and what the caller does with each of its items."""
    import anyio.to_thread

    if scenario == "cpu 5 ms":
        return SlowCPU, None
    if scenario == "sleep 5 ms":
        return SlowSleep, None
    if scenario == "cpu in caller":
        return Small, lambda item: _spin(SLOW_S)
    if scenario == "sleep in thread":
        return Small, lambda item: anyio.to_thread.run_sync(time.sleep, SLOW_S)
    raise ValueError(scenario)


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    import multitask

    holds = _instrument()
    received: list[tuple[str, float]] = []
    lags: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        clock = anyio.current_time
        while not done.is_set():
            start = clock()
            await anyio.sleep(TICK_S)
            lags.append(clock() - start - TICK_S)

    async def stream(
        client: multitask.Client,
        item_type: Any,
        items: int,
        sid: str,
        after: Callable[[Any], Any] | None = None,
        record: bool = True,
    ) -> None:
        prompt = f"Extract every item. bench:small:{items}:0:{sid}"
        async with client.extract_stream(item_type, prompt) as s:
            async for item in s:
                if after is not None:
                    item = after(item)
                    if hasattr(item, "__await__"):
                        item = await item
                if record:
                    key = item["name"] if isinstance(item, dict) else item.name
                    received.append((key, time.time()))

    url = args.url + "/v1"
    async with multitask.Client("openai:bench", base_url=url, api_key="test") as client:
        for model in (Small, Noop, Work, SlowCPU, SlowSleep, dict[str, Any]):
            await stream(client, model, 2, f"{args.run}-warm", record=False)
        received.clear()
        holds.clear()
        gc.collect()
        wall = time.perf_counter()
        cpu = time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async with anyio.create_task_group() as streams:
                if args.scenario in MANY:
                    models = {"plain": Small, "noop": Noop, "work": Work}
                    item_type: Any = models.get(args.scenario, dict[str, Any])
                    after = Work.model_validate if args.scenario == "work in caller" else None
                    for i in range(args.streams):
                        sid = f"{args.run}-{i}"
                        streams.start_soon(stream, client, item_type, args.items, sid, after)
                else:
                    n = args.beside_items
                    if args.scenario != "alone":
                        slow, then = _slow_stream(args.scenario)
                        # Started first and two items longer: beside the fast ones throughout.
                        sid = f"{args.run}-slow"
                        streams.start_soon(stream, client, slow, n + 2, sid, then, False)
                    # The server paces every stream alike: started together, all streams would
                    # complete their items at the same instants. Spread over one item's time.
                    period = EVENTS_PER_ITEM / args.tokens_per_second
                    for i in range(args.fast):
                        await anyio.sleep(period / args.fast)
                        streams.start_soon(stream, client, Small, n, f"{args.run}-{i}")
            done.set()
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
    return {"cpu": cpu, "wall": wall, "received": received, "lags": lags, "holds": holds}


def child_main(args: argparse.Namespace) -> int:
    """One row's client: run it on `args.backend`, write what it measured to `args.out`."""
    import anyio

    backend = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    result = anyio.run(_child, args, backend=backend, backend_options=options)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


# -- the driver -------------------------------------------------------------------------------


def run_one(
    server: _Server, tmp: Path, backend: str, scenario: str, args: argparse.Namespace, n: int
) -> dict[str, Any]:
    """One client process for one row; its figures, the delays read back from the server's log."""
    run = f"v{n}"
    out = tmp / f"{run}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", scenario]
    command += ["--backend", backend, "--url", server.url, "--run", run, "--out", str(out)]
    command += ["--streams", str(args.streams), "--items", str(args.items)]
    command += ["--fast", str(args.fast), "--beside-items", str(args.beside_items)]
    command += ["--tokens-per-second", str(args.tokens_per_second)]
    subprocess.run(command, check=True, timeout=600)
    result = json.loads(out.read_text(encoding="utf-8"))
    sent_at = {key: t for r in server.streams(run) for key, t in r["sent"]}
    delays = [(t - sent_at[key]) * 1e3 for key, t in result["received"] if key in sent_at]
    lags = [x * 1e3 for x in result["lags"]]
    holds = [x * 1e6 for x, _ in result["holds"]]
    item_holds = [x * 1e6 for x, made in result["holds"] if made]
    items = len(result["received"])
    return {
        "backend": backend,
        "scenario": scenario,
        "streams": args.streams if scenario in MANY else args.fast,
        "items": items,
        "client_cpu": result["cpu"],
        "wall": result["wall"],
        "cpu_us_per_item": result["cpu"] * 1e6 / items if items else None,
        "reads": len(holds),
        "hold_mean_us": sum(holds) / len(holds) if holds else None,
        "hold_p99_us": percentile(holds, 0.99),
        "hold_max_us": max(holds) if holds else None,
        "item_reads": len(item_holds),
        "item_hold_mean_us": sum(item_holds) / len(item_holds) if item_holds else None,
        "delay_p50_ms": percentile(delays, 0.50),
        "delay_p99_ms": percentile(delays, 0.99),
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": max(lags) if lags else None,
    }


def validation_cost(scenario: str, repeat: int = 20_000) -> float:
    """Microseconds to validate one small item as the pipeline does (`validate_python`)."""
    raw = small_item(7, name="v0-3:7")
    once: Callable[[], Any]
    if scenario == "work in caller":
        first, then = TypeAdapter(dict[str, Any]).validate_python, Work.model_validate

        def once() -> Any:
            return then(first(raw))

    else:
        model = {"plain": Small, "noop": Noop, "work": Work}[scenario]
        validate = TypeAdapter(model).validate_python

        def once() -> Any:
            return validate(raw)

    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat // 5):
            once()
        best = min(best, (time.perf_counter() - start) / (repeat // 5))
    return best * 1e6


def tables(rows: list[dict[str, Any]]) -> str:
    """The two tables, as Markdown."""
    many = [r for r in rows if r["scenario"] in MANY]
    beside = [r for r in rows if r["scenario"] in BESIDE]
    head1 = [
        "loop",
        "validation",
        "client CPU s",
        "CPU µs / item",
        "validating one item µs",
        "sink per read µs: mean / p99 / max",
        "mean on item reads",
        "loop lag p99 / max ms",
        "item delay p50 / p99 ms",
    ]
    body1 = [
        [
            r["backend"],
            r["scenario"],
            _fmt(r["client_cpu"], 2),
            _fmt(r["cpu_us_per_item"], 0),
            _fmt(r["validate_us"], 1),
            f"{_fmt(r['hold_mean_us'], 1)} / {_fmt(r['hold_p99_us'], 0)} / "
            f"{_fmt(r['hold_max_us'], 0)}",
            _fmt(r["item_hold_mean_us"], 1),
            f"{_fmt(r['lag_p99_ms'], 1)} / {_fmt(r['lag_max_ms'], 1)}",
            f"{_fmt(r['delay_p50_ms'], 1)} / {_fmt(r['delay_p99_ms'], 1)}",
        ]
        for r in many
    ]
    head2 = [
        "loop",
        "beside the fast streams",
        "fast items' delay p50 ms",
        "p99 ms",
        "loop lag p99 / max ms",
    ]
    body2 = [
        [
            r["backend"],
            r["scenario"],
            _fmt(r["delay_p50_ms"], 2),
            _fmt(r["delay_p99_ms"], 2),
            f"{_fmt(r['lag_p99_ms'], 1)} / {_fmt(r['lag_max_ms'], 1)}",
        ]
        for r in beside
    ]
    parts = []
    if many:
        title = f"{many[0]['streams']} concurrent streams of small items"
        parts.append(f"{title}:\n\n" + _table(head1, body1, right_from=2))
    if beside:
        title = f"{beside[0]['streams']} fast streams beside one slow stream"
        parts.append(f"{title}:\n\n" + _table(head2, body2, right_from=2))
    return "\n\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--streams", type=int, default=200, help="streams in the many rows")
    parser.add_argument("--items", type=int, default=10, help="small items per stream")
    parser.add_argument("--fast", type=int, default=20, help="fast streams beside the slow one")
    parser.add_argument("--beside-items", type=int, default=20, help="items per fast stream")
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--only", choices=["many", "beside"], help="one of the two tables")
    # A child process: one row's client.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.scenario = args.child
        return child_main(args)
    backends = [b for b in args.backends.split(",") if b != "uvloop" or available("uvloop")]
    scenarios = [*(MANY if args.only != "beside" else ()), *(BESIDE if args.only != "many" else ())]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="multitask-validators-") as tmp:
        server = _Server(Path(tmp) / "sent.jsonl", args.tokens_per_second)
        try:
            for scenario in scenarios:
                for backend in backends:
                    row = run_one(server, Path(tmp), backend, scenario, args, len(rows))
                    if scenario in MANY:
                        row["validate_us"] = validation_cost(scenario)
                    rows.append(row)
                    print(
                        f"{backend:<8} {scenario:<16} CPU {row['client_cpu']:.2f} s, delay p50 "
                        f"{_fmt(row['delay_p50_ms'], 2)} p99 {_fmt(row['delay_p99_ms'], 2)} ms, "
                        f"lag p99 {_fmt(row['lag_p99_ms'], 1)} ms",
                        flush=True,
                    )
        finally:
            server.stop()
    print()
    print(tables(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
