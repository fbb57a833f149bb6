"""The family: its name, its members (people and pets), and removing a member."""

from uuid import UUID

from app.db.postgres import Connection
from app.errors import LAST_ADULT, Conflict, NotFound
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.auth import PetOut
from app.schemas.families import Family

_FAMILY = """
select id, name, created_by, created_at from public.family_units
where id = (select app.current_family_id())
"""
_MEMBERS = """
select id, display_name, role, avatar_url, username, created_at
from public.user_profiles
where family_unit_id = (select app.current_family_id()) and removed_at is null
union all
select id, display_name, 'pet', avatar_url, null, created_at
from public.pet_profiles
where family_unit_id = (select app.current_family_id())
order by created_at, id
"""
_RENAME = """
update public.family_units set name = $1, updated_at = now()
where id = (select app.current_family_id())
"""
_NEW_PET = """
insert into public.pet_profiles (family_unit_id, display_name, avatar_url, created_by)
values ($1, $2, $3, $4)
returning id, display_name, family_unit_id
"""
_REMOVE_MEMBER = "select app.remove_family_member($1)"
_REMOVE_PET = "delete from public.pet_profiles where id = $1 returning id"


async def get_family(db: Connection, actor: Actor) -> Family:
    family = await db.fetchrow(_FAMILY)
    if family is None:
        raise NotFound("Family not found")
    members = [dict(row) for row in await db.fetch(_MEMBERS)]
    return Family.model_validate({**dict(family), "members": members})


async def rename(db: Connection, actor: Actor, name: str) -> Family:
    rbac.require(actor, Permission.UPDATE_FAMILY)
    await db.execute(_RENAME, name)
    return await get_family(db, actor)


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
