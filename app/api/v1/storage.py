"""Storage endpoints: upload and access URLs for a member's own family's files.

Where the bytes then go depends on the storage: Supabase Storage, or the built-in store's
signed object routes (`app.api.storage_objects`).
"""

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Query

from app.api.deps import Context, CurrentUser, UserDb
from app.api.routing import ApiRouter
from app.schemas.common import error_responses
from app.schemas.storage import (
    MAX_ACCESS_SECONDS,
    MIN_ACCESS_SECONDS,
    AccessUrlOut,
    AvatarUploadUrlRequest,
    MediaVariant,
    UploadUrlOut,
    UploadUrlRequest,
)
from app.services import avatar_service, storage_service

if TYPE_CHECKING:
    pass

router = ApiRouter(prefix="/storage", tags=["storage"])

ExpiresIn = Annotated[
    int,
    Query(ge=MIN_ACCESS_SECONDS, le=MAX_ACCESS_SECONDS, description="Seconds the URL stays valid."),
]


@router.post(
    "/upload-url",
    operation_id="storage_upload_url",
    responses=error_responses(401, 403, 404, 409, 413, 415),
)
async def create_upload_url(
    body: UploadUrlRequest, actor: CurrentUser, db: UserDb, context: Context
) -> UploadUrlOut:
    """A signed URL to send one photo or video of a memory you may edit straight to storage.

    Then `PUT` the raw bytes to `upload_url` with `headers`, and register the file with
    `POST /memories/{memory_id}/media` using `storage_path`. With `purpose: "import"`, the URL
    takes a zip to import instead (`POST /families/me/imports` with `storage_path`).
    """
    if body.purpose == "import":
        return await storage_service.create_import_upload_url(
            db, actor, context.storage, context.settings, mime_type=body.mime_type,
            file_size=body.file_size,
        )  # fmt: skip
    assert body.memory_id is not None  # the schema requires it for media
    return await storage_service.create_upload_url(
        db,
        actor,
        context.storage,
        context.settings,
        memory_id=body.memory_id,
        mime_type=body.mime_type,
        file_size=body.file_size,
        sha256=body.sha256,
    )


@router.post(
    "/avatar-upload-url",
    operation_id="storage_avatar_upload_url",
    responses=error_responses(400, 401, 403, 404, 413, 415),
)
async def create_avatar_upload_url(
    body: AvatarUploadUrlRequest, actor: CurrentUser, db: UserDb, context: Context
) -> UploadUrlOut:
    """A signed URL to upload a new avatar: yours (`target: "me"`) or a pet's (its id).

    Then `PUT` the bytes to `upload_url` and set it with `PATCH /auth/me` (or
    `PATCH /families/me/pets/{id}`) `{"avatar_storage_path": storage_path}`.
    """
    return await avatar_service.create_upload_url(
        db,
        actor,
        context.storage,
        context.settings,
        target=body.target,
        mime_type=body.mime_type,
        file_size=body.file_size,
    )


@router.get(
    "/access-url", operation_id="storage_access_url", responses=error_responses(400, 401, 404)
)
async def get_access_url(
    storage_path: Annotated[str, Query(min_length=1, max_length=1024)],
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    expires_in: ExpiresIn = 3600,
) -> AccessUrlOut:
    """A signed, expiring download URL for a file (original or thumbnail) you can see."""
    return await storage_service.access_url(db, actor, context.storage, storage_path, expires_in)


@router.get(
    "/media/{media_id}/url",
    operation_id="storage_media_url",
    responses=error_responses(401, 404, 409),
)
async def get_media_url(
    media_id: UUID,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    variant: MediaVariant = "original",
    expires_in: ExpiresIn = 3600,
) -> AccessUrlOut:
    """A signed URL for a media item's original or one of its variants (409 until ready).

    `playback` is what a browser should play: the H.264/AAC rendition of a video that needs
    one, else the original.
    """
    return await storage_service.media_url(
        db, actor, context.storage, media_id, variant, expires_in
    )
