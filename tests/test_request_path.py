"""What every request pays for, kept cheap (docs/performance.md): no thread hand-offs.

FastAPI runs a plain `def` dependency or endpoint in a worker thread, once per request: the
hand-off (and the GIL passing back and forth) cost a quarter of `/auth/me` when `_actor`,
`_db` and `get_context` were plain functions. Every dependency and endpoint of the served
app is therefore `async def` (or an object whose `__call__` is).
"""

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.api.deps import require
from app.models.rbac import Permission


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # An included router (FastAPI keeps it as a node of its own) or a mount.
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner:
            yield from _api_routes(inner)


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_on_the_loop(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    if inspect.isfunction(call) or inspect.ismethod(call):
        return False  # a plain function or generator: a worker thread per request
    dunder = getattr(call, "__call__", None)  # noqa: B004 (an instance, e.g. HTTPBearer)
    return inspect.iscoroutinefunction(dunder) or inspect.isasyncgenfunction(dunder)


def _name(call: Any) -> str:
    return getattr(call, "__qualname__", None) or type(call).__qualname__


def test_no_dependency_or_endpoint_runs_in_a_worker_thread(app: FastAPI) -> None:
    routes = list(_api_routes(app.router.routes))
    assert len(routes) > 30  # the walk reaches the API's routes, not only the app's own
    threaded = {
        f"{route.path}: {_name(call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_loop(call)
    }
    assert threaded == set()


def test_require_is_checked_on_the_event_loop() -> None:
    # Built per route (`Depends(require(...))`); the walk above sees only those in use.
    assert _runs_on_the_loop(require(Permission.VIEW_MEMORIES))
