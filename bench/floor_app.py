"""The floor of a request that reads as a member: what bench/http_ceilings.py compares
`GET /api/v1/auth/me` against, beside the bare FastAPI app (bench/bare_app.py).

A bare FastAPI app whose routes take a connection from an asyncpg pool and run a transaction
of trivial statements on the project's own built-in PostgreSQL (DATABASE_URL), and nothing
else: no token, no row level security, no log line, no metrics.

- `/three`: BEGIN, one statement, COMMIT. The fewest round trips a read under row level
  security can take through asyncpg: the role and the claims must be set before the reading
  statement is planned, so they cannot share it, and a transaction (or a session-level
  setting undone afterwards) must hold them. (BEGIN and the switch could share a simple
  query if the claims were written into the SQL as a literal; that is the one below.)
- `/four`: BEGIN, two statements, COMMIT: the round trips `/auth/me` takes (enter as the
  member, read the profile).
- `/three/declared`: `/three`'s transaction, with the endpoint declaring what it needs as
  every endpoint of the project does (who acts, on which connection, the app's context:
  `CurrentUser`, `UserDb` and `Context` in app/api/deps.py, each an
  `Annotated[..., Depends(...)]` that takes the request), so FastAPI solves three
  dependencies before it runs; the connection's dependency opens the transaction.

Whatever `/auth/me` does beyond these (checking the token, entering as the member, reading
under RLS, writing its log line, shaping the answer) can only add to them.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request

pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global pool
    # The project's pool size: every connection wrk keeps open has one.
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


async def _transaction(statements: int) -> dict[str, str]:
    assert pool is not None
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(statements):
            status = await conn.fetchval("select 'ok'")
    return {"status": status}


@dataclass(frozen=True, slots=True)
class Opened:
    conn: asyncpg.Connection
    transaction: Any


async def who(request: Request) -> str:
    return "member"


async def opened(request: Request) -> Opened:
    assert pool is not None
    conn = await pool.acquire()
    transaction = conn.transaction()
    await transaction.start()
    return Opened(conn, transaction)


async def context(request: Request) -> Any:
    return request.app.state


Who = Annotated[str, Depends(who)]
Transaction = Annotated[Opened, Depends(opened)]
Context = Annotated[Any, Depends(context)]


@app.get("/three/declared")
async def three_declared(actor: Who, db: Transaction, state: Context) -> dict[str, str]:
    assert pool is not None
    try:
        status = await db.conn.fetchval("select 'ok'")
        await db.transaction.commit()
    finally:
        await pool.release(db.conn)
    return {"status": status}


@app.get("/three")
async def three() -> dict[str, str]:
    return await _transaction(1)


@app.get("/four")
async def four() -> dict[str, str]:
    return await _transaction(2)
