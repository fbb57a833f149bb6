"""The built-in `AuthProvider`: argon2id hashes in `auth.users` of our own database."""

from uuid import UUID

from app.adapters.passwords import Passwords
from app.db.postgres import Database

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

    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        password_hash = await self._passwords.hash(password)
        async with self._database.system_session() as db:
            user_id: UUID = await db.fetchval(_INSERT_USER, email, password_hash, username)
        return user_id

    async def delete_user(self, user_id: UUID) -> None:
        async with self._database.system_session() as db:
            await db.execute(_DELETE_USER, user_id)

    async def set_password(self, user_id: UUID, password: str) -> None:
        password_hash = await self._passwords.hash(password)
        async with self._database.system_session() as db:
            await db.execute(_SET_PASSWORD, user_id, password_hash)

    async def close_account(self, user_id: UUID) -> None:
        async with self._database.system_session() as db:
            await db.execute(_CLOSE, user_id)

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
