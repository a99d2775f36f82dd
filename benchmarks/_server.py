"""The end-to-end benchmark's model server: the scripted server, logging when each item is sent.

    python benchmarks/_server.py --log sent.jsonl [--port 0] [--tokens-per-second 100]

It prints `PORT <n>` once listening and serves until SIGTERM or SIGINT. Each request's user
message names its answer, `bench:<kind>:<items>:<size>:<stream id>` (kind `small` or `long`),
and each item carries `<stream id>:<k>` in its first field, so the client can tell items apart.
After a stream, one JSON line goes to the log: the stream id, how many SSE events it sent,
and for every item the `time.time()` at which the event holding its closing brace had been
handed to the socket. The client stamps `time.time()` when it holds the validated item; both
clocks are this machine's, so the difference is the client's item delay.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import anyio

from _common import CHUNK_SIZE, doc_item, small_item
from multitask.testing import RecordedRequest, Script, ScriptedModelServer
from multitask.testing import _wire
from multitask.testing._http import LAST_CHUNK, encode_chunk, response_head

_SPEC = re.compile(rb"bench:(small|long):(\d+):(\d+):([\w.-]+)")


def _items(kind: str, n: int, size: int, sid: str) -> list[dict[str, Any]]:
    if kind == "small":
        return [small_item(k, name=f"{sid}:{k}") for k in range(n)]
    return [doc_item(k, size, title=f"{sid}:{k}") for k in range(n)]


def _item_ends(script: Script) -> list[tuple[str, int]]:
    """Each item's key and the offset just past its closing brace in the answer text."""
    answer = script.answer
    out = []
    offset = len('{"tasks": [')
    for item in script.items:
        offset += len(json.dumps(item))
        assert answer[offset - 1] == "}", "the answer is not laid out as json.dumps lays it"
        key = item.get("name") or item.get("title")
        out.append((str(key), offset))
        offset += len(", ")
    return out


class TimedServer(ScriptedModelServer):
    """`ScriptedModelServer` whose streams log when each item's last byte was sent."""

    def __init__(self, log: TextIO, tokens_per_second: float, **kwargs: Any) -> None:
        super().__init__(self._script, **kwargs)
        self._log = log
        self._tps = tokens_per_second
        self._sids: dict[int, str] = {}

    def _script(self, request: RecordedRequest) -> Script:
        match = _SPEC.search(request.raw_body)
        if match is None:
            return Script(items=[small_item(0)], chunk_size=CHUNK_SIZE)
        kind, n, size, sid = match.groups()
        items = _items(kind.decode(), int(n), int(size), sid.decode())
        return Script(items=items, chunk_size=CHUNK_SIZE, tokens_per_second=self._tps)

    async def _send_stream(  # the base class's loop, plus the timestamps
        self, link: Any, body: dict[str, Any], script: Script
    ) -> _wire.Ending:
        plan = _wire.stream_plan(link.provider, body, script, ids=self._ids)
        first = next((i for i, c in enumerate(plan.chunks) if c.delay), 0)
        completing: dict[int, list[str]] = {}
        for key, end in _item_ends(script) if script.items else ():
            completing.setdefault(first + (end - 1) // script.chunk_size, []).append(key)
        sent: list[tuple[str, float]] = []
        await link.send(response_head(200, link.headers("stream", script)))
        for i, chunk in enumerate(plan.chunks):
            if chunk.delay:
                await link.sleep(chunk.delay)
            await link.send(encode_chunk(chunk.data))
            keys = completing.get(i)
            if keys:
                now = time.time()
                sent.extend((key, now) for key in keys)
        if plan.ending == "end":
            await link.send(LAST_CHUNK, last=True)
        record = {"events": len(plan.chunks), "sent": sent}
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        return plan.ending


async def _serve(args: argparse.Namespace) -> None:
    with Path(args.log).open("a", encoding="utf-8") as log:
        async with TimedServer(log, args.tokens_per_second, port=args.port) as server:
            print(f"PORT {server.port}", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return


def main() -> int:
    """Serve until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", required=True, help="JSON lines: one per stream sent")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    args = parser.parse_args()
    anyio.run(_serve, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
