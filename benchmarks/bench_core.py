"""CPU cost of the sans-IO core: SSE bytes in, validated items out, with no network.

Each workload is a realistic OpenAI tool-call stream (one SSE event per few-character delta,
as the scripted server renders it), fed to `Extraction.feed_bytes` event by event. Beside it,
the "limit": what a non-streaming reader must spend at least, one C JSON parse per SSE event
plus one `validate_json` of the whole answer. Cost per answer byte staying flat as the output
grows from 10 items to 10,000, and from 60-byte items to 64 KB strings, shows it is linear.

    python benchmarks/bench_core.py [--json results.json] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import from_json

from multitask import MultiTask
from multitask._providers import OpenAIChatDecoder
from multitask.testing import Script
from multitask.testing._wire import stream_plan


class Small(BaseModel):
    name: str
    age: int
    email: str


class Doc(BaseModel):
    title: str
    body: str


@dataclass
class Workload:
    name: str
    model: type[BaseModel]
    items: list[dict[str, Any]]
    chunk_size: int = 4  # characters per delta, about one token


def lorem(n: int) -> str:
    words = "lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod {tempor} [x]"
    return (words * (n // len(words) + 1))[:n]


def workloads() -> list[Workload]:
    out = [
        Workload(
            f"{n} small items",
            Small,
            [{"name": f"user {i}", "age": i % 90, "email": f"u{i}@example.com"} for i in range(n)],
        )
        for n in (10, 100, 1_000, 10_000)
    ]
    out.append(
        Workload(
            "100 items, 2 KB string",
            Doc,
            [{"title": f"d{i}", "body": lorem(2048)} for i in range(100)],
        )
    )
    out.append(
        Workload(
            "5 items, 64 KB string",
            Doc,
            [{"title": f"d{i}", "body": lorem(65536)} for i in range(5)],
        )
    )
    return out


def render(work: Workload) -> tuple[list[bytes], str]:
    multi = MultiTask(work.model)
    body = {"model": "bench", "stream": True, "tools": [multi.openai_tool]}
    plan = stream_plan("openai", body, Script(items=work.items, chunk_size=work.chunk_size))
    return [c.data for c in plan.chunks], plan.sent_text


def run_multitask(work: Workload, chunks: list[bytes]) -> int:
    extraction = MultiTask(work.model).extraction(OpenAIChatDecoder("tool"))
    n = 0
    for chunk in chunks:
        n += len(extraction.feed_bytes(chunk))
    n += len(extraction.close())
    extraction.raise_for_outcome()
    return n


def run_limit(work: Workload, chunks: list[bytes]) -> int:
    """One C JSON parse of each event, one validation of the whole answer."""
    parts = []
    for chunk in chunks:
        data = chunk[6:].strip()
        if data != b"[DONE]":
            obj = from_json(data)
            for choice in obj.get("choices") or ():
                for call in (choice.get("delta") or {}).get("tool_calls") or ():
                    parts.append(call["function"].get("arguments") or "")
    answer = TypeAdapter(MultiTask(work.model)).validate_json("".join(parts))
    return len(answer.tasks)


def cpu(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        start = time.process_time()
        n = fn()
        best = min(best, time.process_time() - start)
    return best, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best is kept")
    args = parser.parse_args()

    rows = []
    for work in workloads():
        chunks, answer = render(work)
        run_multitask(work, chunks)  # warm up: build the schema, adapters and parser once
        mt, n = cpu(lambda w=work, c=chunks: run_multitask(w, c), args.repeat)
        limit, n2 = cpu(lambda w=work, c=chunks: run_limit(w, c), args.repeat)
        assert n == n2 == len(work.items), (n, n2)
        rows.append(
            {
                "workload": work.name,
                "items": n,
                "answer_bytes": len(answer.encode()),
                "sse_events": len(chunks),
                "multitask_ms": mt * 1e3,
                "us_per_item": mt * 1e6 / n,
                "ns_per_answer_byte": mt * 1e9 / len(answer.encode()),
                "limit_ms": limit * 1e3,
                "ratio_to_limit": mt / limit if limit else float("nan"),
            }
        )

    header = (
        f"{'workload':<24} {'items':>6} {'answer':>10} {'events':>8} {'multitask':>11} "
        f"{'us/item':>9} {'ns/byte':>8} {'limit':>9} {'x limit':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['workload']:<24} {r['items']:>6} {r['answer_bytes']:>10,} {r['sse_events']:>8,} "
            f"{r['multitask_ms']:>9.2f}ms {r['us_per_item']:>9.2f} {r['ns_per_answer_byte']:>8.1f} "
            f"{r['limit_ms']:>7.2f}ms {r['ratio_to_limit']:>8.2f}"
        )
    per_byte = [r["ns_per_answer_byte"] for r in rows if r["items"] >= 100]
    spread = max(per_byte) / min(per_byte)
    print(
        f"\ncost per answer byte, 100 to 10,000 items and 2-64 KB strings: "
        f"max/min = {spread:.2f} (1.0 is perfectly linear)"
    )
    if args.json:
        meta = {"python": sys.version.split()[0], "machine": platform.machine()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "per_byte_spread": spread}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
