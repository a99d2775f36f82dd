"""Peak RSS of reading one stream of N small items, in a fresh process per measurement.

    python benchmarks/_memory.py CONTENDER N

The OpenAI tool-call stream is generated lazily, one event at a time, so the stream itself
holds no memory; every item is dropped once read. Prints one JSON object: the peak RSS
before the stream (after imports and a warm-up) and after it, in KiB (Linux's `VmHWM`, else
`ru_maxrss`), and the CPU seconds the stream took.

- `multitask`: `Extraction.feed_bytes` per event.
- `instructor`: instructor's `Iterable[T]` parser over the SDK's `ChatCompletionChunk`
  objects, made per event with `ChatCompletionChunk.model_validate_json` (the SDK's own
  construct path makes the same objects about 4x slower, which a million items cannot afford).
- `reparse`: the partial re-parse approach; it re-parses every `events/20` events rather
  than every event (at a million items, every event would take days), which does not change
  its peak: that is the whole answer's text and parsed tree, held at the final parse.
- `limit`: collect every fragment, validate the whole answer at the end.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

from _common import CHUNK_SIZE, Small, check_lazy_stream, lazy_openai_stream
from _contenders import loaders, run_instructor, run_limit, run_multitask, run_reparse


def _sdk_chunks(events: Iterator[bytes]) -> Iterator[Any]:
    from openai.types.chat import ChatCompletionChunk

    for event in events:
        data = event[6:-2]
        if data != b"[DONE]":
            yield ChatCompletionChunk.model_validate_json(data)


def _run(contender: str, n: int) -> int:
    events = lazy_openai_stream(n)
    if contender == "multitask":
        # A million items are ~66 MB of answer: past the default 64 MiB cap on one answer.
        return run_multitask("openai", Small, events, max_answer_bytes=1 << 30)
    if contender == "instructor":
        return run_instructor("openai", Small, _sdk_chunks(events))
    if contender == "reparse":
        every = max(1, int(n * 60 / CHUNK_SIZE) // 20)
        return run_reparse("openai", Small, events, every=every)
    if contender == "limit":
        return run_limit("openai", Small, events, loaders()["pydantic_core.from_json"])
    raise SystemExit(f"unknown contender {contender!r}")


def _peak_kib() -> int:
    """This process's peak RSS in KiB.

    On Linux, `VmHWM`: `ru_maxrss` would also count the parent's RSS at the fork that made
    this process (the kernel carries the old address space's high-water mark over `exec`).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> int:
    """Measure one contender on one stream size."""
    contender, n = sys.argv[1], int(sys.argv[2])
    check_lazy_stream()
    assert _run(contender, 50) == 50  # warm-up: schemas, adapters, imports
    base = _peak_kib()
    start = time.process_time()
    got = _run(contender, n)
    cpu = time.process_time() - start
    assert got == n, (got, n)
    print(
        json.dumps(
            {
                "contender": contender,
                "items": n,
                "base_kib": base,
                "peak_kib": _peak_kib(),
                "cpu": cpu,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
