"""Login-session helpers shared by the auth, attack and Supabase tests."""

import asyncpg

from app.adapters.tokens import hash_token

# Pushes a rotation this far into the past: beyond any reuse interval a test configures.
_LONG_AGO = "1 hour"


async def end_reuse_interval(pg: asyncpg.Pool, refresh_token: str) -> None:
    """Make a rotated refresh token look rotated long ago, as if the reuse interval passed.

    Tests of theft detection use it rather than sleeping through
    REFRESH_REUSE_INTERVAL_SECONDS: presenting the token again is then reuse.
    """
    updated = await pg.execute(
        f"update app.refresh_tokens set rotated_at = rotated_at - interval '{_LONG_AGO}'"
        " where token_hash = $1 and rotated_at is not null",
        hash_token(refresh_token),
    )
    assert updated == "UPDATE 1", "the refresh token was not rotated"
