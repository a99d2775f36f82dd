"""The `multitask` command line: `demo` streams one extraction and times each item; `extract`
runs many documents (see `_extract_cli`).

`main` returns the exit status: 0 when everything succeeded, 1 when a document (or the demo's
extraction) failed, 2 for a usage or configuration mistake, reported in one line on stderr and
never as a traceback, and 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import anyio
from pydantic import BaseModel, Field

from ._client import Client
from ._exceptions import MultitaskError
from ._extract_cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_extract_command,
    one_line,
    open_client,
    run_extract,
)
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


DESCRIPTION = """\
Stream validated items out of an LLM's structured answer, each the moment it is complete.

  multitask demo       watch items stream out of one answer (offline by default)
  multitask extract    extract from many documents into JSON lines, resumably
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="multitask",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    try:
        if args.command == "demo":
            return _demo_command(args)
        return run_extract(args)
    except UsageError as exc:
        print(f"multitask {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before (or without) a handler of our own
        print(f"multitask {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _demo_command(args: argparse.Namespace) -> int:
    """`multitask demo`: the model is checked (and its API key) before the event loop starts."""
    client = open_client(args.model) if args.model else None
    if args.backend == "uvloop":
        return anyio.run(
            _demo, args, client, backend="asyncio", backend_options={"use_uvloop": True}
        )
    return anyio.run(_demo, args, client, backend=args.backend)


async def _demo(args: argparse.Namespace, client: Client | None) -> int:
    if client is not None:
        print(f"multitask demo: extracting users with {args.model}\n")
        try:
            async with client:
                return await _run(client, args.text)
        except MultitaskError as exc:
            print(f"multitask demo: failed: {one_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
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
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
