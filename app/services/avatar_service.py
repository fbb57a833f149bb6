"""Avatars of members and pets, uploaded like a memory's photos and processed by the same queue.

1. `POST /storage/avatar-upload-url {target: "me" | pet_id, ...}` → a signed upload URL for
   `{family_unit_id}/avatars/{media_id}.{ext}`;
2. the client sends the bytes there;
3. `PATCH /auth/me {avatar_storage_path}` (or `PATCH /families/me/pets/{id}`) registers the
   upload as a `memory_media` row with `purpose = 'avatar'` and points the profile at it.

The avatar is processed like any photo; once its thumbnail exists, `avatar_url` wherever the
profile appears is a signed URL of it (`media_urls.shape_author`). Replacing an avatar (by a
new upload or a plain `avatar_url`) drops the old row (a trigger) and its files (the caller,
after the commit).
"""

from dataclasses import dataclass
from uuid import UUID, uuid4

from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Connection
from app.errors import Invalid, NotFound, UnsupportedMediaType
from app.models import rbac
from app.models.identity import Actor
from app.models.media_types import EXTENSION_FOR_MIME, IMAGE_MIME_TYPES
from app.models.rbac import Permission
from app.schemas.storage import UploadUrlOut
from app.services import media_paths, memory_service, quota_service, storage_service

OWN = "me"
PET_NOT_FOUND = "Pet not found"

_PET = "select id from public.pet_profiles where id = $1"
_INSERT_AVATAR = """
insert into public.memory_media
  (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type, file_size,
   purpose)
values ($1, null, $2, $3, $4, 'avatar', $5, $6, 'avatar')
on conflict do nothing
returning id
"""
_CURRENT = {
    "member": """
select mm.storage_path from public.user_profiles p
join public.memory_media mm on mm.id = p.avatar_media_id where p.id = $1
""",
    "pet": """
select mm.storage_path from public.pet_profiles p
join public.memory_media mm on mm.id = p.avatar_media_id where p.id = $1
""",
}


@dataclass(frozen=True)
class AvatarChange:
    """What the caller does after the commit: process the new avatar, remove the old files."""

    media_id: UUID | None
    removed_paths: list[str]


async def create_upload_url(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    settings: Settings,
    *,
    target: str,
    mime_type: str,
    file_size: int | None,
) -> UploadUrlOut:
    """A signed URL to upload a new avatar for the caller or for a pet of the family."""
    if target != OWN:
        await editable_pet(db, actor, _pet_id(target))
    mime = media_paths.normalize_mime(mime_type)
    if mime not in IMAGE_MIME_TYPES:
        raise UnsupportedMediaType("An avatar is a photo (JPEG, PNG, GIF, WebP, HEIC or AVIF)")
    # Reserved against the family's quota like a memory's upload (no memory limit applies).
    max_bytes = await quota_service.room_for_upload(db, settings, None, file_size)
    media_id = uuid4()
    path = media_paths.avatar_object_path(actor.family_unit_id, media_id, mime)
    return await storage_service.reserved_upload(
        db,
        storage,
        settings,
        memory_id=None,
        path=path,
        media_id=media_id,
        mime=mime,
        max_bytes=max_bytes,
    )


async def register(
    db: Connection,
    actor: Actor,
    storage: StorageBackend,
    settings: Settings,
    storage_path: str,
) -> UUID:
    """Register an uploaded avatar (a media row to process); the profile is pointed at it next."""
    path = media_paths.parse_media_path(storage_path)
    if path.memory_id is not None or path.family_unit_id != actor.family_unit_id:
        raise Invalid("avatar_storage_path is not an avatar upload of your family")
    mime = next((m for m, ext in EXTENSION_FOR_MIME.items() if ext == path.extension), None)
    if mime is None or mime not in IMAGE_MIME_TYPES:
        raise Invalid("avatar_storage_path is not an avatar upload of your family")
    stored = await memory_service.checked_upload(
        db, storage, settings, None, storage_path, field="avatar_storage_path"
    )
    media_id = await db.fetchval(
        _INSERT_AVATAR,
        path.media_id,
        actor.family_unit_id,
        storage.bucket,
        storage_path,
        mime,
        stored.size,
    )
    if media_id is None:
        raise Invalid("This upload is already registered; upload the file again")
    await quota_service.release(db, storage_path)  # its media row counts it from now on
    return path.media_id


async def current_files(db: Connection, kind: str, owner_id: UUID) -> list[str]:
    """The files of a profile's uploaded avatar (to remove once it is replaced)."""
    path = await db.fetchval(_CURRENT[kind], owner_id)
    return memory_service.with_thumbnails([path]) if path else []


async def editable_pet(db: Connection, actor: Actor, pet_id: UUID) -> None:
    # 404 before 403: a pet of another family does not exist for the caller.
    if await db.fetchval(_PET, pet_id) is None:
        raise NotFound(PET_NOT_FOUND)
    rbac.require(actor, Permission.CREATE_PET)


def _pet_id(target: str) -> UUID:
    try:
        return UUID(target)
    except ValueError:
        raise Invalid('target is "me" or the id of a pet of your family') from None
