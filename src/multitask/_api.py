"""One-call functions: extraction with a client of their own, async and sync.

Each takes what `Client` takes to reach the model (`model`, `base_url`, `api_key`, `headers`,
`provider`, `http_client`) and any `Options` field. Like `Client`'s methods, each is
overloaded so that a class gives its own type and anything else (a union, an `Annotated`)
`Any`; the overloads pass the keywords on as they are, and `Client` checks each one's name
and type where it is called (`ConfigurationError`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any, TypeVar, overload

import anyio.from_thread
import httpx2

from ._client import Client
from ._many import Documents, Result
from ._parts import Input
from ._providers import Provider
from ._stream import ItemStream
from ._taskmodel import MultiTaskModel

__all__ = ["extract", "extract_many_sync", "extract_stream", "extract_stream_sync", "extract_sync"]

T = TypeVar("T")


@overload
def extract_stream(
    item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
) -> ItemStream[T]: ...
@overload
def extract_stream(item_type: type[T], text: Input | None, **options: Any) -> ItemStream[T]: ...
@overload
def extract_stream(item_type: Any, text: Input | None, **options: Any) -> ItemStream[Any]: ...
def extract_stream(
    item_type: Any,
    text: Input | None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    http_client: httpx2.AsyncClient | None = None,
    **options: Any,
) -> ItemStream[Any]:
    """Stream the items of `item_type` in `text`, each the moment it is complete.

        async for user in multitask.extract_stream(User, text, model="openai:gpt-4o-mini"):
            print(user)

    Opens a client for this one extraction and closes it when the stream ends. To run many,
    share one `Client` and its connection pool instead.
    """
    client = Client(
        model,
        base_url=base_url,
        api_key=api_key,
        headers=headers,
        provider=provider,
        http_client=http_client,
    )
    # A refused option raises here, before the client has opened a connection pool.
    stream: ItemStream[Any] = client.extract_stream(item_type, text, **options)
    return ItemStream(
        _owned(client, stream), stream.info, item_type=stream._item_type, model=client.model
    )


async def _owned(client: Client, stream: ItemStream[T]) -> AsyncGenerator[T, None]:
    try:
        async for item in stream:
            yield item
    finally:
        await stream.aclose()
        await client.aclose()


@overload
async def extract(
    item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
) -> list[T]: ...
@overload
async def extract(item_type: type[T], text: Input | None, **options: Any) -> list[T]: ...
@overload
async def extract(item_type: Any, text: Input | None, **options: Any) -> list[Any]: ...
async def extract(
    item_type: Any,
    text: Input | None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    http_client: httpx2.AsyncClient | None = None,
    **options: Any,
) -> list[Any]:
    """Extract every item of `item_type` in `text` into a list."""
    async with Client(
        model,
        base_url=base_url,
        api_key=api_key,
        headers=headers,
        provider=provider,
        http_client=http_client,
    ) as client:
        return await client.extract(item_type, text, **options)


@overload
def extract_stream_sync(
    item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
) -> Iterator[T]: ...
@overload
def extract_stream_sync(item_type: type[T], text: Input | None, **options: Any) -> Iterator[T]: ...
@overload
def extract_stream_sync(item_type: Any, text: Input | None, **options: Any) -> Iterator[Any]: ...
def extract_stream_sync(
    item_type: Any,
    text: Input | None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    http_client: httpx2.AsyncClient | None = None,
    backend: str = "asyncio",
    **options: Any,
) -> Iterator[Any]:
    """Yield items as they arrive, from synchronous code (scripts, notebooks).

    The event loop runs in a worker thread behind an anyio blocking portal, so this works
    in a thread that already runs a loop (a Jupyter cell) too. Leaving the loop early closes
    the connection.
    """
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        stream: ItemStream[Any] = portal.call(
            lambda: extract_stream(
                item_type,
                text,
                model=model,
                base_url=base_url,
                api_key=api_key,
                headers=headers,
                provider=provider,
                http_client=http_client,
                **options,
            )
        )
        try:
            while True:
                try:
                    item = portal.call(stream.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            portal.call(stream.aclose)


@overload
def extract_sync(
    item_type: type[MultiTaskModel[T]], text: Input | None, **options: Any
) -> list[T]: ...
@overload
def extract_sync(item_type: type[T], text: Input | None, **options: Any) -> list[T]: ...
@overload
def extract_sync(item_type: Any, text: Input | None, **options: Any) -> list[Any]: ...
def extract_sync(
    item_type: Any,
    text: Input | None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    http_client: httpx2.AsyncClient | None = None,
    backend: str = "asyncio",
    **options: Any,
) -> list[Any]:
    """Extract every item into a list, from synchronous code."""
    return list(
        extract_stream_sync(
            item_type,
            text,
            model=model,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            provider=provider,
            http_client=http_client,
            backend=backend,
            **options,
        )
    )


@overload
def extract_many_sync(
    item_type: type[MultiTaskModel[T]], documents: Documents, **options: Any
) -> Iterator[Result[T]]: ...
@overload
def extract_many_sync(
    item_type: type[T], documents: Documents, **options: Any
) -> Iterator[Result[T]]: ...
@overload
def extract_many_sync(
    item_type: Any, documents: Documents, **options: Any
) -> Iterator[Result[Any]]: ...
def extract_many_sync(
    item_type: Any,
    documents: Documents,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    http_client: httpx2.AsyncClient | None = None,
    backend: str = "asyncio",
    max_concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    **options: Any,
) -> Iterator[Result[Any]]:
    """`Client.extract_many` for synchronous code: yields each `Result` as it happens.

    The documents are read in the event loop's worker thread, lazily. Leaving the loop early
    cancels the work in flight.
    """
    client = Client(
        model,
        base_url=base_url,
        api_key=api_key,
        headers=headers,
        provider=provider,
        http_client=http_client,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency or 100,
    )
    with (
        anyio.from_thread.start_blocking_portal(backend) as portal,
        portal.wrap_async_context_manager(client),
        portal.wrap_async_context_manager(
            client.extract_many(item_type, documents, **options)
        ) as results,
    ):
        iterator = portal.call(results.__aiter__)
        while True:
            try:
                yield portal.call(iterator.__anext__)
            except StopAsyncIteration:
                return
