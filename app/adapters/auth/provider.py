"""Where accounts and passwords live: the `AuthProvider` seam.

`LocalAuthProvider` (app.adapters.auth.local) keeps argon2id hashes in `auth.users` of our
own database; `SupabaseAuthProvider` (app.adapters.auth.supabase) keeps them in Supabase Auth.
Either way the backend issues its own tokens; nothing else knows which one runs.

Callers follow one pattern with both providers: create the account, then write the
profile, and `delete_user` if that second step fails, leaving no orphan. Supabase's
`create_user` is a remote call that commits on its own; the built-in one writes on the
caller's open session (its transaction), so it also rolls back with it, and never needs a
second pooled connection.
"""

from typing import Protocol
from uuid import UUID


class AuthProvider(Protocol):
    async def create_user(self, *, email: str | None, username: str | None, password: str) -> UUID:
        """Create the account; raise Conflict if the email is taken."""

    async def delete_user(self, user_id: UUID) -> None:
        """Undo `create_user` (compensation when the profile could not be written)."""

    async def check_password(
        self, *, user_id: UUID | None, email: str | None, username: str | None, password: str
    ) -> bool:
        """True if the password is right. With no user, spend the same time and say no."""

    async def set_password(self, user_id: UUID, password: str) -> None:
        """Replace the account's password (with the caller's session, like `create_user`)."""

    async def close_account(self, user_id: UUID) -> None:
        """End the account for good: no password, no email, no sign-in; idempotent.

        The account's row stays (as a Supabase soft delete does) because the member's
        profile, and what they left with the family, still refer to its id.
        """
