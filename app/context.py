"""What the running service holds for its lifetime, built once in the lifespan."""

from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.db.postgres import Database
from app.services.analytics_service import AnalyticsRecorder
from app.services.auth_providers import AuthProvider
from app.services.rate_limit import MemoryCounterStore, RateLimiter
from app.services.storage_backend import StorageBackend


@dataclass
class AppContext:
    settings: Settings
    database: Database
    auth_provider: AuthProvider
    analytics: AnalyticsRecorder
    # Built-in files or Supabase Storage; chosen by build_context.
    storage: StorageBackend
    rate_limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(MemoryCounterStore(), enabled=False)
    )
    # Filled in by the features that need them (storage, analytics, token verifiers).
    extras: dict[str, Any] = field(default_factory=dict)
