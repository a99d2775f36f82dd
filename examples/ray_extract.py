"""Extract users from many documents on a Ray cluster, with one shared rate limit.

Offline by default: a scripted model server on 127.0.0.1 answers every document, and a local
Ray instance runs the workers. Against a real model, name it (its key from the environment):

    python examples/ray_extract.py --documents 2000 --workers 4
    OPENAI_API_KEY=... python examples/ray_extract.py --model openai:gpt-4o-mini --rpm 500

Needs `pip install 'multitask[ray]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
from pydantic import BaseModel

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only

import ray

import multitask.ray
from multitask.testing import RecordedRequest, Script, ScriptedModelServer


class User(BaseModel):
    name: str
    age: int


def scripted_answer(request: RecordedRequest) -> Script:
    """What the offline server answers: a few users named after the document."""
    words = str(request.body["messages"][-1]["content"]).split()
    doc = words[-1].rstrip(".")
    n = 1 + sum(map(ord, doc)) % 5
    return Script(items=[{"name": f"{doc}-user{j}", "age": 20 + j} for j in range(n)])


@contextlib.contextmanager
def model_endpoint(model: str | None) -> Iterator[dict[str, Any]]:
    """Client options for the real model, or for a scripted server run in a thread."""
    if model:
        yield {"model": model}
        return
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(scripted_answer)) as server,
    ):
        yield {"model": "openai:scripted", "base_url": server.openai_base_url, "api_key": "x"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="provider:model (default: offline scripted server)")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rpm", type=float, default=30_000, help="requests a minute, in all")
    parser.add_argument("--tpm", type=float, default=None, help="tokens a minute, in all")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="write the rows to this Parquet directory")
    args = parser.parse_args()

    ray.init(include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    texts = [
        {"key": f"doc{i}", "text": f"Find the users in doc{i}."} for i in range(args.documents)
    ]
    with model_endpoint(args.model) as endpoint:
        limit = multitask.ray.RateLimit(rpm=args.rpm, tpm=args.tpm)
        ledger = multitask.ray.Ledger()
        started = time.monotonic()
        rows = ray.data.from_items(texts).map_batches(
            multitask.ray.Extractor,
            fn_constructor_args=(User,),
            fn_constructor_kwargs={**endpoint, "rate_limit": limit, "ledger": ledger},
            batch_size=args.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=args.workers),
            num_cpus=0.5,
        )
        if args.out:
            rows.write_parquet(args.out)
            table = ray.data.read_parquet(args.out).to_arrow_refs()
            results = [r for t in ray.get(table) for r in t.to_pylist()]
        else:
            results = rows.take_all()
        wall = time.monotonic() - started
        items = [r for r in results if r["error"] is None]
        failed = [r for r in results if r["error"] is not None]
        print(json.dumps(json.loads(items[0]["item"])) if items else "no items")
        print(
            f"{args.documents} documents, {len(items)} items, {len(failed)} failed, "
            f"{limit.stats()['clients']} workers, {wall:.1f} s"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
