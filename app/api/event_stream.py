"""The HTTP side of GET /events: a streaming response that always lets go of its stream,
and streams that end when the server is told to stop.
"""

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.services.events_service import EventStream

HEADERS = {
    # Never cached or transformed, and not buffered by nginx-style proxies.
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, stream: EventStream):
        super().__init__(stream.chunks(), headers=HEADERS)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Whatever ends the response (the client leaving, a send failing, the stream ending,
        # a cancellation), the broker forgets the stream: none is left holding events.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def close_streams_on_exit_signal(close_streams: Callable[[], None]) -> Callable[[], None]:
    """End open event streams as soon as uvicorn is told to stop; returns an undo.

    uvicorn waits for open responses before its lifespan shutdown runs, and an event stream
    never ends by itself: every restart would wait out the whole graceful-shutdown timeout.
    So the exit signals uvicorn handles also end the streams (with a retry hint; clients
    reconnect, to another worker or server). Only uvicorn's own handlers are wrapped: under
    any other runner (tests) this does nothing.
    """
    loop = asyncio.get_running_loop()
    wrapped: dict[int, Any] = {}
    for signum in _EXIT_SIGNALS:
        previous = signal.getsignal(signum)
        owner = getattr(previous, "__self__", None)
        if not callable(previous) or type(owner).__module__ != "uvicorn.server":
            continue

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(close_streams)
            previous(sig, frame)

        signal.signal(signum, handler)
        wrapped[signum] = (previous, handler)

    def undo() -> None:
        for signum, (previous, handler) in wrapped.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)

    return undo
