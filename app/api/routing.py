"""How a request reaches its endpoint: `ApiRouter`/`ApiRoute`, and `RouteIndex`.

`ApiRoute` (the route class of every `ApiRouter`) ends a member's transaction before the
answer is sent. `RouteIndex` finds a request's route in a table instead of FastAPI's walk.

FastAPI (0.16x) keeps each included router as a node of its own and matches a request by
walking, in order, every route of every included router before the one that holds the
route — and walks the chosen branch again on the way down to the endpoint, setting and
restoring scope keys at each step. For `GET /api/v1/auth/me` that walk cost about as much
as the rest of the framework (docs/performance.md). A route can only match a path that
starts with its literal text (what comes before its first `{`), so `RouteIndex` looks up
the routes whose path is exactly the request's, and those with parameters whose literal
start the path has, and asks them in FastAPI's order, with FastAPI's own matching. The
first full match is the route FastAPI's walk would choose; the index then sets the scope
as the walk would and hands the request to it. Whatever it does not find (a 404, a 405,
a mount, a route of another kind) goes through FastAPI's walk, which then decides.
"""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import end_member_session


class ApiRoute(APIRoute):
    """A route whose member transaction (`deps.user_session`, `deps.member_db`) ends when its
    endpoint returns or raises — committed or rolled back — before the answer is sent: a 2xx
    means stored.

    Every route is wrapped (a dependency added where the router is included counts too);
    for one that opened no session the end is a dictionary look-up.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except BaseException as error:
                await end_member_session(request.scope, error)
                raise
            await end_member_session(request.scope, None)
            return response

        return handle


# Bumped whenever the routes of any ApiRouter change (see ApiRouter._get_routes_version).
_generation = 0


class ApiRouter(APIRouter):
    # (generation, version) of the last _get_routes_version worked out from the top.
    _version_seen: tuple[int, int] | None = None

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", ApiRoute)
        super().__init__(**kwargs)

    def _mark_routes_changed(self) -> None:
        global _generation
        _generation += 1
        super()._mark_routes_changed()

    def _get_routes_version(self, seen: set[int] | None = None) -> int:
        """FastAPI asks this at every level of every request's route walk (twice or three
        times per level) and works it out by walking every router included below: a tenth of
        `/auth/me`'s Python work. The answer changes only when routes are added, which every
        ApiRouter reports (`_mark_routes_changed`): kept until then, when every router below
        is one (a plain APIRouter's change would go unseen, so then it is worked out)."""
        if seen is None and self._version_seen is not None:
            generation, version = self._version_seen
            if generation == _generation:
                return version
        version = super()._get_routes_version(seen)
        if seen is None and _only_api_routers(self):
            self._version_seen = (_generation, version)
        return version


def _only_api_routers(router: APIRouter) -> bool:
    for route in router.routes:
        included = getattr(route, "original_router", None)
        if included is not None and not (
            isinstance(included, ApiRouter) and _only_api_routers(included)
        ):
            return False
    return True


# FastAPI's own names for what its walk leaves in the scope and for the nodes it walks; the
# index stands aside (every request takes the walk) if a FastAPI release renames them.
_IncludedRouter: Any = getattr(fastapi_routing, "_IncludedRouter", None)
_EffectiveRouteContext: Any = getattr(fastapi_routing, "_EffectiveRouteContext", None)
_FASTAPI_SCOPE: Any = getattr(fastapi_routing, "_FASTAPI_SCOPE_KEY", None)
_INCLUDED_ROUTER: Any = getattr(fastapi_routing, "_FASTAPI_INCLUDED_ROUTER_KEY", None)
_ROUTE_CONTEXT: Any = getattr(fastapi_routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None)


@dataclass(frozen=True, slots=True)
class _Entry:
    order: int  # where FastAPI's walk meets the route: the first full match in order wins
    literal: str  # the path's text before its first parameter
    context: Any  # FastAPI's _EffectiveRouteContext: the route as included (prefix, deps)
    branch: Any  # the _IncludedRouter whose candidates hold it


class _Unindexable(Exception):
    """The routes hold something the index does not model: every request takes the walk."""


class RouteIndex:
    """The ASGI app in front of a FastAPI router's walk (`router.middleware_stack`).

    The table is built on the first request and again whenever routes were added since (the
    count of the top router's routes, or any `ApiRouter`'s change, says so).
    """

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self._walk: ASGIApp = router.middleware_stack
        self._built_for: tuple[int, int] | None = None
        self._usable = False
        self._exact: dict[str, list[_Entry]] = {}  # paths without parameters
        self._with_parameters: list[_Entry] = []  # in FastAPI's order
        self._elsewhere: tuple[str, ...] = ()  # literal starts of routes left to the walk
        self._count = 0

    @property
    def usable(self) -> bool:
        self._build_if_stale()
        return self._usable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.usable:
            found = self._find(scope)
            if found is not None:
                entry, child_scope = found
                await self._handle(entry, child_scope, scope, receive, send)
                return
        await self._walk(scope, receive, send)

    def _find(self, scope: Scope) -> tuple[_Entry, Scope] | None:
        path = get_route_path(scope)
        if path.startswith(self._elsewhere):
            return None
        found: tuple[_Entry, Scope] | None = None
        for entry in self._exact.get(path, ()):
            match, child_scope = entry.context.matches(scope)
            if match == Match.FULL:
                found = (entry, child_scope)
                break
        for entry in self._with_parameters:
            if found is not None and entry.order > found[0].order:
                break
            if path.startswith(entry.literal):
                match, child_scope = entry.context.matches(scope)
                if match == Match.FULL:
                    return entry, child_scope
        return found

    async def _handle(
        self, entry: _Entry, child_scope: Scope, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # What FastAPI's walk leaves in the scope on its way to this route
        # (APIRouter.app, _IncludedRouter.handle and _handle_selected).
        scope.setdefault("router", self.router)
        fastapi_scope = scope.setdefault(_FASTAPI_SCOPE, {})
        fastapi_scope[_INCLUDED_ROUTER] = entry.branch
        scope.update(child_scope)
        fastapi_scope[_ROUTE_CONTEXT] = entry.context
        route: APIRoute = entry.context.original_route
        scope["route"] = route
        await route.handle(scope, receive, send)

    def _build_if_stale(self) -> None:
        built_for = (len(self.router.routes), _generation)
        if built_for == self._built_for:
            return
        self._exact, self._with_parameters, self._elsewhere, self._count = {}, [], (), 0
        try:
            self._build()
            self._usable = True
        except _Unindexable:
            self._usable = False
        self._built_for = built_for

    def _build(self) -> None:
        if None in (_IncludedRouter, _EffectiveRouteContext, _FASTAPI_SCOPE, _INCLUDED_ROUTER):
            raise _Unindexable("FastAPI's routing is not the one this index models")
        if self.router.form_limits:
            raise _Unindexable("form limits are applied on the walk")
        elsewhere: list[str] = []
        for route in self.router.routes:
            if isinstance(route, _IncludedRouter):
                self._add_branch(route, elsewhere)
            else:  # /openapi.json, a mount, a route added to the app itself
                elsewhere.append(_literal(getattr(route, "path", "/")))
        self._elsewhere = tuple(elsewhere)

    def _add_branch(self, branch: Any, elsewhere: list[str]) -> None:
        # Only ApiRouters report a change of their routes (_generation) to the index.
        if not isinstance(branch.original_router, ApiRouter) or branch.include_context.form_limits:
            raise _Unindexable("an included router the index cannot follow")
        for candidate in branch.effective_candidates():
            if isinstance(candidate, _IncludedRouter):
                self._add_branch(candidate, elsewhere)
            elif isinstance(candidate.original_route, APIRoute):
                literal = _literal(candidate.path_format)
                entry = _Entry(self._count, literal, candidate, branch)
                self._count += 1
                if literal == candidate.path_format:
                    self._exact.setdefault(literal, []).append(entry)
                else:
                    self._with_parameters.append(entry)
            else:
                elsewhere.append(_literal(getattr(candidate, "path_format", "") or "/"))


def _literal(path: str) -> str:
    return path.split("{", 1)[0]
