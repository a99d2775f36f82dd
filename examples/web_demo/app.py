"""multitask web demo: paste a text, watch the people in it stream into a table as they are found,
and their names light up in the text.

    python examples/web_demo/app.py --port 8000                 # offline, scripted model
    OPENAI_API_KEY=... python examples/web_demo/app.py --model openai:gpt-4o-mini

Offline (the default) the app starts `multitask.testing.ScriptedModelServer` in its lifespan:
a real HTTP server on 127.0.0.1 that streams its answer in OpenAI's wire format at a visible
pace. Its model reads (`multitask.testing.ReadingModel`): every "First Last" name in the text
it is sent is a person, with the first number after it in that sentence as their age. With
`--model` it asks a real provider (its key from the environment). The page posts the text to
`/api/extract`, which answers with `multitask.web.sse_response(client.extract_events(...))`:
each person appears greyed out and growing as the model writes it, and turns solid once
validated; their name is a `multitask.Quote`, so it comes with where it is in the text, and
the page highlights it there the moment the item arrives.
"""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

import multitask
from multitask.testing import ReadingModel, Script, ScriptedModelServer
from multitask.web import SSEResponse, sse_response

PAGE = Path(__file__).with_name("index.html")

DEMO_TEXT = (
    "Ada Lovelace, 36, wrote the first published program for Babbage's engine. Alan Turing "
    "was 41 when he died; he had broken Enigma and founded computer science. Grace Hopper, "
    "the admiral who built the first compiler, lived to 85. Edsger Dijkstra, 72, gave us "
    "the shortest path algorithm."
)

DEMO_PEOPLE: list[dict[str, Any]] = [
    {
        "name": "Ada Lovelace",
        "age": 36,
        "occupation": "mathematician, wrote the first published program",
    },
    {"name": "Alan Turing", "age": 41, "occupation": "codebreaker and founder of computer science"},
    {"name": "Grace Hopper", "age": 85, "occupation": "admiral, built the first compiler"},
    {"name": "Edsger Dijkstra", "age": 72, "occupation": "computer scientist"},
]


#: What the offline model takes for a person: two capitalised words.
NAME = r"\b[A-Z][a-z]+ [A-Z][a-z]+\b"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: multitask.Quote = Field(
        description="The person's name, copied verbatim from the text, character for character"
    )
    age: int | None = Field(description="Their age in years, if the text says")
    occupation: str = Field(description="What they did, in a few words")


def read_person(match: re.Match[str]) -> dict[str, Any]:
    """The offline model's answer for one name it read: a person of the demo as written
    above, else the name with the first number after it in its sentence as the age."""
    for person in DEMO_PEOPLE:
        if person["name"] == match[0]:
            return person
    sentence = match.string[match.end() :].split(".")[0]
    age = re.search(r"\d+", sentence)
    return {"name": match[0], "age": int(age[0]) if age else None, "occupation": ""}


class ExtractRequest(BaseModel):
    text: str = Field(max_length=20_000)


def create_app(
    model: str | None = None,
    *,
    tokens_per_second: float = 30.0,
    chunk_size: int = 4,
    keep_alive: float = 10.0,
) -> FastAPI:
    """The demo app: a real provider with `model`, else a scripted one at the given pace."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if model:
                client = multitask.Client(model)
            else:
                reader = ReadingModel(
                    NAME,
                    item=read_person,
                    script=Script(chunk_size=chunk_size, tokens_per_second=tokens_per_second),
                )
                server = await stack.enter_async_context(ScriptedModelServer(reader))
                app.state.server = server
                client = multitask.Client(
                    "openai:demo-model", base_url=server.openai_base_url, api_key="offline"
                )
            app.state.client = await stack.enter_async_context(client)
            yield

    app = FastAPI(title="multitask web demo", lifespan=lifespan)
    app.state.server = None
    page = PAGE.read_text(encoding="utf-8").replace("{{DEMO_TEXT}}", html.escape(DEMO_TEXT))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.post("/api/extract")
    async def extract(body: ExtractRequest, request: Request) -> SSEResponse:
        client: multitask.Client = request.app.state.client
        events = client.extract_events(Person, body.text, min_interval=0.05)
        return sse_response(events, keep_alive=keep_alive)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model",
        help="a real provider, e.g. openai:gpt-4o-mini (its key from the environment); "
        "by default a scripted model server runs offline",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=30.0,
        help="pace of the offline scripted model (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    app = create_app(args.model, tokens_per_second=args.tokens_per_second)
    print(f"multitask web demo on http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
