"""The Supabase project this backend talks to: URLs, API keys and one HTTP client.

Built once in `build_context` when `settings.supabase_enabled` and kept in
`context.supabase`; the Auth provider, the access-token verifier and the Storage
backend share it, so there is one connection pool to Supabase and one place that knows which
key goes into which header. `aclose()` runs at shutdown.

The keys are secrets (the service-role key bypasses every row level security policy): they
live only in `SupabaseConfig`, whose repr hides them, and in request headers.
"""

from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from app.config import Settings

# Supabase answers in well under a second; a slow connect usually means it is unreachable.
# Generous enough for a cold project, short enough that a client sees a 503 rather than hanging.
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass(frozen=True)
class SupabaseConfig:
    url: str
    service_role_key: str = field(repr=False)
    # The public (anon / publishable) key; the service-role key stands in when it is not set.
    anon_key: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    storage_bucket: str = "memories"

    @classmethod
    def from_settings(cls, settings: Settings) -> "SupabaseConfig":
        if not (settings.supabase_url and settings.supabase_service_role_key):
            raise RuntimeError("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY must both be set")
        return cls(
            url=settings.supabase_url.rstrip("/"),
            service_role_key=settings.supabase_service_role_key.get_secret_value(),
            anon_key=_reveal(settings.supabase_anon_key),
            jwt_secret=_reveal(settings.supabase_jwt_secret),
            storage_bucket=settings.supabase_storage_bucket,
        )

    @property
    def auth_url(self) -> str:
        """GoTrue's base URL; also the `iss` of the access tokens it issues."""
        return f"{self.url}/auth/v1"

    @property
    def storage_url(self) -> str:
        return f"{self.url}/storage/v1"

    def service_headers(self) -> dict[str, str]:
        """Admin calls (create/delete users, signed storage URLs): the service-role key.

        The API gateway reads `apikey`; GoTrue and Storage read the bearer token. Both carry
        the same key, as supabase-js sends them.
        """
        return {"apikey": self.service_role_key, "Authorization": f"Bearer {self.service_role_key}"}

    def public_headers(self) -> dict[str, str]:
        """Calls any client may make (the password grant): only the gateway key."""
        return {"apikey": self.anon_key or self.service_role_key}


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret else None


class Supabase:
    """The configuration plus the process-wide HTTP client for it."""

    def __init__(self, config: SupabaseConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.http = http if http is not None else httpx.AsyncClient(timeout=HTTP_TIMEOUT)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Supabase":
        return cls(SupabaseConfig.from_settings(settings))

    async def aclose(self) -> None:
        await self.http.aclose()
