"""The family archive's jobs (docs/api.md, "Exports and imports"; docs/archive.md)."""

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

ExportPart = Literal["originals", "previews"]
ExportStatus = Literal["queued", "running", "completed", "failed"]


class ExportCreate(BaseModel):
    include: list[ExportPart] = Field(
        default_factory=lambda: list[ExportPart](["originals"]),
        min_length=1,
        max_length=2,
        description="What media files go into the zip: the originals as uploaded, the "
        "previews (≤ 1600 px, where processing made them), or both. memories.json and "
        "index.html are always in it.",
    )

    @field_validator("include")
    @classmethod
    def _once_each(cls, value: list[ExportPart]) -> list[ExportPart]:
        if len(set(value)) != len(value):
            raise ValueError("name each part once")
        return value


class ExportProgress(BaseModel):
    files_done: int
    files_total: int
    bytes_done: int


class ExportJob(BaseModel):
    id: UUID
    status: ExportStatus
    include: list[ExportPart]
    progress: ExportProgress
    size_bytes: int | None = Field(description="The zip's size, once completed.")
    download_url: str | None = Field(
        description="A signed URL of the zip, valid until `expires_at`; only when completed."
    )
    expires_at: datetime | None = Field(
        description="When the zip (and this job) will be removed; set once completed."
    )
    error: str | None = Field(description="Why the export failed, in plain words.")
    created_at: datetime
