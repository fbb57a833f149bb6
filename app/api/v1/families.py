from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Depends, Request, Response, status

from app.api import conditional
from app.api.avatars import schedule_avatar_work
from app.api.deps import Context, CurrentUser, UserDb, require
from app.api.openapi import conditional_responses
from app.api.routing import ApiRouter
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.auth import PetUpdate
from app.schemas.common import error_responses
from app.schemas.families import Family, FamilyUpdate, Member
from app.services import departure_service, family_service, storage_service

router = ApiRouter(prefix="/families", tags=["families"])


@router.get(
    "/me",
    operation_id="family_get",
    response_model=Family,
    responses={**error_responses(401), **conditional_responses()},
)
async def get_my_family(
    actor: CurrentUser, db: UserDb, context: Context, request: Request, response: Response
) -> Family | Response:
    """Your family and its members, pets included, and its storage use against its quota.

    Send its `ETag` as `If-None-Match` to get 304 when nothing about it changed.
    """
    family = await family_service.get_family(db, actor, context.storage, context.settings)
    return conditional.answer(request, response, family, conditional.etag(family))


@router.patch("/me", operation_id="family_update", responses=error_responses(401, 403))
async def update_family(
    body: FamilyUpdate,
    actor: Annotated[Actor, Depends(require(Permission.UPDATE_FAMILY))],
    db: UserDb,
    context: Context,
) -> Family:
    """Rename your family, or switch `keep_location` (keeping photos' GPS positions)."""
    return await family_service.update(db, actor, body, context.storage, context.settings)


@router.patch(
    "/me/pets/{pet_id}",
    operation_id="pets_update",
    responses=error_responses(400, 401, 403, 404),
)
async def update_pet(
    pet_id: UUID,
    body: PetUpdate,
    actor: Annotated[Actor, Depends(require(Permission.CREATE_PET))],
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
) -> Member:
    """Change a pet's avatar: a URL, or a picture uploaded through
    `POST /storage/avatar-upload-url` with the pet's id as `target`."""
    updated = await family_service.update_pet(
        db, actor, pet_id, body, context.storage, context.settings
    )
    schedule_avatar_work(tasks, context, updated.avatar)
    return updated.pet


@router.delete(
    "/me/members/{user_id}",
    operation_id="members_remove",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 409),
)
async def remove_member(
    user_id: UUID,
    actor: Annotated[Actor, Depends(require(Permission.REMOVE_MEMBER))],
    db: UserDb,
) -> None:
    """Remove a member (their tokens stop working at once) or a pet profile.

    The memories a removed member shared stay with the family.
    """
    await family_service.remove_member(db, actor, user_id)


@router.post(
    "/me/leave",
    operation_id="family_leave",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 409),
)
async def leave_family(
    actor: CurrentUser, db: UserDb, context: Context, tasks: BackgroundTasks
) -> None:
    """Leave your family: your memories stay with it, under your name, as a former member's.

    Your account ends with it (every login, and the email is free again). A member alone in
    the family takes the family with them.
    """
    departure = await departure_service.leave_family(db, context.auth_provider, actor)
    tasks.add_task(storage_service.remove_objects, context.storage, departure.storage_paths)
