"""Request dependencies: who is acting, on which connection, with which permission.

`CurrentUser` and `UserDb` share one per-request session: the bearer token is
verified, a transaction is opened as `authenticated` with the user's claims (so
RLS applies), and the member is loaded from the database in it (so a removed
member or a logged-out session is refused at once). The transaction commits when
the endpoint returns — before the response is sent, so a 2xx means it is stored.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.adapters import rate_limit, tokens
from app.context import AppContext
from app.db.postgres import Connection, Database
from app.errors import Invalid, NotFound, Unauthorized
from app.log import family_id_var, user_id_var
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.services import events_service, session_service

_bearer = HTTPBearer(auto_error=False, description="Access token from /auth/login.")

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


@dataclass(frozen=True)
class UserSession:
    db: Connection
    actor: Actor


async def user_session(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AsyncIterator[UserSession]:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Not authenticated")
    claims = await _verify_token(context, credentials.credentials)
    # One round trip opens the transaction as the member and loads them (session_service).
    async with session_service.member_session(
        context.database,
        claims,
        touch_after_seconds=context.settings.session_touch_interval_seconds,
    ) as (db, actor):
        user_id_var.set(str(actor.id))
        family_id_var.set(str(actor.family_unit_id))
        yield UserSession(db, actor)


async def _verify_token(context: AppContext, token: str) -> tokens.AccessClaims:
    external = context.external_tokens
    if external is not None:
        claims: tokens.AccessClaims | None = await external(token)
        if claims is not None:
            return claims
    return tokens.decode_access_token(token, secret=context.settings.jwt_secret)


# scope="function": the transaction ends (commits) when the endpoint returns,
# before the response goes out, rather than after it has been sent.
_Session = Annotated[UserSession, Depends(user_session, scope="function")]


async def _actor(session: _Session) -> Actor:
    return session.actor


async def _db(session: _Session) -> Connection:
    return session.db


CurrentUser = Annotated[Actor, Depends(_actor)]
UserDb = Annotated[Connection, Depends(_db)]


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
