"""`ApiRouter`: an APIRouter that turns a request away at once when none of its routes can match,
and whose routes (`ApiRoute`) end a member's transaction before their answer is sent.

FastAPI (0.16x) keeps each included router as a node of its own and matches a request by
walking, in order, every route of every included router before the one that holds the
route — and walks the chosen branch again on the way down to the endpoint. Each step sets
and restores scope keys: for `GET /api/v1/feed` that walk cost more than the rest of the
framework (docs/performance.md). Every route of a router whose paths start with literal
text ("/feed", "/auth") can only match a path holding that text, so a router whose texts
are all absent from the path answers `Match.NONE` without looking at its routes. When in
doubt (a prefix or path that starts with a parameter, a route of another kind) it looks.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from app.api.deps import end_member_session


class ApiRoute(APIRoute):
    """A route whose member transaction (`deps.user_session`) ends when its endpoint returns
    or raises — committed or rolled back — before the answer is sent: a 2xx means stored.

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

    # What a path must contain for one of this router's routes to match it; None: anything.
    _needles: tuple[str, ...] | None = None
    # len(self.routes) when _needles was worked out: routes added later redo it.
    _needles_for: int = -1

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        needles = self.path_needles()
        if needles is not None:
            path = scope["path"]
            if not any(needle in path for needle in needles):
                return Match.NONE, {}
        return super().matches(scope)

    def path_needles(self) -> tuple[str, ...] | None:
        if self._needles_for != len(self.routes):
            self._needles = _needles(self)
            self._needles_for = len(self.routes)
        return self._needles


def _only_api_routers(router: APIRouter) -> bool:
    for route in router.routes:
        included = getattr(route, "original_router", None)
        if included is not None and not (
            isinstance(included, ApiRouter) and _only_api_routers(included)
        ):
            return False
    return True


def _needles(router: APIRouter) -> tuple[str, ...] | None:
    if router.prefix and "{" not in router.prefix:
        return (router.prefix,)
    found: list[str] = []
    for route in router.routes:
        # An included router: FastAPI keeps the router itself as `original_router`.
        included = getattr(route, "original_router", None)
        needles: tuple[str, ...] | None
        if isinstance(included, ApiRouter):
            needles = included.path_needles()
        elif isinstance(route, APIRoute):
            literal = route.path.split("{", 1)[0]
            needles = (literal,) if literal.strip("/") else None  # "/" is in every path
        else:
            needles = None
        if needles is None:
            return None
        found.extend(needles)
    return tuple(dict.fromkeys(found)) or None
