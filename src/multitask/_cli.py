"""The `multitask` command line: `demo` streams one extraction and times each item; `extract`
runs many documents (see `_extract_cli`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import anyio
from pydantic import BaseModel, Field

from ._client import Client
from ._extract_cli import add_extract_command, run_extract
from ._stream import ItemStream

__all__ = ["main"]

DEMO_TEXT = (
    "Jason is 10 and John is 30. Their neighbour Ada Lovelace turned 36 this spring; "
    "Alan, who is 41, lives across the road with Grace (85). Little Edsger is 7."
)

DEMO_USERS = [
    {"name": "Jason", "age": 10},
    {"name": "John", "age": 30},
    {"name": "Ada Lovelace", "age": 36},
    {"name": "Alan", "age": 41},
    {"name": "Grace", "age": 85},
    {"name": "Edsger", "age": 7},
]


class User(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's name, as written in the text")
    age: int = Field(description="Their age in years")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multitask", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="stream users out of a short text, printing each as it arrives"
    )
    demo.add_argument(
        "--model",
        help="run against a real provider, e.g. openai:gpt-4o-mini (its API key from the "
        "environment); by default the demo runs offline against the scripted model server",
    )
    demo.add_argument("--text", default=DEMO_TEXT, help="the text to extract users from")
    demo.add_argument(
        "--tokens-per-second",
        type=float,
        default=40.0,
        help="pace of the offline scripted model (default: %(default)s)",
    )
    demo.add_argument(
        "--backend",
        choices=["asyncio", "uvloop", "trio"],
        default="asyncio",
        help="the event loop to run on (uvloop needs `pip install uvloop`)",
    )
    add_extract_command(commands)
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.backend == "uvloop":
            return anyio.run(_demo, args, backend="asyncio", backend_options={"use_uvloop": True})
        return anyio.run(_demo, args, backend=args.backend)
    if args.command == "extract":
        return run_extract(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


async def _demo(args: argparse.Namespace) -> int:
    if args.model:
        print(f"multitask demo: extracting users with {args.model}\n")
        async with Client(args.model) as client:
            return await _run(client, args.text)
    from .testing import Script, ScriptedModelServer

    script = Script(items=DEMO_USERS, chunk_size=4, tokens_per_second=args.tokens_per_second)
    async with ScriptedModelServer(script) as server:
        print(
            "multitask demo: offline, against the scripted model server at "
            f"{server.url} (real HTTP, OpenAI's stream format)\n"
        )
        async with Client("openai:demo-model", base_url=server.url + "/v1", api_key="offline") as c:
            status = await _run(c, args.text)
    print(
        "\nTo run the same against a real model, set OPENAI_API_KEY (or ANTHROPIC_API_KEY) and "
        "run:\n  multitask demo --model openai:gpt-4o-mini"
    )
    return status


async def _run(client: Client, text: str) -> int:
    print(f"text: {text}\n")
    start = time.perf_counter()
    stream: ItemStream[User] = client.extract_stream(User, text)
    async with stream:
        async for user in stream:
            print(f"  {time.perf_counter() - start:6.3f}s  {user!r}", flush=True)
    usage = stream.usage
    tokens = f", {usage.input_tokens} + {usage.output_tokens} tokens" if usage else ""
    print(
        f"\n{stream.info.items} users in {time.perf_counter() - start:.3f}s "
        f"(finish reason {stream.finish_reason!r}{tokens})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
