"""The end-to-end benchmark's model server: the scripted server, logging when each item is sent.

    python benchmarks/_server.py --log sent.jsonl [--port 0] [--tokens-per-second 100]

It prints `PORT <n>` once listening and serves until SIGTERM or SIGINT. Each request's user
message names its answer, `bench:<kind>:<items>:<size>:<stream id>` (kind `small` or `long`),
and each item carries `<stream id>:<k>` in its first field, so the client can tell items apart.
After a stream, one JSON line goes to the log: the stream id, how many SSE events it sent,
and for every item the `time.time()` at which the event holding its closing brace was
handed to the socket (just before the send call). The client stamps `time.time()` when it
holds the validated item; both clocks are this machine's, so the difference is the client's
item delay (including the server's send call, a few microseconds).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import anyio

from _common import CHUNK_SIZE, doc_item, small_item
from multitask.testing import RecordedRequest, Script, ScriptedModelServer, _wire

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

    def _script(self, request: RecordedRequest) -> Script:
        match = _SPEC.search(request.raw_body)
        if match is None:
            return Script(items=[small_item(0)], chunk_size=CHUNK_SIZE)
        kind, n, size, sid = match.groups()
        items = _items(kind.decode(), int(n), int(size), sid.decode())
        return Script(items=items, chunk_size=CHUNK_SIZE, tokens_per_second=self._tps)

    async def _send_stream(self, link: Any, body: dict[str, Any], script: Script) -> Any:
        """The base class's stream, with its sends watched: chunk `i` is the `i + 1`th send."""
        lead = _leading_events(link.provider, body)
        completing: dict[int, list[str]] = {}
        for key, end in _item_ends(script) if script.items else ():
            completing.setdefault(lead + (end - 1) // script.chunk_size, []).append(key)
        sent: list[tuple[str, float]] = []
        sends = 0
        send = link.send

        async def timed_send(data: bytes, *, last: bool = False) -> None:
            nonlocal sends
            keys = completing.get(sends - 1)  # the first send is the response head
            sends += 1
            if keys:
                # Stamped as the bytes are handed to the socket: a stamp taken after the
                # send could come after the client, scheduled first, already had the item.
                now = time.time()
                sent.extend((key, now) for key in keys)
            await send(data, last=last)

        link.send = timed_send
        try:
            ending = await super()._send_stream(link, body, script)
        finally:
            link.send = send
        sid = sent[0][0].rsplit(":", 1)[0] if sent else ""
        self._log.write(json.dumps({"sid": sid, "events": sends - 2, "sent": sent}) + "\n")
        self._log.flush()
        return ending


@functools.cache
def _leading(provider: str, body_json: str) -> int:
    script = Script(text="{}", chunk_size=1, tokens_per_second=1e9)
    body = json.loads(body_json)
    plan = _wire.stream_plan(provider, body, script, ids=_wire.Ids(0))  # type: ignore[arg-type]
    return next(i for i, chunk in enumerate(plan.chunks) if chunk.delay)


def _leading_events(provider: str, body: dict[str, Any]) -> int:
    """How many events come before the first answer delta (1 for OpenAI's tool calls)."""
    return _leading(provider, json.dumps({k: v for k, v in body.items() if k != "messages"}))


async def _serve(args: argparse.Namespace, log: TextIO) -> None:
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
    with Path(args.log).open("a", encoding="utf-8") as log:
        anyio.run(_serve, args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
