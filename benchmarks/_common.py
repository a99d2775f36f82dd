"""What every benchmark shares: the item types, the workloads, stream rendering and timing.

Streams are rendered by `multitask.testing._wire.stream_plan`, the same code the scripted
server sends, so the in-memory workloads and the HTTP ones carry the same bytes. For the
memory workload a stream of a million items is generated lazily, event by event, in exactly
the format `stream_plan` renders (checked by `check_lazy_stream`).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from multitask import MultiTask
from multitask.testing import Script
from multitask.testing._wire import Ids, stream_plan

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic")
CHUNK_SIZE = 4  # characters per delta event: about one token


class Small(BaseModel):
    """A small item: about 60 bytes of JSON."""

    name: str
    age: int
    email: str


class Doc(BaseModel):
    """An item with one long string field."""

    title: str
    body: str


class SmallTasks(BaseModel):
    """The `{"tasks": [...]}` answer of `Small` items, as an output type for pydantic-ai."""

    tasks: list[Small]


class DocTasks(BaseModel):
    """The `{"tasks": [...]}` answer of `Doc` items, as an output type for pydantic-ai."""

    tasks: list[Doc]


def lorem(n: int) -> str:
    """`n` characters of prose, with braces and brackets inside the string to keep it honest."""
    words = "lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod {tempor} [x]"
    return (words * (n // len(words) + 1))[:n]


def small_item(k: int, name: str | None = None) -> dict[str, Any]:
    """Item `k` of a small-item answer (`{"name": "user 1", "age": 1, "email": ...}`)."""
    return {"name": name or f"user {k}", "age": k % 90, "email": f"u{k}@example.com"}


def doc_item(k: int, size: int, title: str | None = None) -> dict[str, Any]:
    """Item `k` of a long-string answer: a `size`-character body."""
    return {"title": title or f"d{k}", "body": lorem(size)}


@dataclass(frozen=True)
class Workload:
    """One answer to stream: its items and their type."""

    key: str
    label: str
    model: type[BaseModel]
    items: list[dict[str, Any]]


def parser_workloads(quick: bool) -> list[Workload]:
    """Workload 1's three answers: (a) small items, (b) 2 KB items, (c) 64 KB string fields."""
    n_small, n_2k, n_64k = (300, 30, 2) if quick else (1_000, 100, 5)
    return [
        Workload(
            "a", f"(a) {n_small:,} small items", Small, [small_item(k) for k in range(n_small)]
        ),
        Workload("b", f"(b) {n_2k} items of 2 KB", Doc, [doc_item(k, 2048) for k in range(n_2k)]),
        Workload(
            "c", f"(c) {n_64k} items, 64 KB string", Doc, [doc_item(k, 65536) for k in range(n_64k)]
        ),
    ]


def request_body(provider: Provider, model: type[BaseModel]) -> dict[str, Any]:
    """A streaming request body like the one multitask sends in tools mode."""
    multi = MultiTask(model)
    if provider == "openai":
        name = multi.openai_schema["name"]
        return {
            "model": "bench",
            "stream": True,
            "tools": [multi.openai_tool],
            "tool_choice": {"type": "function", "function": {"name": name}},
            "stream_options": {"include_usage": True},
        }
    tool = multi.anthropic_schema
    return {
        "model": "bench",
        "stream": True,
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": tool["name"]},
    }


def render(provider: Provider, work: Workload) -> tuple[list[bytes], str]:
    """The SSE events (one bytes object each) that stream `work`, and the answer text."""
    script = Script(items=work.items, chunk_size=CHUNK_SIZE)
    plan = stream_plan(provider, request_body(provider, work.model), script, ids=Ids(1), now=0)
    return [c.data for c in plan.chunks], plan.sent_text


# -- a lazy OpenAI stream of many small items ------------------------------------------------


def _escape(piece: str) -> str:
    return piece.replace("\\", "\\\\").replace('"', '\\"')


def lazy_openai_stream(n_items: int) -> Iterator[bytes]:
    """The OpenAI tool-call stream of `n_items` small items, made one event at a time.

    Byte for byte what `stream_plan` renders (apart from the usage count), without ever
    holding more than one event: the answer is produced item by item and cut into deltas.
    """
    marker = "\x01" * CHUNK_SIZE
    body = request_body("openai", Small)
    script = Script(text=marker, chunk_size=CHUNK_SIZE)
    template = stream_plan("openai", body, script, ids=Ids(1), now=0)
    head, delta, *tail = (c.data for c in template.chunks)
    escaped = json.dumps(marker, ensure_ascii=True)[1:-1].encode()
    prefix, suffix = delta.split(escaped)
    yield head
    pending = '{"tasks": ['
    for k in range(n_items):
        pending += ("" if k == 0 else ", ") + json.dumps(small_item(k))
        cut = len(pending) - len(pending) % CHUNK_SIZE
        for i in range(0, cut, CHUNK_SIZE):
            yield prefix + _escape(pending[i : i + CHUNK_SIZE]).encode() + suffix
        pending = pending[cut:]
    pending += "]}"
    for i in range(0, len(pending), CHUNK_SIZE):
        yield prefix + _escape(pending[i : i + CHUNK_SIZE]).encode() + suffix
    yield from tail


def check_lazy_stream(n_items: int = 40) -> None:
    """Assert that `lazy_openai_stream` sends what `stream_plan` renders (usage aside)."""
    script = Script(items=[small_item(k) for k in range(n_items)], chunk_size=CHUNK_SIZE)
    plan = stream_plan("openai", request_body("openai", Small), script, ids=Ids(1), now=0)
    lazy = list(lazy_openai_stream(n_items))
    rendered = [c.data for c in plan.chunks]
    assert len(lazy) == len(rendered), (len(lazy), len(rendered))
    for mine, theirs in zip(lazy[:-2], rendered[:-2], strict=True):
        assert mine == theirs, (mine, theirs)


# -- timing ----------------------------------------------------------------------------------


@dataclass
class Timing:
    """CPU seconds of the best run (the least disturbed on a shared machine), and how many."""

    best: float
    runs: int
    result: Any


def cpu_best(fn: Callable[[], Any], repeat: int, budget: float = 4.0) -> Timing:
    """Process CPU time of `fn`, best of `repeat` runs; one run only once a run takes `budget` s."""
    best = float("inf")
    result: Any = None
    runs = 0
    for _ in range(max(1, repeat)):
        gc.collect()
        start = time.process_time()
        result = fn()
        elapsed = time.process_time() - start
        runs += 1
        best = min(best, elapsed)
        if elapsed > budget:
            break
    return Timing(best, runs, result)


def available(module: str) -> bool:
    """Whether an optional peer can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0-1) of `values`, nearest-rank, so p99 is a value that occurred."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]
