"""Every response the shared `client` saw, to hold the whole suite to the contract.

`tests/conftest.py` hooks `RESPONSES.record` into the session's client, so each test that
calls the API adds (method, route template, status) and, for an error, its body. The checks
are in `tests/test_zz_contract.py`, which pytest runs after the other test modules (files and
folders are collected in name order): every status a route answered is declared in its
OpenAPI operation, and every error has the one shape of docs/api.md with a documented code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from app.api.openapi import api_routes


@dataclass(frozen=True)
class Seen:
    """One response: which operation answered it (`template` None: no route matched)."""

    method: str
    template: str | None
    status: int
    test: str


@dataclass(frozen=True)
class SeenError:
    seen: Seen
    path: str
    content_type: str
    body: Any  # the parsed JSON, or the text when it is not JSON
    headers: httpx.Headers


@dataclass
class ResponseLog:
    statuses: dict[tuple[str, str | None, int], Seen] = field(default_factory=dict)
    errors: list[SeenError] = field(default_factory=list)
    current_test: str = "(outside a test)"

    async def record(self, app: FastAPI, response: httpx.Response) -> None:
        request = response.request
        seen = Seen(
            method=request.method,
            template=route_template(app, request.method, request.url.path),
            status=response.status_code,
            test=self.current_test,
        )
        self.statuses.setdefault((seen.method, seen.template, seen.status), seen)
        # Error bodies only: a success may be a stream that a test reads bit by bit.
        if response.status_code >= 400 and request.method != "HEAD":
            await response.aread()
            content_type = response.headers.get("content-type", "")
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            error = SeenError(seen, request.url.path, content_type, body, response.headers)
            self.errors.append(error)


def route_template(app: FastAPI, method: str, path: str) -> str | None:
    """The path template of the operation that serves `method path`, as OpenAPI names it."""
    wanted = "GET" if method == "HEAD" else method
    for route in api_routes(app):
        if wanted in (route.methods or ()) and route.path_regex.match(path):
            return str(route.path_format)
    return None


RESPONSES = ResponseLog()
