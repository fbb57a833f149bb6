"""Where accounts and passwords live: the `AuthProvider` seam.

`LocalAuthProvider` keeps argon2id hashes in `auth.users` of our own database.
The Supabase provider (app.services.supabase_auth) keeps them in Supabase Auth.
Either way the backend issues its own tokens; nothing else knows which one runs.

`create_user` commits on its own (for Supabase it is a remote call), so callers
follow the same pattern with both providers: create the account, then write the
profile, and `delete_user` if that second step fails, leaving no orphan.
"""

from typing import Protocol
from uuid import UUID

from app.db.postgres import Database
from app.services.passwords import Passwords


class AuthProvider(Protocol):
    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        """Create the account; raise Conflict if the email is taken."""

    async def delete_user(self, user_id: UUID) -> None:
        """Undo `create_user` (compensation when the profile could not be written)."""

    async def check_password(
        self, *, user_id: UUID | None, email: str | None, username: str | None, password: str
    ) -> bool:
        """True if the password is right. With no user, spend the same time and say no."""


_INSERT_USER = """
insert into auth.users (email, encrypted_password, raw_user_meta_data)
values ($1, $2, jsonb_build_object('username', $3::text))
returning id
"""
_DELETE_USER = "delete from auth.users where id = $1"
_PASSWORD_HASH = "select encrypted_password from auth.users where id = $1"
_TOUCH_SIGN_IN = "update auth.users set last_sign_in_at = now() where id = $1"


class LocalAuthProvider:
    def __init__(self, database: Database, passwords: Passwords):
        self._database = database
        self._passwords = passwords

    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        password_hash = await self._passwords.hash(password)
        async with self._database.system_session() as db:
            user_id: UUID = await db.fetchval(_INSERT_USER, email, password_hash, username)
        return user_id

    async def delete_user(self, user_id: UUID) -> None:
        async with self._database.system_session() as db:
            await db.execute(_DELETE_USER, user_id)

    async def check_password(
        self, *, user_id: UUID | None, email: str | None, username: str | None, password: str
    ) -> bool:
        stored_hash = None
        if user_id is not None:
            async with self._database.system_session() as db:
                stored_hash = await db.fetchval(_PASSWORD_HASH, user_id)
        ok = await self._passwords.verify(stored_hash, password)
        if ok and user_id is not None:
            async with self._database.system_session() as db:
                await db.execute(_TOUCH_SIGN_IN, user_id)
        return ok
