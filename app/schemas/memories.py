"""Memory and media shapes, shared by the memory endpoints and the feed."""

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.models.identity import Role
from app.schemas.common import NEXT_CURSOR_DESCRIPTION, NoNul

MemoryStatus = Literal["draft", "published", "archived"]
ProcessingStatus = Literal["pending", "processing", "completed", "failed"]
VariantName = Literal["thumbnail", "preview", "playback"]

MAX_TAGS = 20
MAX_TAG_LENGTH = 50

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), NoNul
]
Description = Annotated[str, StringConstraints(max_length=10_000), NoNul]
Location = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255), NoNul]
FileName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), NoNul
]


def normalize_tags(tags: list[str]) -> list[str]:
    """Trimmed, lower-cased, de-duplicated (first occurrence kept), ≤ 20 of ≤ 50 chars."""
    seen: dict[str, None] = {}
    for raw in tags:
        tag = raw.strip().lower()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"each tag must be at most {MAX_TAG_LENGTH} characters")
        seen.setdefault(tag, None)
    if len(seen) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return list(seen)


Tags = Annotated[
    list[Annotated[str, NoNul]],
    AfterValidator(normalize_tags),
    Field(description="≤ 20 tags of ≤ 50 characters; trimmed, lower-cased, de-duplicated."),
]


class MemoryAuthor(BaseModel):
    id: UUID
    display_name: str
    avatar_url: str | None
    role: Role


class MediaVariantOut(BaseModel):
    url: str | None = Field(description="Signed download URL; null until the variant is ready.")
    width: int | None
    height: int | None
    mime_type: str


class Camera(BaseModel):
    make: str | None = None
    model: str | None = None


def _absent_when_none(value: object) -> bool:
    return value is None


class MediaMetadata(BaseModel):
    """What processing found, or why it failed; a key is absent when it does not apply.

    Open: a newer server may add keys, which a client ignores.
    """

    model_config = ConfigDict(extra="allow")

    error: str | None = Field(
        default=None,
        exclude_if=_absent_when_none,
        description="Why processing `failed`, in plain words.",
    )
    last_error: str | None = Field(
        default=None,
        exclude_if=_absent_when_none,
        description="A passing problem on the last attempt; processing tries again.",
    )
    codec: str | None = Field(
        default=None, exclude_if=_absent_when_none, description="The video codec, e.g. `h264`."
    )
    frame_count: int | None = Field(
        default=None,
        exclude_if=_absent_when_none,
        description="Frames in a video or an animated image (1 for a still image).",
    )


class Media(BaseModel):
    id: UUID
    memory_id: UUID
    storage_path: str
    storage_bucket: str
    file_name: str
    mime_type: str
    file_size: int
    width: int | None
    height: int | None
    duration: float | None
    thumbnail_path: str | None
    processing_status: ProcessingStatus
    metadata: MediaMetadata
    created_at: datetime
    updated_at: datetime
    variants: dict[VariantName, MediaVariantOut] = Field(
        default_factory=dict,
        description="`thumbnail` (JPEG, ≤ 400 px) and `preview` (progressive JPEG, ≤ 1600 "
        "px) of every photo and video, and `playback` (H.264/AAC MP4, ≤ 1080p) of a video "
        "browsers cannot play as uploaded. `url` is null until processing has made it.",
    )
    placeholder: str | None = Field(
        default=None, description="A BlurHash of the picture, to paint before it loads."
    )
    taken_at: datetime | None = Field(
        default=None,
        description="When it was taken (EXIF or QuickTime), with its UTC offset when the file "
        "gives one; without an offset it is the local time where it was taken.",
    )
    camera: Camera | None = None
    sha256: str | None = Field(default=None, description="SHA-256 of the original (hex).")


class Memory(BaseModel):
    id: UUID
    user_id: UUID
    family_unit_id: UUID
    title: str
    description: str | None
    memory_date: date | None
    location: str | None
    tags: list[str]
    status: MemoryStatus
    created_at: datetime
    updated_at: datetime
    modified_by: UUID | None
    author: MemoryAuthor
    media: list[Media]


class MemoryPage(BaseModel):
    """Memories, one page of a scroll."""

    items: list[Memory]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class MediaRef(BaseModel):
    storage_path: Annotated[str, StringConstraints(min_length=1, max_length=1024), NoNul]
    file_name: FileName
    mime_type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    file_size: int | None = Field(
        default=None, ge=0, description="Informational; the stored object's real size is used."
    )


class MemoryCreate(BaseModel):
    title: Title
    description: Description | None = None
    memory_date: date | None = None
    location: Location | None = None
    tags: Tags | None = None
    status: MemoryStatus = "draft"
    media: list[MediaRef] | None = Field(
        default=None,
        description=(
            "Files live under the memory's own path, which exists only once the memory does: "
            "create the memory, then `POST /storage/upload-url` with its id, upload, and "
            "register each file with `POST /memories/{id}/media`. Any reference given here "
            "is refused (400) with that explanation, and nothing is created."
        ),
    )


class MemoryUpdate(BaseModel):
    """Partial: only the fields sent change.

    `description`, `memory_date` and `location` are cleared by sending null; `title`,
    `tags` and `status` cannot be null (send `[]` to clear the tags).
    """

    title: Title | None = None
    description: Description | None = None
    memory_date: date | None = None
    location: Location | None = None
    tags: Tags | None = None
    status: MemoryStatus | None = None

    @field_validator("title", "tags", "status")
    @classmethod
    def _not_null_when_sent(cls, value: object) -> object:
        # Runs only for fields present in the body: an absent field stays "unchanged".
        if value is None:
            raise ValueError("may not be null")
        return value
