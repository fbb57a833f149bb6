from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Depends, Path, Query, status

from app.adapters import rate_limit
from app.api.deps import (
    NO_STORE,
    Context,
    UserDb,
    failed_attempts_limited,
    limit_per_ip,
    require,
)
from app.api.registration import record_joined
from app.api.routing import ApiRouter
from app.models.identity import Actor, Role
from app.models.rbac import Permission
from app.schemas.auth import AcceptInviteRequest, Registered
from app.schemas.common import MAX_CURSOR_LENGTH, error_responses
from app.schemas.families import (
    Invite,
    InviteCreate,
    InviteCreated,
    InviteLookup,
    InvitePage,
    InviteStatus,
)
from app.services import invite_service
from app.services.analytics_service import EventType

router = ApiRouter(prefix="/invites", tags=["invites"])

InviteToken = Annotated[str, Path(min_length=1, max_length=512)]
Inviter = Annotated[Actor, Depends(require(Permission.INVITE_MEMBERS))]


@router.post(
    "",
    operation_id="invites_create",
    status_code=status.HTTP_201_CREATED,
    dependencies=[NO_STORE],
    responses=error_responses(401, 403, 409, 503),
)
async def create_invite(
    body: InviteCreate, actor: Inviter, db: UserDb, context: Context, tasks: BackgroundTasks
) -> InviteCreated:
    """Invite someone into your family. The token is shown only in this response.

    With `send_email`, the link is also mailed to the address.
    """
    created = await invite_service.create(
        db,
        context.settings,
        actor,
        email=body.email,
        role=Role(body.role),
        outbox=context.outbox if body.send_email else None,
    )
    if body.send_email:
        tasks.add_task(context.outbox.wake)  # after the commit: the mail is there to send
    context.analytics.record(
        EventType.INVITE_CREATED, actor=actor, invite_id=created.id, role=body.role
    )
    return created


@router.get(
    "",
    operation_id="invites_list",
    response_model=list[Invite] | InvitePage,
    responses=error_responses(400, 401, 403),
)
async def list_invites(
    actor: Inviter,
    db: UserDb,
    context: Context,
    status: InviteStatus | None = None,
    limit: Annotated[
        int, Query(ge=1, le=100, description="Invites per page of a scroll (with `cursor`).")
    ] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="Scroll: empty to start, then the previous page's `next_cursor`. "
            "With it the answer is `{items, next_cursor}` instead of a list.",
        ),
    ] = None,
) -> list[Invite] | InvitePage:
    """Your family's invites, newest first (tokens are never shown again).

    Without `cursor`, all of them as a list; with `cursor` (empty for the first page)
    `{items, next_cursor}` of at most `limit`, and pages of one scroll never repeat or skip
    an invite.
    """
    if cursor is None:
        return await invite_service.list_invites(db, actor, status=status)
    return await invite_service.scroll_invites(
        db, actor, status=status, limit=limit, cursor=cursor, cursors=context.cursors
    )


@router.get(
    "/{token}",
    operation_id="invites_lookup",
    responses=error_responses(404, 429),
    dependencies=[limit_per_ip("invite_lookup")],
)
async def lookup_invite(token: InviteToken, context: Context) -> InviteLookup:
    """Check an invite before accepting it (no sign-in needed)."""
    return await invite_service.lookup(context.database, token)


@router.post(
    "/{token}/accept",
    operation_id="invites_accept",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 409, 429),
    dependencies=[limit_per_ip("invite_accept"), NO_STORE],
)
async def accept_invite(
    token: InviteToken, body: AcceptInviteRequest, context: Context
) -> Registered:
    """Create your account and join the inviting family. The email must match the invite."""
    async with failed_attempts_limited(
        context, "invite_accept", token, rate_limit.ACCEPTS_PER_INVITE
    ):
        registration = await invite_service.accept(
            context.database,
            context.auth_provider,
            context.settings,
            token=token,
            email=body.email,
            password=body.password,
            display_name=body.display_name,
        )
    record_joined(context, registration)
    return registration


@router.delete(
    "/{invite_id}",
    operation_id="invites_revoke",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 409),
)
async def revoke_invite(invite_id: UUID, actor: Inviter, db: UserDb) -> None:
    """Revoke a pending invite."""
    await invite_service.revoke(db, actor, invite_id)
