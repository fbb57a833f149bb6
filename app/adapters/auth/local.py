"""The built-in `AuthProvider`: argon2id hashes in `auth.users` of our own database.

Called while a session is open (registration's system session, a member's RLS session when
provisioning a child or leaving), it works on that session's connection, as service role
for the statement (`service_role_within`): the account commits or rolls back with
the profile, so a failed registration leaves no orphan account, and no request ever holds
one pooled connection while it waits for a second (N of them would deadlock a pool of N).
Called outside a session (a login's password check), it opens a system session of its own.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from app.adapters.passwords import Passwords
from app.db.postgres import Connection, Database, service_role_within

_INSERT_USER = """
insert into auth.users (email, encrypted_password, raw_user_meta_data)
values ($1, $2, jsonb_build_object('username', $3::text))
returning id
"""
_DELETE_USER = "delete from auth.users where id = $1"
_PASSWORD_HASH = "select encrypted_password from auth.users where id = $1"
_TOUCH_SIGN_IN = "update auth.users set last_sign_in_at = now() where id = $1"
_SET_PASSWORD = """
update auth.users set encrypted_password = $2, updated_at = now() where id = $1
"""
# The row stays for the profile's foreign key; nothing that identifies or admits remains.
_CLOSE = """
update auth.users
set email = null, encrypted_password = null, raw_user_meta_data = '{}'::jsonb,
    updated_at = now()
where id = $1
"""


class LocalAuthProvider:
    def __init__(self, database: Database, passwords: Passwords):
        self._database = database
        self._passwords = passwords

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Connection]:
        """The caller's open session as service role, or else a system session of our own."""
        conn = self._database.connection_in_use()
        if conn is None:
            async with self._database.system_session() as db:
                yield db
        else:
            async with service_role_within(conn) as db:
                yield db

    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        password_hash = await self._passwords.hash(password)
        async with self._session() as db:
            user_id: UUID = await db.fetchval(_INSERT_USER, email, password_hash, username)
        return user_id

    async def delete_user(self, user_id: UUID) -> None:
        async with self._session() as db:
            await db.execute(_DELETE_USER, user_id)

    async def set_password(self, user_id: UUID, password: str) -> None:
        password_hash = await self._passwords.hash(password)
        async with self._session() as db:
            await db.execute(_SET_PASSWORD, user_id, password_hash)

    async def close_account(self, user_id: UUID) -> None:
        async with self._session() as db:
            await db.execute(_CLOSE, user_id)

    async def check_password(
        self, *, user_id: UUID | None, email: str | None, username: str | None, password: str
    ) -> bool:
        stored_hash = None
        if user_id is not None:
            async with self._session() as db:
                stored_hash = await db.fetchval(_PASSWORD_HASH, user_id)
        ok = await self._passwords.verify(stored_hash, password)
        if ok and user_id is not None:
            async with self._session() as db:
                await db.execute(_TOUCH_SIGN_IN, user_id)
        return ok
