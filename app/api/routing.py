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


class ApiRouter(APIRouter):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", ApiRoute)
        super().__init__(**kwargs)

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
