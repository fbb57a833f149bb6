"""Import jobs: what a member sees of an archive being brought in."""

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

ImportStatus = Literal["queued", "running", "completed", "failed"]


class ImportCreate(BaseModel):
    storage_path: str = Field(
        min_length=1,
        max_length=1024,
        description="Where the zip was uploaded: `POST /storage/upload-url` with "
        '`purpose: "import"` returns it.',
    )


class ImportProgress(BaseModel):
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0


class SkippedFile(BaseModel):
    name: str
    reason: str


class ImportReport(BaseModel):
    memories_created: int = 0
    media_imported: int = 0
    duplicates_skipped: int = Field(
        default=0, description="Files whose exact bytes the family already has."
    )
    files_skipped: list[SkippedFile] = Field(
        default_factory=list, description="At most 1 000 are listed; see files_skipped_total."
    )
    files_skipped_total: int = 0
    comments_imported: int = Field(
        default=0, description="Comments of a Timeless export added now (with their replies)."
    )
    comments_skipped: list[SkippedFile] = Field(
        default_factory=list,
        description="Comments of the export that were not imported, and why (at most 1 000).",
    )
    comments_skipped_total: int = 0
    reactions_imported: int = Field(
        default=0, description="Reactions of the export's members who are members here."
    )
    reactions_skipped: list[SkippedFile] = Field(
        default_factory=list,
        description="Reactions not imported, and why: mostly of people who are not members "
        "of this family (at most 1 000).",
    )
    reactions_skipped_total: int = 0


class ImportJob(BaseModel):
    id: UUID
    status: ImportStatus
    source_name: str
    progress: ImportProgress
    report: ImportReport
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
