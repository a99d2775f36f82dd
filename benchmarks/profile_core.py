"""Profile multitask's per-event path (SSE bytes in, validated items out) with cProfile.

    python benchmarks/profile_core.py [--stream openai|anthropic] [--workload a|b|c] [--top 20]
                                      [--no-templates]

Feeds one workload-1 stream (see `run.py`) to `Extraction.feed_bytes` event by event, as the
client does, and prints the functions that cost the most time of their own, with the total
per event. cProfile adds its own cost to every Python call, so read the ranking and the
shares, not the absolute times (`run.py` measures those without a profiler).

`--no-templates` turns the fast paths off (as `MULTITASK_FASTPATH=0` does), so that every
event is parsed whole: the path of a stream whose events never repeat their shape
(OpenAI chunks with an `obfuscation` field that changes at every event, say).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys

import multitask._fastpath
from _common import PROVIDERS, parser_workloads, render
from _contenders import run_multitask


def main() -> int:
    """Profile one stream and print the top functions."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", choices=PROVIDERS, default="openai")
    parser.add_argument("--workload", choices=["a", "b", "c"], default="a")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--no-templates", action="store_true", help="parse every event whole")
    args = parser.parse_args()
    if args.no_templates:
        multitask._fastpath.ENABLED = False  # read by each decoder made from now on
    work = next(w for w in parser_workloads(False) if w.key == args.workload)
    events, _ = render(args.stream, work)
    run_multitask(args.stream, work.model, events)  # warm up: schemas, adapters
    profile = cProfile.Profile()
    profile.enable()
    run_multitask(args.stream, work.model, events)
    profile.disable()
    stats = pstats.Stats(profile)
    total = stats.total_tt  # type: ignore[attr-defined]
    per_event = total * 1e6 / len(events)
    print(f"{args.stream} {work.label}: {len(events):,} events, {per_event:.2f} µs/event profiled")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
