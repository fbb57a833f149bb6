"""What the operations endpoints answer (`/health`, `/health/ready`)."""

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"]
    api_version: str = Field(description="The API version this server serves, e.g. `v1`.")


class Readiness(BaseModel):
    """`ok`, or `unavailable` with the reason: the database, the migrations (missing from the
    install, or not yet applied), or the storage (its bucket missing)."""

    status: Literal["ok", "unavailable"]
    database: Literal["unreachable"] | None = Field(
        default=None, description="Present when the database does not answer."
    )
    migrations: Literal["missing"] | None = Field(
        default=None, description="Present when the install ships no migrations (broken)."
    )
    pending_migrations: list[str] | None = Field(
        default=None, description="Present when migrations are not yet applied: their versions."
    )
    storage: str | None = Field(
        default=None, description="Present when files cannot be stored: what an operator must fix."
    )
