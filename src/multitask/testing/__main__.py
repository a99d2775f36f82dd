"""`python -m multitask.testing`: serve scripted model answers until Ctrl-C.

Every request gets the same script: the items from `--items` (a JSON list, or an object with a
`tasks` list) or a built-in sample of a few users, streamed as the providers stream them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from multitask.testing._script import SAMPLE_ITEMS, Script
from multitask.testing._server import RecordedRequest, ScriptedModelServer


def _load_items(path: str | None) -> list[Any]:
    if path is None:
        return list(SAMPLE_ITEMS)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items or {{'tasks': [...]}}")
    return data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m multitask.testing",
        description="Serve scripted model answers {'tasks': items} until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port, 0 for any free (8000)")
    parser.add_argument("--items", help="JSON file with the items (default: sample users)")
    parser.add_argument("--chunk-size", type=int, default=4, help="characters per delta (4)")
    parser.add_argument(
        "--tokens-per-second", type=float, default=None, help="pace of deltas (unpaced)"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


async def _serve(args: argparse.Namespace, items: list[Any]) -> None:
    script = Script(
        items=items, chunk_size=args.chunk_size, tokens_per_second=args.tokens_per_second
    )

    def answer(request: RecordedRequest) -> Script:
        if not args.quiet:
            mode = "stream" if request.stream else "json"
            print(f"{request.method} {request.path} ({request.provider}, {mode})", flush=True)
        return script

    async with ScriptedModelServer(answer, host=args.host, port=args.port) as server:
        print(f"multitask scripted model server on {server.url}", flush=True)
        print(f"  OpenAI    base_url={server.url}/v1", flush=True)
        print(f"  Anthropic base_url={server.url}", flush=True)
        print(f"  (openai-responses and compatible presets: {server.url}/v1;", flush=True)
        print(f"   gemini, ollama, azure: {server.url})", flush=True)
        print(f"  answering {len(items)} items; Ctrl-C to stop", flush=True)
        await _until_stopped()


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM (also when SIGINT is ignored, as in a background job)."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return
    except NotImplementedError:  # no signal receivers here (Windows): Ctrl-C still interrupts
        await anyio.sleep_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        items = _load_items(args.items)
        Script(chunk_size=args.chunk_size, tokens_per_second=args.tokens_per_second)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(_serve, args, items, backend=args.backend)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
