"""What one `ItemUpdated` snapshot costs, and the longest step of an `extract_events` stream.

A snapshot of the item in progress is a deep copy, so it costs in proportion to the values the
item holds: an 800 KB item took 12-69 ms, a stall of the event loop at every update. Past
`max_snapshot_values` (10,000 by default) `PartialTaskParser.update()` makes none until the
item is done. For each item shape, this measures (CPU time, best of `--repeat`):

* `update()`: what the parser spends on the automatic update after a small change to the item
  in progress (a copy, or nothing past the cap),
* `snapshot()`: an explicit copy, whatever the size (unchanged: the cap is on updates),
* the longest `PartialExtraction.feed_bytes` while the item is in progress (the whole item
  streamed in 4 KB deltas with `min_interval=0`: an update at every chunk), the loop's
  longest step; then the feed that completes the item (its validation, not a snapshot) and
  the whole stream. The collector is off while streams are timed: its pauses grow with every
  object alive in the process (see README's "Known limits"), not with what a feed does.

    python benchmarks/bench_snapshot.py [--json results.json] [--repeat 5]

It runs against whichever multitask is importable, so the same script measures the code
before a change (`PYTHONPATH=old/src`) and after it.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from multitask._partial import PartialTaskParser
from multitask._providers import OpenAIChatDecoder
from multitask.lowlevel import PartialExtraction


@dataclass
class Shape:
    name: str
    head: str  # the answer up to the item in progress, and its text so far
    change: str  # a small piece that changes the item
    rest: str  # what closes the item and the answer


def shapes() -> list[Shape]:
    rows = ", ".join(f'{{"id": {i}, "tag": "r{i}"}}' for i in range(33_000))
    flat = ", ".join(f'"key{i}": {i}' for i in range(40_000))
    at_cap = ", ".join(str(i) for i in range(9_990))
    return [
        Shape(
            "small item (3 fields)",
            '{"tasks": [{"name": "Ada", "age": 36',
            ', "x": 1, "y": 2',
            "}]}",
        ),
        Shape("64 KB string being written", '{"tasks": [{"body": "' + "x" * 65_536, "yz", '"}]}'),
        Shape("10,000 values (the cap)", '{"tasks": [{"v": [' + at_cap, ", 1, 2", "]}]}"),
        Shape("800 KB item, 33,000 rows", '{"tasks": [{"rows": [' + rows, ", 1, 2", "]}]}"),
        Shape("800 KB item, 40,000 keys", '{"tasks": [{' + flat, ', "k": 1, "l": 2', "}]}"),
        Shape(
            "100 KB nested 50,000 deep", '{"tasks": [' + "[" * 50_000, "1, 2", "]" * 50_000 + "]}"
        ),
    ]


def supported(make: Callable[..., Any], **options: Any) -> dict[str, Any]:
    """The options `make` takes (an older multitask takes fewer)."""
    names = inspect.signature(make).parameters
    return {k: v for k, v in options.items() if k in names}


DEEP = {"max_depth": 1_000_000}


def cpu(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def measure_update(shape: Shape, repeat: int) -> dict[str, Any]:
    best_update, best_snapshot, made = float("inf"), float("inf"), False
    for _ in range(repeat):
        parser = PartialTaskParser(**supported(PartialTaskParser, **DEEP))
        parser.feed(shape.head, update=False)
        parser.update()  # (the first snapshot after the head)
        parser.feed(shape.change, update=False)
        start = time.process_time()
        update = parser.update()
        best_update = min(best_update, time.process_time() - start)
        made = update is not None
        start = time.process_time()
        parser.snapshot()
        best_snapshot = min(best_snapshot, time.process_time() - start)
    return {"update_ms": best_update * 1e3, "update_made": made, "snapshot_ms": best_snapshot * 1e3}


def sse(text: str, size: int) -> list[bytes]:
    out = []
    for i in range(0, len(text), size):
        call = {"index": 0, "function": {"arguments": text[i : i + size]}}
        chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    return out


def measure_stream(shape: Shape, repeat: int) -> dict[str, Any]:
    events = sse(shape.head + shape.change + shape.rest, 4096)

    def run() -> tuple[float, float, int]:
        extraction = PartialExtraction(
            TypeAdapter(Any),
            OpenAIChatDecoder("tool"),
            min_interval=0,
            **supported(PartialExtraction, **DEEP),
        )
        longest, done, updates = 0.0, 0.0, 0
        now = 0.0
        for data in events:
            now += 1.0
            start = time.process_time()
            out = extraction.feed_bytes(data, now)
            took = time.process_time() - start
            if any(type(e).__name__ == "ItemDone" for e in out):
                done = max(done, took)  # validating the whole item: not a snapshot's cost
            else:
                longest = max(longest, took)
            updates += sum(type(e).__name__ == "ItemUpdated" for e in out)
        extraction.close()
        return longest, done, updates

    gc.collect()
    gc.disable()  # the collector's pauses are in proportion to every object alive: not ours
    try:
        best_total, (longest, done, updates) = cpu(run, repeat)
    finally:
        gc.enable()
    return {
        "stream_events": len(events),
        "stream_updates": updates,
        "longest_feed_ms": longest * 1e3,
        "done_feed_ms": done * 1e3,
        "stream_total_ms": best_total * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is kept")
    args = parser.parse_args()

    rows = []
    for shape in shapes():
        row: dict[str, Any] = {"item": shape.name, "item_bytes": len(shape.head)}
        row.update(measure_update(shape, args.repeat))
        row.update(measure_stream(shape, max(1, args.repeat // 2)))
        rows.append(row)

    header = (
        f"{'item in progress':<28} {'bytes':>9} {'update()':>10} {'made':>5} "
        f"{'snapshot()':>11} {'events':>7} {'updates':>8} {'longest feed':>13} "
        f"{'done feed':>10} {'stream':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['item']:<28} {r['item_bytes']:>9,} {r['update_ms']:>8.3f}ms "
            f"{'yes' if r['update_made'] else 'no':>5} {r['snapshot_ms']:>9.3f}ms "
            f"{r['stream_events']:>7} {r['stream_updates']:>8} {r['longest_feed_ms']:>11.3f}ms "
            f"{r['done_feed_ms']:>8.2f}ms {r['stream_total_ms']:>8.1f}ms"
        )
    if args.json:
        import multitask

        meta = {
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "multitask": multitask.__file__,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
