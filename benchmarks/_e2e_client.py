"""One end-to-end client run, in a process of its own so that its CPU time is its own.

    python benchmarks/_e2e_client.py CONTENDER URL --kind small --items 20 --size 0 \
        --streams 200 --run r1 --out result.json

CONTENDER is `multitask` (`Client.extract_stream`), `instructor` (instructor over the official
`openai.AsyncOpenAI`, `create_iterable`) or `pydantic-ai` (an `Agent` whose output type is the
`{"tasks": [...]}` model, read with `run_stream(...).stream_output()`, whose default groups
the events of 0.1 s into one re-validation); three
floors deliver no items: `httpx-bytes` (the same request with httpx, the body read and
dropped), `asyncio-bytes` (the same over a raw asyncio socket, a task woken per read) and
`asyncio-protocol` (an asyncio protocol that drops each read in its callback: the least any
asyncio client can spend per read). After
one warm-up stream, it runs `--streams` streams at once (`--rounds` times, one round after
another) and writes the process CPU time they took and, for every item, the `time.time()`
at which the caller held it validated. `--loop uvloop` runs it all on uvloop's event loop
(what uvicorn picks when uvloop is installed) instead of asyncio's own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from _common import Doc, DocTasks, Small, SmallTasks

Record = Callable[[BaseModel], None]
Runner = Callable[[str, Record], Awaitable[None]]


def _key(item: Any) -> str:
    return str(getattr(item, "name", None) or getattr(item, "title", ""))


async def _multitask(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    import multitask

    client = multitask.Client("openai:bench", base_url=url + "/v1", api_key="test")
    await client.__aenter__()

    async def run(prompt: str, record: Record) -> None:
        stream: multitask.ItemStream[BaseModel] = client.extract_stream(model, prompt)
        async with stream:
            async for item in stream:
                record(item)

    return run, client.aclose


def _openai_client(url: str) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="test", max_retries=0)


async def _instructor(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    import instructor

    sdk = _openai_client(url)
    client = instructor.from_openai(sdk, mode=instructor.Mode.TOOLS)

    async def run(prompt: str, record: Record) -> None:
        stream: Any = client.chat.completions.create_iterable(
            model="bench",
            messages=[{"role": "user", "content": prompt}],
            response_model=model,
            max_retries=0,
        )
        async for item in await _maybe_await(stream):
            record(item)

    return run, sdk.close


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def _pydantic_ai(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    sdk = _openai_client(url)
    chat = OpenAIChatModel("bench", provider=OpenAIProvider(openai_client=sdk))
    output: type[BaseModel] = SmallTasks if model is Small else DocTasks
    agent: Any = Agent(chat, output_type=output)

    async def run(prompt: str, record: Record) -> None:
        done = 0
        async with agent.run_stream(prompt) as result:
            # A partial output's last item may be cut short: an item is complete once the
            # next one has appeared, or the stream has ended.
            async for partial in result.stream_output():  # debounced by 0.1 s, the default
                tasks = partial.tasks
                while done < len(tasks) - 1:
                    record(tasks[done])
                    done += 1
            final = await result.get_output()
        for item in final.tasks[done:]:
            record(item)

    return run, sdk.close


def _request_body(model: type[BaseModel], prompt: str) -> dict[str, Any]:
    from multitask import MultiTask

    multi = MultiTask(model)
    return {
        "model": "bench",
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [multi.openai_tool],
        "tool_choice": {"type": "function", "function": {"name": multi.openai_schema["name"]}},
    }


async def _httpx_bytes(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    """The floor of an httpx client: the same request, the body read and dropped, no parsing."""
    import httpx2

    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    client = httpx2.AsyncClient(timeout=httpx2.Timeout(600.0, connect=10.0), limits=limits)

    async def run(prompt: str, record: Record) -> None:
        body = _request_body(model, prompt)
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_raw():
                pass

    return run, client.aclose


async def _asyncio_bytes(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    """The floor of Python's event loop: a raw socket, one request, the body read and dropped."""
    host, port = url.removeprefix("http://").split(":")

    async def run(prompt: str, record: Record) -> None:
        body = json.dumps(_request_body(model, prompt)).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head.encode() + body)
        while await reader.read(65536):
            pass
        writer.close()
        await writer.wait_closed()

    async def close() -> None:
        pass

    return run, close


async def _asyncio_protocol(url: str, model: type[BaseModel]) -> tuple[Runner, Callable[[], Any]]:
    """The floor of Python's event loop without a task woken per read: a protocol whose
    `data_received` drops the bytes; the caller wakes once, when the server closes."""
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    class Drop(asyncio.Protocol):
        def __init__(self) -> None:
            self.done = loop.create_future()

        def data_received(self, data: bytes) -> None:
            pass

        def connection_lost(self, exc: Exception | None) -> None:
            self.done.set_result(None)

    async def run(prompt: str, record: Record) -> None:
        body = json.dumps(_request_body(model, prompt)).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        transport, protocol = await loop.create_connection(Drop, host, int(port))
        transport.write(head.encode() + body)
        await protocol.done

    async def close() -> None:
        pass

    return run, close


CONTENDERS = {
    "multitask": _multitask,
    "instructor": _instructor,
    "pydantic-ai": _pydantic_ai,
    "httpx-bytes": _httpx_bytes,
    "asyncio-bytes": _asyncio_bytes,
    "asyncio-protocol": _asyncio_protocol,
}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    model: type[BaseModel] = Small if args.kind == "small" else Doc
    run, close = await CONTENDERS[args.contender](args.url, model)
    received: list[tuple[str, float]] = []

    def record(item: BaseModel) -> None:
        received.append((_key(item), time.time()))

    def prompt(items: int, size: int, sid: str) -> str:
        return f"Extract every item. bench:{args.kind}:{items}:{size}:{sid}"

    # A short warm-up stream builds the schemas and adapters (and opens a connection).
    await run(prompt(2, min(args.size, 64), f"{args.run}-warm"), record)
    received.clear()
    gc.collect()
    wall = time.perf_counter()
    cpu = time.process_time()
    results: list[Any] = []
    for r in range(args.rounds):
        results += await asyncio.gather(
            *(
                run(prompt(args.items, args.size, f"{args.run}-{r}.{i}"), record)
                for i in range(args.streams)
            ),
            return_exceptions=True,
        )
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    await _maybe_await(close())
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"cpu": cpu, "wall": wall, "received": received, "errors": errors[:5]}


def main() -> int:
    """Run the streams; write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("url")
    parser.add_argument("--kind", choices=["small", "long"], default="small")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="string length of long items")
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times to run them, one after another"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--run", default="r")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(_main(args))
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
