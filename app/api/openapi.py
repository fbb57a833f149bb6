"""What the OpenAPI document says beyond each route's own declarations.

A route lists the error statuses its own rules answer (`error_responses(403, 404)`) and the
headers of its success response (`success_headers`). The statuses that follow from *how* a
route is built are declared here, once, for every route, so a new endpoint gets them right
without anyone remembering:

- 401 `not_authenticated | token_expired | token_revoked`: it needs a signed-in member;
- 413 `payload_too_large`: it takes a body (`GuardMiddleware` refuses one over the limit);
- 422 `validation_failed`: always (a URL that is not UTF-8 is refused before any route);
- 429 `rate_limited`: it counts requests (`deps.limit_per_ip`);
- 500 `internal_error`: always (the last-resort answer to a bug);
- 503 `service_unavailable`: it uses the context (database, Supabase Auth or Storage),
  unless marked `@never_unavailable`.

Every error response refers to the one error schema (`ErrorOut`, `ValidationErrorOut`).
Operation ids are written on each route (`feed_list`, `memories_create`); a route without
one gets its function's name, so every id reads `^[a-z]+(_[a-z]+)*$`.
"""

import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import deps
from app.middleware import BODY_METHODS
from app.schemas.common import ErrorOut, ValidationErrorOut

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": _REF.format(model=ErrorOut.__name__)}
_VALIDATION_ERROR = {"$ref": _REF.format(model=ValidationErrorOut.__name__)}

# The response headers the API sends, described once.
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "`Bearer`: send `Authorization: Bearer <access_token>`.",
        "schema": {"type": "string"},
    },
    "X-Total-Count": {
        "description": "How many items there are across all pages.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "ETag": {
        "description": "The version of what was sent; send it back in `If-None-Match`.",
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "The URL of what was created.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "How long, and where, the response may be kept.",
        "schema": {"type": "string"},
    },
    "Pragma": {
        "description": "`no-cache`, for HTTP/1.0 caches (RFC 6749 §5.1).",
        "schema": {"type": "string"},
    },
}

NO_STORE_HEADERS = {
    "Cache-Control": {
        **HEADERS["Cache-Control"],
        "schema": {"type": "string", "const": "no-store"},
    },
    "Pragma": HEADERS["Pragma"],
}

_COMMON: dict[int, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    401: (
        "Not signed in, or the token expired or was revoked (see `code`)",
        _ERROR,
        ("WWW-Authenticate",),
    ),
    413: ("The request body is over the limit", _ERROR, ()),
    422: ("The request does not match the schema or a field rule", _VALIDATION_ERROR, ()),
    429: ("Too many requests", _ERROR, ("Retry-After",)),
    500: ("A bug; nothing was half-written. Quote `request_id`", _ERROR, ()),
    503: (
        "A service it needs is unreachable for a moment; nothing was stored",
        _ERROR,
        ("Retry-After",),
    ),
}

_never_unavailable: set[Callable[..., Any]] = set()


def never_unavailable(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint that needs neither the database nor an outside service: no 503."""
    _never_unavailable.add(endpoint)
    return endpoint


def success_headers(status: int, *names: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` declaring headers of the success response, e.g. `X-Total-Count`."""
    return {status: {"headers": {name: HEADERS[name] for name in names}}}


def conditional_responses() -> dict[int | str, dict[str, Any]]:
    """`responses=` of a GET that answers `If-None-Match` (`app.api.conditional`)."""
    headers = {"ETag": HEADERS["ETag"], "Cache-Control": HEADERS["Cache-Control"]}
    return {
        200: {"headers": headers},
        304: {
            "description": "Not modified: `If-None-Match` names the current `ETag`",
            "headers": headers,
        },
    }


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI parameters FastAPI declares for `Annotated[model, Query()]`, for a route
    that reads the model itself (`deps.query_model`): the document stays as FastAPI writes
    it. Taken from a route of a throwaway app, with FastAPI's own machinery, when the
    document is made (not at start-up)."""

    async def declared(query: Annotated[model, Query()]) -> None:  # type: ignore[valid-type]
        return None

    probe = FastAPI()
    probe.get("/")(declared)
    parameters: list[dict[str, Any]] = probe.openapi()["paths"]["/"]["get"]["parameters"]
    return parameters


def operation_id(route: Any) -> str:
    """The fallback id of a route that names none: its function's name, letters only."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z]", "_", route.name.lower())).strip("_")


def install(app: FastAPI) -> None:
    """Add the declarations above to every operation of FastAPI's document."""
    completed: list[dict[str, Any]] = []  # the document last completed (held, not its id)

    def openapi() -> dict[str, Any]:
        # FastAPI builds the document anew when routes were added (a second API version);
        # each new document gets the declarations once.
        document = FastAPI.openapi(app)
        if not completed or completed[0] is not document:
            _declare_common(app, document)
            completed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(app: FastAPI) -> Iterator[RouteContext]:
    """Every API route as served, under the prefixes of the routers that include it."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            yield route


def common_statuses(route: RouteContext, method: str) -> list[int]:
    """The statuses `route` can answer because of how it is built (see the module doc)."""
    calls = set(_calls(route.dependant))
    statuses = [422, 500]
    member = not deps.MEMBER_DEPENDENCIES.isdisjoint(calls)
    if member:
        statuses.append(401)
    if method in BODY_METHODS:
        statuses.append(413)
    if any(isinstance(call, deps.PerIpLimit | deps.PerMemberLimit) for call in calls):
        statuses.append(429)
    if (member or deps.get_context in calls) and route.endpoint not in _never_unavailable:
        statuses.append(503)
    return sorted(statuses)


def _declare_common(app: FastAPI, document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(ErrorOut, "serialization"), (ValidationErrorOut, "serialization")],
        ref_template=_REF,
    )
    for name, schema in definitions.get("$defs", {}).items():
        components.setdefault(name, schema)
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in common_statuses(route, method):
                description, schema, _ = _COMMON[status]
                response = responses.setdefault(str(status), {"description": description})
                # A route's own declaration (its description, its own model) comes first.
                response.setdefault("content", {"application/json": {"schema": schema}})
            # The headers that go with an error, wherever it was declared (a route may
            # declare 401 itself: login); not on a route's own body (/health/ready's 503).
            for status, (_, schema, headers) in _COMMON.items():
                response = responses.get(str(status))
                if response is None or not headers:
                    continue
                if response.get("content", {}).get("application/json", {}).get("schema") == schema:
                    named = response.setdefault("headers", {})
                    for name in headers:
                        named.setdefault(name, HEADERS[name])
            calls = list(_calls(route.dependant))
            if not deps.MEMBER_DEPENDENCIES.isdisjoint(calls):
                # deps._member_session calls the bearer scheme itself (docs/performance.md).
                name, scheme = deps.BEARER
                components_root = document.setdefault("components", {})
                components_root.setdefault("securitySchemes", {}).setdefault(name, scheme)
                operation.setdefault("security", [{name: []}])
            for call in calls:
                if isinstance(call, deps.QueryReader):
                    operation.setdefault("parameters", []).extend(query_parameters(call.model))
            if deps.no_store in calls:
                success = responses.setdefault(str(route.status_code or 200), {})
                success.setdefault("headers", {}).update(NO_STORE_HEADERS)
            operation["responses"] = dict(sorted(responses.items()))
    _drop_unused_schemas(document)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _drop_unused_schemas(document: dict[str, Any]) -> None:
    """FastAPI's own `HTTPValidationError` is never answered (see `ValidationErrorOut`)."""
    schemas = document.get("components", {}).get("schemas", {})
    text = repr(document.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and _REF.format(model=name) not in text:
            del schemas[name]
