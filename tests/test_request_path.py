"""What every request pays for, kept cheap (docs/performance.md): no thread hand-offs.

FastAPI runs a plain `def` dependency or endpoint in a worker thread, once per request: the
hand-off (and the GIL passing back and forth) cost a quarter of `/auth/me` when `_actor`,
`_db` and `get_context` were plain functions. Every dependency and endpoint of the served
app is therefore `async def` (or an object whose `__call__` is).
"""

import gc
import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from app.adapters import tokens
from app.api.deps import MEMBER_DEPENDENCIES, require
from app.api.routing import ApiRoute, ApiRouter, RouteIndex
from app.config import Settings
from app.db.postgres import Database
from app.errors import Unauthorized
from app.main import create_app
from app.models.rbac import Permission
from app.services import session_service
from tests.helpers import API
from tests.helpers.factories import Factory


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


def test_every_route_opening_a_member_session_ends_it_before_answering(app: FastAPI) -> None:
    # A route built by a plain APIRouter would leave the transaction open (and its connection
    # taken) after the answer: only ApiRoute ends it.
    routes = [
        route
        for route in _api_routes(app.router.routes)
        if not MEMBER_DEPENDENCIES.isdisjoint(_calls(route.dependant))
    ]
    assert len(routes) > 30
    assert [route.path for route in routes if not isinstance(route, ApiRoute)] == []


def test_require_is_checked_on_the_event_loop() -> None:
    # Built per route (`Depends(require(...))`); the walk above sees only those in use.
    assert _runs_on_the_loop(require(Permission.VIEW_MEMORIES))


# Opening a member's request: one round trip, and still the member under RLS --------------


async def test_the_member_session_runs_as_the_member_from_its_first_statement(
    app: FastAPI, settings: Settings, factory: Factory
) -> None:
    member = await factory.register("adult")
    claims = tokens.decode_access_token(member.access_token, secret=settings.jwt_secret)
    database = app.state.context.database
    async with session_service.member_session(database, claims) as (db, actor):
        assert actor.id == claims.user_id
        assert await db.fetchval("select current_user") == "authenticated"
        assert str(await db.fetchval("select auth.uid()")) == str(claims.user_id)
        # Row level security applies: the member sees their own family only.
        families = await db.fetch("select id from public.family_units")
        assert [row["id"] for row in families] == [actor.family_unit_id]
    # Transaction-local: the pooled connection goes back without the role or the claims.
    async with database.pool.acquire() as conn:
        assert await conn.fetchval("select current_user") != "authenticated"
        assert not await conn.fetchval("select current_setting('request.jwt.claims', true)")


async def test_an_ended_login_is_refused_when_the_request_opens(
    app: FastAPI, settings: Settings, factory: Factory, client: httpx.AsyncClient
) -> None:
    member = await factory.register("adult")
    claims = tokens.decode_access_token(member.access_token, secret=settings.jwt_secret)
    assert (await client.post(f"{API}/auth/logout", headers=member.headers)).status_code == 204
    with pytest.raises(Unauthorized):
        async with session_service.member_session(app.state.context.database, claims):
            pass


async def test_only_a_session_connection_skips_the_pool_reset(migrated_database_url: str) -> None:
    database = await Database.connect(migrated_database_url, min_size=1, max_size=1)
    try:
        # A connection used another way still gets asyncpg's reset on release ...
        async with database.pool.acquire() as conn:
            await conn.execute("set application_name = 'left behind'")
        async with database.pool.acquire() as conn:
            assert await conn.fetchval("show application_name") != "left behind"
            assert "RESET ALL" in conn.get_reset_query()
        # ... while a session's connection, whose changes all ended with its transaction,
        # skips it, that once.
        async with database.system_session() as conn:
            assert conn.get_reset_query() == ""
        async with database.pool.acquire() as conn:
            assert "RESET ALL" in conn.get_reset_query()
    finally:
        await database.close()


# Routing: the route index finds what FastAPI's walk would ---------------------------------

_SAMPLE_PARAMETERS = {
    "UUIDConvertor": "9a1c2d3e-4f50-4a6b-8c7d-0e1f2a3b4c5d",
    "PathConvertor": "family/some/photo.jpg",
    "StringConvertor": "sample",
    "IntegerConvertor": "7",
}


def _http(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


async def _handed_to(app: ASGIApp, scope: dict[str, Any]) -> dict[str, Any] | None:
    """What `app` (the index, or FastAPI's walk behind it) hands a route: the route and the
    scope keys FastAPI's routing sets; None when it finds no route (404, 405)."""
    chosen: list[dict[str, Any]] = []
    original = APIRoute.handle

    async def record(route: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        routing_keys = ("route", "endpoint", "path_params", "router", "fastapi")
        chosen.append({"handle": route, **{key: scope.get(key) for key in routing_keys}})

    APIRoute.handle = record  # type: ignore[method-assign]
    try:
        await app(dict(scope, app=None), None, None)  # type: ignore[arg-type]
    except HTTPException:
        return None
    finally:
        APIRoute.handle = original  # type: ignore[method-assign]
    return chosen[0]


async def test_the_route_index_finds_the_route_fastapis_walk_finds_for_every_path(
    app: FastAPI,
) -> None:
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex) and index.usable
    entries = [*index._with_parameters, *(e for es in index._exact.values() for e in es)]
    assert len(entries) > 50
    looked = 0
    for context in (entry.context for entry in entries):
        path, methods = context.path_format, context.methods
        for name, convertor in context.param_convertors.items():
            path = path.replace(f"{{{name}}}", _SAMPLE_PARAMETERS[type(convertor).__name__])
        for method in {*methods, "GET", "POST", "PATCH", "DELETE", "PUT"}:
            scope = _http(method, path)
            found = index._find(scope)
            walked = await _handed_to(index._walk, scope)
            if found is None:
                # Left to the walk: only when the walk finds no route for that method.
                assert walked is None or method not in methods, (method, path)
                continue
            looked += 1
            assert walked is not None and walked["handle"] is found[0].context.original_route
            assert await _handed_to(index, scope) == walked, (method, path)
    assert looked > 60


async def test_paths_the_index_does_not_find_are_answered_by_the_walk(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/api/v1/nothing")).status_code == 404
        assert (await client.put("/api/v1/auth/me")).status_code == 405
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/static/swagger-ui/swagger-ui.css")).status_code == 200


async def test_the_route_index_sees_routes_added_later_and_stands_aside_for_others() -> None:
    feed, auth, by_id = ApiRouter(prefix="/feed"), ApiRouter(prefix="/auth"), ApiRouter()

    @feed.get("")
    async def page() -> dict[str, str]:
        return {"at": "feed"}

    @auth.get("/me")
    async def me() -> dict[str, str]:
        return {"at": "me"}

    @by_id.get("/{anything}/x")
    async def anything(anything: str) -> dict[str, str]:
        return {"at": anything}

    @by_id.get("/first/x")
    async def shadowed() -> dict[str, str]:
        return {"at": "never: the route with a parameter comes first"}

    v1 = ApiRouter()
    v1.include_router(feed)
    v1.include_router(auth)
    app = FastAPI()
    app.include_router(v1, prefix="/api/v1")
    app.include_router(by_id)
    index = app.router.middleware_stack = RouteIndex(app.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/api/v1/feed")).json() == {"at": "feed"}
        assert (await client.get("/api/v1/auth/me")).json() == {"at": "me"}
        assert (await client.get("/y/x")).json() == {"at": "y"}
        assert (await client.get("/first/x")).json() == {"at": "first"}  # FastAPI's order
        assert (await client.get("/api/v1/nothing")).status_code == 404
    assert index.usable

    # A route added later, once requests were served, is seen: to a router without a
    # prefix, to one included in another, and to the app itself (left to the walk).
    @by_id.get("/late")
    async def late() -> dict[str, str]:
        return {"at": "late"}

    @feed.get("/late")
    async def late_feed() -> dict[str, str]:
        return {"at": "late feed"}

    @app.get("/api/v1/feed/later")
    async def on_the_app() -> dict[str, str]:
        return {"at": "on the app"}

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/late")).json() == {"at": "late"}
        assert (await client.get("/api/v1/feed/late")).json() == {"at": "late feed"}
        assert (await client.get("/api/v1/feed/later")).json() == {"at": "on the app"}
        assert index._find(_http("GET", "/api/v1/feed/later")) is None
        assert index._find(_http("GET", "/api/v1/feed")) is not None

    # A plain APIRouter does not report its changes: with one included, everything walks.
    plain = APIRouter(prefix="/plain")

    @plain.get("")
    async def plain_route() -> dict[str, str]:
        return {"at": "plain"}

    app.include_router(plain)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/plain")).json() == {"at": "plain"}
        assert (await client.get("/api/v1/auth/me")).json() == {"at": "me"}
    assert not index.usable


# The transaction ends before the answer goes out -----------------------------------------


async def _call_and_look_when_the_answer_starts(
    app: FastAPI,
    method: str,
    path: str,
    member_headers: dict[str, str],
    body: bytes,
    look: Any,
) -> tuple[int, Any]:
    """Call the app as a server does; run `look()` the moment the response starts."""
    headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in member_headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    sent = False
    seen: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
            seen["looked"] = await look()

    await app(scope, receive, send)
    return seen["status"], seen["looked"]


async def test_a_write_is_committed_before_its_answer_starts(
    app: FastAPI, factory: Factory, pg: Any
) -> None:
    # docs/api.md: a 2xx means the change is stored. Another connection sees it as soon as
    # the status line goes out.
    member = await factory.register("adult")

    async def stored_name() -> str:
        return str(
            await pg.fetchval(
                "select display_name from public.user_profiles where id = $1", member.id
            )
        )

    status, name = await _call_and_look_when_the_answer_starts(
        app,
        "PATCH",
        f"{API}/auth/me",
        member.headers,
        b'{"display_name": "Stored First"}',
        stored_name,
    )
    assert (status, name) == (200, "Stored First")


async def test_a_refused_request_gives_its_connection_back_before_its_answer(
    app: FastAPI, factory: Factory, pg: Any
) -> None:
    member = await factory.register("adult")
    database = app.state.context.database
    idle_before = database.pool.get_idle_size() + (
        database.pool.get_max_size() - database.pool.get_size()
    )

    async def pool_free() -> int:
        return int(
            database.pool.get_idle_size()
            + (database.pool.get_max_size() - database.pool.get_size())
        )

    # A body refused (422) once the member's session is open: it ends, rolled back, and its
    # connection is back in the pool before the answer starts.
    status, free = await _call_and_look_when_the_answer_starts(
        app,
        "PATCH",
        f"{API}/auth/me",
        member.headers,
        b'{"display_name": "Never", "avatar_url": "https://example.com/a.png", '
        b'"avatar_storage_path": "x/y.png"}',
        pool_free,
    )
    assert status == 422
    assert free == idle_before
    name = await pg.fetchval(
        "select display_name from public.user_profiles where id = $1", member.id
    )
    assert name != "Never"


async def test_a_plain_router_inside_an_api_router_is_still_walked_afresh() -> None:
    from fastapi import APIRouter

    plain, outer = APIRouter(prefix="/plain"), ApiRouter()

    @plain.get("/a")
    async def a() -> dict[str, str]:
        return {"at": "a"}

    outer.include_router(plain)
    app = FastAPI()
    app.include_router(outer)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/plain/a")).json() == {"at": "a"}

        # Added late to a plain APIRouter (which tells no ApiRouter of its changes): seen.
        @plain.get("/b")
        async def b() -> dict[str, str]:
            return {"at": "b"}

        assert (await client.get("/plain/b")).json() == {"at": "b"}


# A worker's heap: what start-up built is left out of later garbage collections ------------


@pytest.mark.parametrize("server_process", [True, False])
async def test_only_a_server_process_sets_its_start_up_heap_aside(
    settings: Settings, server_process: bool
) -> None:
    gc.unfreeze()  # whatever an earlier test left
    app = create_app(settings, server_process=server_process)
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # the test process is not a server: give its objects back to gc
    # A uvicorn worker (configure_from_env): every object start-up made, in the hundreds of
    # thousands; a test's or a script's app leaves the collector as it was.
    assert (frozen > 50_000) is server_process
