from typing import Annotated, Literal
from uuid import UUID

from fastapi import BackgroundTasks, Depends, Header, Query, Request, Response, status

from app.adapters import rate_limit
from app.api.avatars import schedule_avatar_work
from app.api.deps import (
    NO_STORE,
    Context,
    CurrentUser,
    UserDb,
    count_per_ip,
    failed_attempts_limited,
    limit_per_ip,
    limit_per_member,
    require,
)
from app.api.registration import record_joined
from app.api.routing import ApiRouter
from app.models.identity import FOUNDER_ROLES, Actor, Role
from app.models.rbac import Permission
from app.schemas.auth import (
    ChildRegisterRequest,
    LoginRequest,
    LogoutRequest,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    PetOut,
    PetRequest,
    Profile,
    ProfileUpdate,
    ProvisionChildRequest,
    ProvisionedChild,
    RefreshRequest,
    Registered,
    RegisterRequest,
    Session,
    Tokens,
)
from app.schemas.common import error_responses
from app.services import (
    account_service,
    departure_service,
    family_service,
    invite_service,
    password_reset_service,
    session_service,
    storage_service,
)
from app.services.analytics_service import EventType

router = ApiRouter(prefix="/auth", tags=["auth"])

UserAgent = Annotated[str | None, Header(include_in_schema=False)]


def _register_founder_endpoint(role: Role):  # type: ignore[no-untyped-def]
    async def register(body: RegisterRequest, request: Request, context: Context) -> Registered:
        # Counted here, once the body is valid: a form refused with 422 spends no allowance.
        await count_per_ip(request, context, "register")
        registration = await account_service.register_founder(
            context.database,
            context.auth_provider,
            context.settings,
            role=role,
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            family_name=body.family_name,
        )
        context.analytics.record(
            EventType.USER_REGISTERED,
            user_id=registration.user_id,
            family_unit_id=registration.family_unit_id,
            role=role.value,
            founded_family=True,
        )
        return registration

    register.__doc__ = f"Register as a {role.value}, founding a new family with you as creator."
    return register


for _role in FOUNDER_ROLES:
    router.add_api_route(
        f"/register/{_role.value}",
        _register_founder_endpoint(_role),
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        response_model=Registered,
        name=f"register_{_role.value}",
        operation_id=f"auth_register_{_role.value}",
        summary=f"Register {_role.value}",
        responses=error_responses(409, 429),
        dependencies=[NO_STORE],
    )


@router.post(
    "/register/child",
    operation_id="auth_register_child",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 409, 429),
    dependencies=[limit_per_ip("invite_accept"), NO_STORE],
)
async def register_child(body: ChildRegisterRequest, context: Context) -> Registered:
    """Join the inviting family as a child, with a child invite token."""
    async with failed_attempts_limited(
        context, "invite_accept", body.invite_token, rate_limit.ACCEPTS_PER_INVITE
    ):
        registration = await invite_service.accept(
            context.database,
            context.auth_provider,
            context.settings,
            token=body.invite_token,
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            require_role=Role.CHILD,
        )
    record_joined(context, registration)
    return registration


@router.post(
    "/provision/child",
    operation_id="auth_provision_child",
    status_code=status.HTTP_201_CREATED,
    dependencies=[NO_STORE, limit_per_ip("provision_child"), limit_per_member("provision_child")],
    responses=error_responses(401, 403, 409, 429),
)
async def provision_child(
    body: ProvisionChildRequest,
    actor: Annotated[Actor, Depends(require(Permission.PROVISION_CHILD))],
    db: UserDb,
    context: Context,
) -> ProvisionedChild:
    """Create a child account in your family; the generated password is shown only here."""
    child = await account_service.provision_child(
        db,
        context.auth_provider,
        actor,
        display_name=body.display_name,
        email=body.email,
    )
    context.analytics.record(EventType.CHILD_PROVISIONED, actor=actor, child_id=child.user_id)
    return child


@router.post(
    "/register/pet",
    operation_id="auth_register_pet",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403),
)
async def register_pet(
    body: PetRequest,
    actor: Annotated[Actor, Depends(require(Permission.CREATE_PET))],
    db: UserDb,
    context: Context,
) -> PetOut:
    """Add a pet profile to your family (pets never log in)."""
    pet = await family_service.create_pet(
        db, actor, display_name=body.display_name, avatar_url=body.avatar_url
    )
    context.analytics.record(EventType.PET_CREATED, actor=actor, pet_id=pet.pet_id)
    return pet


@router.post(
    "/login",
    operation_id="auth_login",
    responses=error_responses(401, 429),
    dependencies=[limit_per_ip("login"), NO_STORE],
)
async def login(body: LoginRequest, context: Context, user_agent: UserAgent = None) -> Tokens:
    """Sign in with email (or a provisioned child's username) and password."""
    async with failed_attempts_limited(
        context, "login", body.email, rate_limit.FAILED_LOGINS_PER_ACCOUNT
    ):
        issued = await session_service.login(
            context.database,
            context.auth_provider,
            context.settings,
            login=body.email,
            password=body.password,
            user_agent=user_agent,
        )
    context.analytics.record(
        EventType.USER_LOGGED_IN, user_id=issued.user_id, family_unit_id=issued.family_unit_id
    )
    return issued.tokens


@router.post(
    "/refresh",
    operation_id="auth_refresh",
    responses=error_responses(401, 429),
    dependencies=[limit_per_ip("refresh"), NO_STORE],
)
async def refresh(body: RefreshRequest, context: Context, user_agent: UserAgent = None) -> Tokens:
    """Exchange a refresh token (single use) for a new pair."""
    issued = await session_service.refresh(
        context.database,
        context.settings,
        refresh_token=body.refresh_token,
        user_agent=user_agent,
    )
    return issued.tokens


@router.post(
    "/logout",
    operation_id="auth_logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401),
)
async def logout(
    actor: CurrentUser, db: UserDb, context: Context, body: LogoutRequest | None = None
) -> None:
    """End this login: its refresh token and the presented access token stop working."""
    await session_service.logout(db, actor, refresh_token=body.refresh_token if body else None)
    context.analytics.record(EventType.USER_LOGGED_OUT, actor=actor)


@router.get("/me", operation_id="profile_get", responses=error_responses(401))
async def me(actor: CurrentUser, db: UserDb, context: Context) -> Profile:
    """Your profile."""
    return await account_service.get_profile(db, actor, context.storage)


@router.patch("/me", operation_id="profile_update", responses=error_responses(400, 401))
async def update_me(
    body: ProfileUpdate,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
) -> Profile:
    """Change your display name or avatar (role and family cannot be changed here).

    An avatar is a URL (`avatar_url`) or a picture uploaded through
    `POST /storage/avatar-upload-url` (`avatar_storage_path`); `avatar_url` is then a signed
    URL of its thumbnail, null until processing has made it.
    """
    updated = await account_service.update_profile(
        db, actor, body, context.storage, context.settings
    )
    schedule_avatar_work(tasks, context, updated.avatar)
    return updated.profile


@router.delete(
    "/me",
    operation_id="profile_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 409, 503),
)
async def delete_me(
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
    memories: Annotated[
        Literal["keep", "delete"],
        Query(description="keep: leave them with the family, shown as by a former member."),
    ],
) -> None:
    """Delete your account. Every login ends; a member alone takes the family with them."""
    departure = await departure_service.delete_account(
        db, context.auth_provider, actor, delete_memories=memories == "delete"
    )
    tasks.add_task(storage_service.remove_objects, context.storage, departure.storage_paths)


# Passwords and logins ---------------------------------------------------------------------


@router.post(
    "/password",
    operation_id="auth_password_change",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 429),
)
async def change_password(
    body: PasswordChange, actor: CurrentUser, db: UserDb, context: Context
) -> None:
    """Change your password (the current one is required); every other login ends."""
    async with failed_attempts_limited(
        context,
        "password_change",
        str(actor.id),
        rate_limit.FAILED_PASSWORD_CHANGES_PER_ACCOUNT,
    ):
        await session_service.change_password(
            db,
            context.auth_provider,
            actor,
            current_password=body.current_password,
            new_password=body.new_password,
        )


@router.post(
    "/logout-all",
    operation_id="auth_logout_all",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401),
)
async def logout_all(actor: CurrentUser, db: UserDb) -> None:
    """End every login of your account, this one too."""
    await session_service.logout_all(db, actor)


@router.get("/sessions", operation_id="sessions_list", responses=error_responses(401))
async def list_sessions(actor: CurrentUser, db: UserDb) -> list[Session]:
    """Your logins, newest first; `current` marks the one making this request."""
    return await session_service.list_sessions(db, actor)


@router.delete(
    "/sessions/{session_id}",
    operation_id="sessions_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
)
async def end_session(session_id: UUID, actor: CurrentUser, db: UserDb) -> None:
    """End one of your logins (it may be this one)."""
    await session_service.end_session(db, actor, session_id)


@router.post(
    "/password-reset",
    operation_id="auth_password_reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    responses={
        202: {"description": "Accepted, whether or not the email has an account"},
        **error_responses(429, 503),
    },
    dependencies=[limit_per_ip("password_reset")],
)
async def request_password_reset(
    body: PasswordResetRequest, context: Context, tasks: BackgroundTasks
) -> Response:
    """Mail a single-use reset link (valid 30 minutes) if an account uses this email.

    The answer, and the time it takes, are the same whether or not one does.
    """
    await context.rate_limiter.hit(
        "password_reset:email", str(body.email), rate_limit.RESETS_PER_EMAIL
    )
    await password_reset_service.request_reset(
        context.database, context.settings, context.outbox, context.recovery, email=body.email
    )
    tasks.add_task(context.outbox.wake)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/password-reset/confirm",
    operation_id="auth_password_reset_confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 429),
    dependencies=[limit_per_ip("password_reset_confirm")],
)
async def confirm_password_reset(body: PasswordResetConfirm, context: Context) -> None:
    """Set a new password with the link's token; every login of the account ends."""
    await password_reset_service.confirm_reset(
        context.database,
        context.auth_provider,
        context.recovery,
        token=body.token,
        new_password=body.new_password,
    )
