"""Request dependencies: who is acting, on which connection, with which permission.

`CurrentUser` and `UserDb` share one per-request session: the bearer token is
verified, a transaction is opened as `authenticated` with the user's claims (so
RLS applies), and the member is loaded from the database in it (so a removed
member or a logged-out session is refused at once). The transaction commits when
the endpoint returns — before the response is sent, so a 2xx means it is stored
(`app.api.routing.ApiRoute` calls `end_member_session`).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from app.adapters import rate_limit, tokens
from app.context import AppContext
from app.db.postgres import Connection, Database
from app.errors import Invalid, NotFound, Unauthorized
from app.log import family_id_var, user_id_var
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.services import events_service, session_service

QueryModel = TypeVar("QueryModel", bound=BaseModel)

_bearer = HTTPBearer(auto_error=False, description="Access token from /auth/login.")
# The scheme as the OpenAPI document names and describes it (what FastAPI would declare).
BEARER = (_bearer.scheme_name, _bearer.model.model_dump(by_alias=True, exclude_none=True))

# Every dependency here is `async def`, even those that only read an attribute: FastAPI runs
# a plain `def` dependency in a worker thread, once per request, and that hand-off cost more
# than the rest of the dependency tree (tests/test_request_path.py keeps it so).


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_database(context: Context) -> Database:
    return context.database


DatabaseDep = Annotated[Database, Depends(get_database)]


# Where a request keeps its open member session (its request scope, under this key) until
# `end_member_session` ends it.
_OPEN_SESSION = "timeless.member_session"


@dataclass(frozen=True, slots=True)
class _OpenSession:
    actor: Actor
    db: Connection
    closing: AbstractAsyncContextManager[Any]


async def user_session(request: Request) -> Actor:
    """The signed-in member, with their transaction opened (as them, under RLS) for the request."""
    return (await _member_session(request)).actor


async def member_db(request: Request) -> Connection:
    """The connection of the member's transaction (opened by whichever of this and
    `user_session` an endpoint asks for first)."""
    return (await _member_session(request)).db


# The dependencies that open a member's session (app.api.openapi declares 401 and the bearer
# scheme on the routes that use one).
MEMBER_DEPENDENCIES = frozenset({user_session, member_db})


async def _member_session(request: Request) -> _OpenSession:
    """Open the member's transaction once per request and keep it in the request scope.

    The member dependencies are plain `async def`s with no dependencies of their own: FastAPI
    solves every sub-dependency of a dependency again before looking in its cache, and its
    machinery for generator dependencies (an exit stack, a shielded exit, a context manager
    around the generator) cost more than the rest of the dependency tree.
    `app.api.routing.ApiRoute` ends the transaction instead, when the endpoint returns or
    raises, before the answer is sent (`end_member_session`).

    The bearer scheme is called here rather than declared as a sub-dependency: a security
    scheme in the tree makes FastAPI work out OAuth scopes for every dependency above it on
    every request (6 % of `/auth/me`'s Python work). `app.api.openapi` declares the scheme on
    the routes that depend on this, as FastAPI did (`BEARER`).
    """
    opened: _OpenSession | None = request.scope.get(_OPEN_SESSION)
    if opened is not None:
        return opened
    context: AppContext = request.app.state.context
    credentials = await _bearer(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Not authenticated")
    claims = await _verify_token(context, credentials.credentials)
    # One round trip opens the transaction as the member and loads them (session_service).
    # Entered by hand: on a refusal (401) the block has already rolled back and let go.
    opening = session_service.member_session(
        context.database,
        claims,
        touch_after_seconds=context.settings.session_touch_interval_seconds,
    )
    db, actor = await opening.__aenter__()
    opened = request.scope[_OPEN_SESSION] = _OpenSession(actor, db, opening)
    user_id_var.set(str(actor.id))
    family_id_var.set(str(actor.family_unit_id))
    return opened


async def end_member_session(scope: Scope, error: BaseException | None) -> None:
    """Commit (no `error`) or roll back the request's member transaction, if it opened one,
    and give its connection back. A failed commit raises, so the answer is an error."""
    opened: _OpenSession | None = scope.pop(_OPEN_SESSION, None)
    if opened is None:
        return
    if error is None:
        await opened.closing.__aexit__(None, None, None)
    else:
        await opened.closing.__aexit__(type(error), error, error.__traceback__)


async def _verify_token(context: AppContext, token: str) -> tokens.AccessClaims:
    external = context.external_tokens
    if external is not None:
        claims: tokens.AccessClaims | None = await external(token)
        if claims is not None:
            return claims
    return tokens.decode_access_token(token, secret=context.settings.jwt_secret)


CurrentUser = Annotated[Actor, Depends(user_session)]


UserDb = Annotated[Connection, Depends(member_db)]


async def count_per_ip(request: Request, context: AppContext, rule: str) -> None:
    """Count this request against the client IP's allowance for `rule` (429 once spent).

    The client IP is the one app.proxy believes: a trusted proxy's X-Forwarded-For, else
    the peer. Called first thing in an endpoint, after the body was validated, so a request
    refused as invalid (422) spends nothing; `limit_per_ip` counts every request.
    """
    client_ip = request.client.host if request.client else "unknown"
    await context.rate_limiter.hit(f"{rule}:ip", client_ip, rate_limit.PER_IP[rule])


class PerIpLimit:
    """`limit_per_ip(rule)`: counts every request, before anything else runs.

    A class, so `app.api.openapi` can tell a rate-limited route by its dependencies.
    """

    def __init__(self, rule: str) -> None:
        self.rule = rule

    async def __call__(self, request: Request, context: Context) -> None:
        await count_per_ip(request, context, self.rule)


async def _stream_actor(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ticket: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=512,
            description="A ticket from POST /events/ticket, for clients that cannot send "
            "headers (EventSource). Single use.",
        ),
    ] = None,
) -> Actor:
    """The member of a long-lived request (GET /events): a ticket, or a bearer token.

    Checked in a short transaction of its own: a stream must not hold a connection.
    """
    if ticket is not None:
        return await events_service.redeem_ticket(context.database, ticket)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Not authenticated")
    claims = await _verify_token(context, credentials.credentials)
    actor = await session_service.load_member(context.database, claims)
    user_id_var.set(str(actor.id))
    family_id_var.set(str(actor.family_unit_id))
    return actor


StreamUser = Annotated[Actor, Depends(_stream_actor)]


def limit_per_ip(rule: str) -> Any:
    """A route dependency counting each request against the client IP's allowance."""
    return Depends(PerIpLimit(rule))


class QueryReader(Generic[QueryModel]):
    """`query_model(Model)`: a dependency reading a route's query parameters into `Model`, as
    FastAPI does for `Annotated[Model, Query()]`: the same values (a repeated parameter's
    last), the same 422.

    FastAPI's own reading walks every field's aliases and annotation on each request: 75 µs
    and a fifth of a feed page's Python work for its twelve parameters, where pydantic reads
    them in 3 µs. `app.api.openapi` declares the parameters FastAPI would on every route that
    uses one, so the document is FastAPI's.
    """

    def __init__(self, model: type[QueryModel]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> QueryModel:
        try:
            return self.model.model_validate(dict(request.query_params))
        except ValidationError as error:
            problems = error.errors(include_url=False)
            raise RequestValidationError(
                [{**problem, "loc": ("query", *problem["loc"])} for problem in problems]
            ) from None


def query_model(model: type[QueryModel]) -> Any:
    """A route parameter's `Depends` reading the query parameters into `model` (QueryReader)."""
    return Depends(QueryReader(model))


async def no_store(response: Response) -> None:
    # RFC 6749 §5.1: a response holding tokens or credentials is kept by no cache.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


NO_STORE = Depends(no_store)
"""For routes whose answer holds a token or a password (`dependencies=[NO_STORE]`)."""


class PerMemberLimit:
    """`limit_per_member(rule)`: counts every request of the signed-in member, from any IP.

    A class, like `PerIpLimit`, so a rate-limited route can be told by its dependencies.
    """

    def __init__(self, rule: str) -> None:
        self.rule = rule

    async def __call__(self, actor: CurrentUser, context: Context) -> None:
        await context.rate_limiter.hit(
            f"{self.rule}:member", str(actor.id), rate_limit.PER_MEMBER[self.rule]
        )


def limit_per_member(rule: str) -> Any:
    """A route dependency counting each request against the signed-in member's allowance."""
    return Depends(PerMemberLimit(rule))


@asynccontextmanager
async def failed_attempts_limited(
    context: AppContext, rule: str, account: str, limit: rate_limit.Limit
) -> AsyncIterator[None]:
    """Allow at most `limit` failed attempts per account (or invite token) and window.

    Each attempt is counted before it runs — counting a failure only after the password
    check let 25 parallel guesses all be checked — and given back unless it failed
    (401, 400, 404), so successes and outages use up nothing.
    """
    reserved = await context.rate_limiter.reserve(f"{rule}:account", account, limit)
    try:
        yield
    except (Unauthorized, Invalid, NotFound):
        raise  # a failure: the attempt stays counted
    except BaseException:
        await context.rate_limiter.give_back(reserved)
        raise
    await context.rate_limiter.give_back(reserved)


def require(permission: Permission) -> Callable[[Actor], Awaitable[Actor]]:
    """A dependency refusing (403) callers whose role lacks the permission."""

    async def check(actor: CurrentUser) -> Actor:
        rbac.require(actor, permission)
        return actor

    return check
