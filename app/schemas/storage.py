"""Upload and access URL shapes of the storage endpoints."""

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, model_validator

from app.schemas.memories import FileName

MIN_ACCESS_SECONDS = 60
MAX_ACCESS_SECONDS = 86_400

MediaVariant = Literal["original", "thumbnail", "preview", "playback"]
Sha256 = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[0-9a-fA-F]{64}$"),
    Field(
        description="SHA-256 of the file (hex): 409 duplicate_media at once if the family "
        "already has these bytes."
    ),
]
MimeType = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class UploadUrlRequest(BaseModel):
    purpose: Literal["media", "import"] = Field(
        default="media",
        description="`media`: a photo or video of `memory_id`. `import`: a zip to import into "
        "the family (`POST /families/me/imports`), without `memory_id`, as `application/zip`.",
    )
    memory_id: UUID | None = None
    file_name: FileName
    mime_type: MimeType
    file_size: int | None = Field(
        default=None,
        ge=1,
        description="If given, checked against the limits and reserved: the upload URL then "
        "accepts at most this many bytes. Else all the room left is reserved.",
    )
    sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _memory_for_media_only(self) -> "UploadUrlRequest":
        if self.purpose == "media" and self.memory_id is None:
            raise ValueError("memory_id is required to upload a photo or video")
        if self.purpose == "import" and self.memory_id is not None:
            raise ValueError("an archive to import belongs to no memory: leave memory_id out")
        return self


class AvatarUploadUrlRequest(BaseModel):
    target: Annotated[
        str,
        Field(
            description='"me" for your own avatar, or the id of a pet of your family (adults '
            "and grandparents)."
        ),
    ]
    file_name: FileName
    mime_type: MimeType
    file_size: int | None = Field(
        default=None, ge=1, description="If given, checked against the limit before uploading."
    )


class UploadUrlOut(BaseModel):
    upload_url: str = Field(description="Send the file's bytes here, straight from the client.")
    storage_path: str = Field(description="Register the file with this path once it is uploaded.")
    media_id: UUID = Field(description="The new media's id (for an import: the upload's id).")
    expires_in: int = Field(description="Seconds the upload URL stays valid.")
    method: Literal["PUT"] = Field(
        description="Send the raw bytes with this method (built-in storage also takes a POST "
        "multipart form with the field `file`)."
    )
    headers: dict[str, str] = Field(description="Headers to send with the bytes.")
    max_bytes: int = Field(
        description="The largest file the upload URL accepts; reserved against the memory's "
        "limit and the family's quota until the file is registered or the URL expires."
    )


class UploadedObject(BaseModel):
    storage_path: str
    file_size: int


class AccessUrlOut(BaseModel):
    access_url: str
    expires_in: int
