"""Reading GET /events as a browser's EventSource would: blocks of `field: value` lines.

`EventReader` reads a streaming httpx response in a background task, so a test can wait
for the next event with a timeout without breaking the stream. Use it through
`open_events(client, ...)`; a block with only an `id` (what the server sends to set the
resume point) is returned too, with `event` None. `serve(app)` puts a started app on real
HTTP (an ASGI transport would buffer the endless stream).
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.faults.server import free_port
from tests.helpers import API

# Long enough for a loaded 2-core machine; an event normally arrives in milliseconds.
EVENT_TIMEOUT = 15.0


@dataclass
class ServerEvent:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    received_at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class EventReader:
    response: httpx.Response
    comments: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: asyncio.Queue[ServerEvent | None] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        current = ServerEvent()
        data_lines: list[str] = []
        started = False
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if started:
                        current.data = "\n".join(data_lines)
                        current.received_at = time.monotonic()
                        await self._queue.put(current)
                    current, data_lines, started = ServerEvent(), [], False
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                started = True
                if name == "id":
                    current.id = value
                elif name == "event":
                    current.event = value
                elif name == "data":
                    data_lines.append(value)
                elif name == "retry":
                    current.retry = int(value)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self.ended.set()
            self._queue.put_nowait(None)

    async def next(self, within: float = EVENT_TIMEOUT) -> ServerEvent | None:
        """The next block; None when the stream has ended."""
        async with asyncio.timeout(within):
            event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # stays ended for later calls
        return event

    async def next_event(self, within: float = EVENT_TIMEOUT) -> ServerEvent:
        """The next real event (with an `event` type), skipping id-only and retry blocks."""
        deadline = time.monotonic() + within
        while True:
            block = await self.next(max(deadline - time.monotonic(), 0.001))
            assert block is not None, "the stream ended"
            if block.event is not None:
                return block

    async def until(
        self, predicate: Callable[[ServerEvent], bool], within: float = EVENT_TIMEOUT
    ) -> list[ServerEvent]:
        """Events up to and including the first that matches; all of them, in order."""
        deadline = time.monotonic() + within
        seen: list[ServerEvent] = []
        while True:
            event = await self.next_event(max(deadline - time.monotonic(), 0.001))
            seen.append(event)
            if predicate(event):
                return seen

    async def wait_ended(self, within: float = EVENT_TIMEOUT) -> list[ServerEvent]:
        """Everything up to the end of the stream."""
        rest: list[ServerEvent] = []
        deadline = time.monotonic() + within
        while True:
            block = await self.next(max(deadline - time.monotonic(), 0.001))
            if block is None:
                return rest
            rest.append(block)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.response.aclose()


@contextlib.asynccontextmanager
async def open_events(
    client: httpx.AsyncClient,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    last_event_id: str | int | None = None,
) -> AsyncIterator[EventReader]:
    """GET /events as a stream; asserts 200 text/event-stream. Waits for the resume point."""
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["Last-Event-ID"] = str(last_event_id)
    request = client.build_request("GET", f"{API}/events", headers=all_headers, params=params)
    response = await client.send(request, stream=True)
    try:
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        reader.start()
        yield reader
    finally:
        await response.aclose()
        if "reader" in locals():
            await reader.close()


async def stream_status(
    client: httpx.AsyncClient,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """GET /events expecting a refusal: the (read) response."""
    request = client.build_request("GET", f"{API}/events", headers=headers, params=params)
    response = await client.send(request, stream=True)
    try:
        assert response.status_code != 200, "the stream opened"
        await response.aread()
        return response
    finally:
        await response.aclose()


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve an already started app over HTTP on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
