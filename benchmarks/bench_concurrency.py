"""Many streams on one event loop: 1, 10, 100 and 1,000 concurrent `extract_stream`s.

Against the timestamping scripted server (`_server.py`) in a process of its own, at a realistic
token rate, one client process per concurrency level (`_e2e_client.py multitask`). Reports
items per second, client CPU per streamed SSE event, and the delay from the server handing an
item's last byte to its socket to the caller holding the validated item (p50, p99), both
clocks being this machine's `time.time()`.

    python benchmarks/bench_concurrency.py [--json out.json] [--tokens-per-second 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from run import _e2e_run, _fmt, _Server, _table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--tokens-per-second", type=float, default=50.0)
    parser.add_argument("--items", type=int, default=10, help="small items per stream")
    parser.add_argument(
        "--streams", default="1,10,100,1000", help="comma-separated concurrency levels"
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.streams.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="multitask-conc-") as tmp:
        server = _Server(Path(tmp) / "sent.jsonl", args.tokens_per_second)
        try:
            for streams in levels:
                job = (f"c{streams}", "multitask", "small", args.items, 0, streams, 1)
                row = _e2e_run(server, Path(tmp), *job)
                row["items_per_second"] = row["items_received"] / row["wall"]
                row["cpu_us_per_event"] = row["client_cpu"] * 1e6 / row["events"]
                rows.append(row)
                print(
                    f"{streams:>5} streams: {row['items_per_second']:,.0f} items/s, "
                    f"{row['cpu_us_per_event']:.1f} µs CPU/event, delay p50 "
                    f"{_fmt(row['delay_p50_ms'], 2)} ms p99 {_fmt(row['delay_p99_ms'], 2)} ms",
                    flush=True,
                )
        finally:
            server.stop()
    header = [
        "concurrent streams",
        "items",
        "SSE events",
        "wall s",
        "items / s",
        "client CPU µs / event",
        "item delay p50 ms",
        "p99 ms",
    ]
    body = [
        [
            str(r["streams"]),
            f"{r['items_received']:,}",
            f"{r['events']:,}",
            _fmt(r["wall"], 2),
            f"{r['items_per_second']:,.0f}",
            _fmt(r["cpu_us_per_event"], 1),
            _fmt(r["delay_p50_ms"], 2),
            _fmt(r["delay_p99_ms"], 2),
        ]
        for r in rows
    ]
    print()
    print(_table(header, body))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
