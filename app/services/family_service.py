"""The family: its name and settings, its members (people and pets), removing a member, and
a pet's avatar."""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Connection
from app.errors import LAST_ADULT, Conflict, NotFound
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.auth import PetOut, PetUpdate
from app.schemas.families import Family, FamilyUpdate, Member
from app.services import avatar_service, media_urls, quota_service
from app.services.avatar_service import AvatarChange

_FAMILY = """
select id, name, created_by, created_at, keep_location from public.family_units
where id = (select app.current_family_id())
"""
_MEMBERS = """
select id, display_name, role, avatar_url, username, created_at,
       app.avatar_path(avatar_media_id) as avatar_path
from public.user_profiles
where family_unit_id = (select app.current_family_id()) and removed_at is null
union all
select id, display_name, 'pet', avatar_url, null, created_at,
       app.avatar_path(avatar_media_id) as avatar_path
from public.pet_profiles
where family_unit_id = (select app.current_family_id())
order by created_at, id
"""
_UPDATE = """
update public.family_units
set name = coalesce($1, name), keep_location = coalesce($2, keep_location), updated_at = now()
where id = (select app.current_family_id())
returning keep_location
"""
_FORGET_LOCATIONS = "select app.forget_family_locations()"
_PET = """
select id, display_name, 'pet' as role, avatar_url, null as username,
       app.avatar_path(avatar_media_id) as avatar_path
from public.pet_profiles where id = $1
"""
_UPDATE_PET_AVATAR = """
update public.pet_profiles set avatar_url = $2, avatar_media_id = $3 where id = $1
returning id
"""


@dataclass(frozen=True)
class PetUpdated:
    """The pet as the family sees it, and the avatar work to do after the commit."""

    pet: Member
    avatar: AvatarChange


_NEW_PET = """
insert into public.pet_profiles (family_unit_id, display_name, avatar_url, created_by)
values ($1, $2, $3, $4)
returning id, display_name, family_unit_id
"""
_REMOVE_MEMBER = "select app.remove_family_member($1)"
_REMOVE_PET = "delete from public.pet_profiles where id = $1 returning id"


async def get_family(
    db: Connection, actor: Actor, storage: StorageBackend, settings: Settings
) -> Family:
    family = await db.fetchrow(_FAMILY)
    if family is None:
        raise NotFound("Family not found")
    members: list[dict[str, Any]] = [dict(row) for row in await db.fetch(_MEMBERS)]
    await media_urls.shape_authors(storage, members)
    used = await quota_service.family_storage(db, settings)
    return Family.model_validate({**dict(family), "members": members, "storage": used})


async def update(
    db: Connection,
    actor: Actor,
    changes: FamilyUpdate,
    storage: StorageBackend,
    settings: Settings,
) -> Family:
    """Rename the family and/or switch keep_location; only the fields sent change."""
    rbac.require(actor, Permission.UPDATE_FAMILY)
    await db.execute(_UPDATE, changes.name, changes.keep_location)
    if changes.keep_location is False:
        # Off means off: positions kept so far are forgotten too.
        await db.execute(_FORGET_LOCATIONS)
    return await get_family(db, actor, storage, settings)


async def update_pet(
    db: Connection,
    actor: Actor,
    pet_id: UUID,
    changes: PetUpdate,
    storage: StorageBackend,
    settings: Settings,
) -> PetUpdated:
    """Change a pet's avatar: a URL, or an uploaded picture (processed in the background)."""
    await avatar_service.editable_pet(db, actor, pet_id)
    sent = changes.model_fields_set
    change = AvatarChange(media_id=None, removed_paths=[])
    if sent & {"avatar_url", "avatar_storage_path"}:
        removed = await avatar_service.current_files(db, "pet", pet_id)
        media_id = None
        if changes.avatar_storage_path is not None:
            media_id = await avatar_service.register(
                db, actor, storage, settings, changes.avatar_storage_path
            )
        if await db.fetchval(_UPDATE_PET_AVATAR, pet_id, changes.avatar_url, media_id) is None:
            raise NotFound(avatar_service.PET_NOT_FOUND)
        change = AvatarChange(media_id=media_id, removed_paths=removed)
    row: dict[str, Any] = dict(await db.fetchrow(_PET, pet_id))
    await media_urls.shape_authors(storage, [row])
    return PetUpdated(pet=Member.model_validate(row), avatar=change)


async def create_pet(
    db: Connection, actor: Actor, *, display_name: str, avatar_url: str | None
) -> PetOut:
    rbac.require(actor, Permission.CREATE_PET)
    row = await db.fetchrow(_NEW_PET, actor.family_unit_id, display_name, avatar_url, actor.id)
    return PetOut(
        pet_id=row["id"], display_name=row["display_name"], family_unit_id=row["family_unit_id"]
    )


async def remove_member(db: Connection, actor: Actor, member_id: UUID) -> None:
    """Remove a person (their memories stay, their sessions end) or a pet profile."""
    rbac.require(actor, Permission.REMOVE_MEMBER)
    outcome = await db.fetchval(_REMOVE_MEMBER, member_id)
    if outcome == "not_found":
        if await db.fetchval(_REMOVE_PET, member_id) is None:
            raise NotFound("Member not found")
    elif outcome == "last_adult":
        raise Conflict("The last adult of a family cannot be removed", code=LAST_ADULT)
    elif outcome != "removed":
        raise NotFound("Member not found")
