"""`ApiRouter`: an APIRouter that turns a request away at once when none of its routes can match.

FastAPI (0.16x) keeps each included router as a node of its own and matches a request by
walking, in order, every route of every included router before the one that holds the
route — and walks the chosen branch again on the way down to the endpoint. Each step sets
and restores scope keys: for `GET /api/v1/feed` that walk cost more than the rest of the
framework (docs/performance.md). Every route of a router whose paths start with literal
text ("/feed", "/auth") can only match a path holding that text, so a router whose texts
are all absent from the path answers `Match.NONE` without looking at its routes. When in
doubt (a prefix or path that starts with a parameter, a route of another kind) it looks.
"""

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope


class ApiRouter(APIRouter):
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
