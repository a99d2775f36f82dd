"""What each request carries: multitask's, instructor's and pydantic-ai's, for the same models.

    python benchmarks/bench_request.py [--json results.json]

Every byte of a request's prompt (the tool definitions, the tool choice and the messages) is
paid for on every request. Each library is pointed at the scripted model server on
127.0.0.1 (OpenAI chat completions, streaming where the library streams), asked for a list
of the same model from the same text, and the request body the server received is measured:
its prompt part (`tools`, `tool_choice`, `messages`, `response_format`) as compact JSON, and
the whole body as sent. Token counts are not reported: no tokenizer here works offline.

The libraries other than multitask come from the `bench` extra; a missing one is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

import multitask
from multitask.testing import Script, ScriptedModelServer

try:
    from run import _table
except ImportError:  # run from elsewhere: the benchmarks folder on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import _table

TEXT = "Jason is 10 and lives at 1 Main St, Springfield; John is 30."
PROMPT_KEYS = ("tools", "tool_choice", "messages", "response_format", "functions")


class Address(BaseModel):
    street: str
    city: str


class User(BaseModel):
    """The issue's shape: three fields, one a nested list."""

    name: str
    age: int
    addresses: list[Address]


class Contact(BaseModel):
    """A person to get in touch with."""

    full_name: str = Field(description="as written in the text")
    email: str | None = Field(default=None, description="an address, if the text gives one")
    phone_numbers: list[str] = Field(default_factory=list)
    company: str | None = None


MODELS: dict[str, type[BaseModel]] = {"User": User, "Contact": Contact}

Run = Callable[[str, type[BaseModel]], Awaitable[None]]


async def _multitask(base_url: str, model: type[BaseModel]) -> None:
    async with multitask.Client("openai:gpt-4o-mini", base_url=base_url, api_key="k") as c:
        await c.extract(model, TEXT)


async def _instructor(base_url: str, model: type[BaseModel]) -> None:
    import instructor
    import openai

    client = instructor.from_openai(openai.AsyncOpenAI(base_url=base_url, api_key="k"))
    stream = client.chat.completions.create_iterable(
        model="gpt-4o-mini",
        response_model=model,
        messages=[{"role": "user", "content": TEXT}],
        stream=True,
        max_retries=0,
    )
    async for _ in stream:
        pass


async def _pydantic_ai(base_url: str, model: type[BaseModel]) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    llm = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=base_url, api_key="k"))
    agent: Agent[None, list[Any]] = Agent(llm, output_type=list[model])  # type: ignore[valid-type]
    async with agent.run_stream(TEXT) as result:
        async for _ in result.stream_output():
            pass


CONTENDERS: dict[str, Run] = {
    "multitask": _multitask,
    "instructor": _instructor,
    "pydantic-ai": _pydantic_ai,
}


async def measure_one(name: str, run: Run, model: type[BaseModel]) -> dict[str, Any] | None:
    """The first request body `run` sends for `model`, measured."""
    async with ScriptedModelServer(Script(items=[])) as server:
        try:
            await run(server.url + "/v1", model)
        except ImportError:
            return None
        except Exception:  # an answer a peer does not like: the request is what counts
            pass
        if not server.requests:
            raise RuntimeError(f"{name} sent no request")
        request = server.requests[0]
    body = request.body
    prompt = {k: body[k] for k in PROMPT_KEYS if k in body}
    return {
        "library": name,
        "model": model.__name__,
        "prompt_bytes": len(json.dumps(prompt, separators=(",", ":"), ensure_ascii=False)),
        "body_bytes": len(request.raw_body),
        "keys": sorted(body),
    }


async def measure() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model in MODELS.values():
        for name, run in CONTENDERS.items():
            row = await measure_one(name, run, model)
            if row is not None:
                rows.append(row)
    return rows


def report(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    ours = {r["model"]: r for r in rows if r["library"] == "multitask"}
    body = [
        [
            r["model"],
            r["library"],
            f"{r['prompt_bytes']:,}",
            f"{r['body_bytes']:,}",
            f"{r['prompt_bytes'] / ours[r['model']]['prompt_bytes']:.2f}",
        ]
        for r in rows
    ]
    header = ["model", "library", "prompt bytes", "body bytes", "prompt ÷ multitask's"]
    return _table(header, body, right_from=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = anyio.run(measure)
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"request_size": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
