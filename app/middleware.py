"""The layers around every request: request id, access log and metrics outside CORS; the
URL check, the body limit and the last-resort 500 inside it (so those answers carry CORS).

Pure ASGI middleware (not BaseHTTPMiddleware), so they add no task or copy per request.
"""

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, ServiceUnavailable, error_body, validation_body
from app.log import family_id_var, log_info, request_id_var, user_id_var
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS

logger = logging.getLogger("timeless.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
URL_NOT_UTF8 = "The URL is not valid UTF-8 once percent-decoded"
# The methods whose body the app reads, and so the ones the body limit applies to.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The metric children of each (method, route template, status) seen, looked up once: labels()
# takes a lock and builds a key on every call. Bounded, as a client chooses the method.
_MAX_CACHED_SERIES = 1000


class RequestContextMiddleware:
    """The outermost layer: request id, log context, access log line and metrics.

    It answers nothing itself; everything it sees, CORS headers included, was answered by
    the layers inside it (`app.main` puts CORSMiddleware and then `GuardMiddleware` there).
    """

    def __init__(self, app: ASGIApp, *, api_prefix: str = ""):
        self.app = app
        self.api_prefix = api_prefix
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = self._request_id(scope)
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        request_id_var.set(request_id)
        user_id_var.set(None)
        family_id_var.set(None)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: the one in the message may be the response's own.
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, started)

    def _request_id(self, scope: Scope) -> str:
        headers = scope["headers"]
        # Most requests carry none: looked for in C (a dict of the names) before walking them.
        if b"x-request-id" in dict(headers):
            for name, value in headers:
                if name == b"x-request-id":
                    candidate = value.decode("latin-1")
                    if _VALID_REQUEST_ID.match(candidate):
                        return candidate
        return os.urandom(16).hex()  # 32 hex digits, as uuid4().hex gave, without the object

    def _record(self, scope: Scope, status: int, started: float) -> None:
        duration = time.perf_counter() - started
        template = self._route_template(scope)
        method = scope["method"]
        key = (method, template, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(method, template, str(status)),
                HTTP_LATENCY.labels(method, template),
            )
            if len(self._series) < _MAX_CACHED_SERIES:
                self._series[key] = series
        requests, latency = series
        requests.inc()
        latency.observe(duration)
        log_info(
            logger,
            "request",
            {
                "method": method,
                # The template only: a raw path can hold a secret (GET /invites/{token}).
                "route": template,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
            },
        )

    def _route_template(self, scope: Scope) -> str:
        """`/api/v1/memories/{memory_id}`: bounded label values, and no ids in logs' route."""
        route = scope.get("route")
        if route is None or not hasattr(route, "path"):
            return "<static>" if "endpoint" in scope else "<unmatched>"
        # Routers are included under the API prefix; the route itself knows only its own part.
        prefix = self.api_prefix if scope["path"].startswith(self.api_prefix + "/") else ""
        return prefix + str(route.path)


class GuardMiddleware:
    """What the app must never see, or never let out: a URL that is not UTF-8, a body over
    the limit (413), an unhandled exception (the last-resort 500).

    It sits inside CORSMiddleware, so even these answers carry the CORS headers a browser
    needs to read them. Each is the one error shape (`app.errors.error_body`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        unlimited_prefixes: Sequence[str] = (),
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.unlimited_prefixes = tuple(unlimited_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False
        body_rejected = False

        async def send_guarded(message: Message) -> None:
            nonlocal response_started
            if body_rejected and response_started:
                return  # we already answered 413; whatever the app says is moot
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        seen = 0

        async def receive_limited() -> Message:
            # Count bytes as they arrive (chunked bodies have no Content-Length). Past
            # the limit, answer 413 ourselves and tell the app the client went away,
            # so nothing it half-parsed is acted on.
            nonlocal seen, body_rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes and not body_rejected:
                    if not response_started:
                        await self._too_large(send_guarded)
                    body_rejected = True
                    return {"type": "http.disconnect"}
            return message

        bad_part = _non_utf8_url_part(scope)
        if bad_part is not None:
            error = {"loc": [bad_part], "msg": URL_NOT_UTF8, "type": "string_unicode"}
            await _send_json(send_guarded, 422, validation_body([error]))
            return

        # Only these methods take a body here; for the others the app never reads one, so
        # a GET is never refused for what it carries (and its OpenAPI declares no 413).
        limited = scope["method"] in BODY_METHODS and not scope["path"].startswith(
            self.unlimited_prefixes
        )
        declared = _content_length(scope) if limited else None
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send_guarded)
            return

        try:
            await self.app(scope, receive_limited if limited else receive, send_guarded)
        except asyncio.CancelledError:
            # The server is stopping and this request outlived SHUTDOWN_GRACE_SECONDS (uvicorn
            # cancels what is left). Whatever it was writing is cleaned up by its own `finally`
            # (an upload's temporary file is removed); the client is told to retry elsewhere
            # or later, rather than getting uvicorn's bare 500 or a silent close.
            _cut_by_shutdown(scope, response_started)
            if not response_started:
                body = error_body(
                    "The server is restarting; please retry", ServiceUnavailable.default_code
                )
                await _send_json(send_guarded, 503, body, headers=[(b"retry-after", b"2")])
        except Exception:
            if body_rejected:
                return
            logger.exception("unhandled error")
            # Once the response has started there is nothing left to say: the server sees it
            # unfinished and closes the connection.
            if not response_started:
                body = error_body("Internal server error", "internal_error")
                await _send_json(send_guarded, 500, body)

    async def _too_large(self, send: Send) -> None:
        detail = f"Request body exceeds {self.max_body_bytes} bytes"
        await _send_json(send, 413, error_body(detail, PayloadTooLarge.default_code))


def _non_utf8_url_part(scope: Scope) -> str | None:
    """The part of the URL ("path" or "query") that is not UTF-8 once percent-decoded.

    Otherwise the framework would quietly turn the bad bytes into U+FFFD and go on with a
    value the client never sent.
    """
    for name, key in _URL_PARTS:
        raw = scope.get(key) or b""
        # Nothing percent-encoded and nothing but ASCII (most URLs): UTF-8 as it stands.
        if (b"%" in raw or not raw.isascii()) and not _utf8_once_decoded(raw):
            return name
    return None


_URL_PARTS = (("path", "raw_path"), ("query", "query_string"))


def _utf8_once_decoded(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw.decode("latin-1")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _cut_by_shutdown(scope: Scope, response_started: bool) -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # handled: the task ends normally once the client is answered
    route = scope.get("route")
    logger.warning(
        "request cut by shutdown",
        extra={
            "route": getattr(route, "path", "<unmatched>"),
            "response_started": response_started,
        },
    )


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, object],
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
