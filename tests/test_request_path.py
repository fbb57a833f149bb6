"""What every request pays for, kept cheap (docs/performance.md): no thread hand-offs.

FastAPI runs a plain `def` dependency or endpoint in a worker thread, once per request: the
hand-off (and the GIL passing back and forth) cost a quarter of `/auth/me` when `_actor`,
`_db` and `get_context` were plain functions. Every dependency and endpoint of the served
app is therefore `async def` (or an object whose `__call__` is).
"""

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from app.adapters import tokens
from app.api.deps import require, user_session
from app.api.routing import ApiRoute, ApiRouter
from app.config import Settings
from app.db.postgres import Database
from app.errors import Unauthorized
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
        route for route in _api_routes(app.router.routes) if user_session in _calls(route.dependant)
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


# Routing: a router that cannot match a path says so without walking its routes ----------


async def test_an_api_router_turns_away_paths_without_its_prefixes() -> None:
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

    v1 = ApiRouter()
    v1.include_router(feed)
    v1.include_router(auth)
    assert v1.path_needles() == ("/feed", "/auth")
    assert by_id.path_needles() is None  # a path that starts with a parameter: always look
    http = {"type": "http", "method": "GET", "path": "/health", "root_path": ""}
    assert v1.matches(http) == (Match.NONE, {})

    app = FastAPI()
    app.include_router(v1, prefix="/api/v1")
    app.include_router(by_id)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/api/v1/feed")).json() == {"at": "feed"}
        assert (await client.get("/api/v1/auth/me")).json() == {"at": "me"}
        assert (await client.get("/y/x")).json() == {"at": "y"}
        assert (await client.get("/api/v1/nothing")).status_code == 404

    # A route added later, once requests were served, is seen: to a router without a
    # prefix, and to one included in another (whose kept routes version must not hide it).
    @by_id.get("/late")
    async def late() -> dict[str, str]:
        return {"at": "late"}

    @feed.get("/late")
    async def late_feed() -> dict[str, str]:
        return {"at": "late feed"}

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/late")).json() == {"at": "late"}
        assert (await client.get("/api/v1/feed/late")).json() == {"at": "late feed"}
    assert by_id.path_needles() is None
    top = ApiRouter()
    top.include_router(feed)
    assert top.path_needles() == ("/feed",)

    @top.get("/status")
    async def status() -> dict[str, str]:
        return {"at": "status"}

    assert top.path_needles() == ("/feed", "/status")


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
