"""What the running service holds for its lifetime, built once in the lifespan."""

from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.db.postgres import Database
from app.services.analytics_service import AnalyticsRecorder
from app.services.auth_providers import AuthProvider


@dataclass
class AppContext:
    settings: Settings
    database: Database
    auth_provider: AuthProvider
    analytics: AnalyticsRecorder
    # The StorageBackend (built-in files or Supabase Storage); set by build_context.
    storage: Any = None
    # Filled in by the features that need them (storage, analytics, token verifiers).
    extras: dict[str, Any] = field(default_factory=dict)
