from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.adapters import rate_limit
from app.api.deps import (
    Context,
    CurrentUser,
    UserDb,
    failed_attempts_limited,
    limit_per_ip,
    require,
)
from app.api.registration import record_joined
from app.models.identity import FOUNDER_ROLES, Actor, Role
from app.models.rbac import Permission
from app.schemas.auth import (
    ChildRegisterRequest,
    LoginRequest,
    LogoutRequest,
    PetOut,
    PetRequest,
    Profile,
    ProfileUpdate,
    ProvisionChildRequest,
    ProvisionedChild,
    RefreshRequest,
    Registered,
    RegisterRequest,
    Tokens,
)
from app.schemas.common import error_responses
from app.services import account_service, family_service, invite_service, session_service
from app.services.analytics_service import EventType

router = APIRouter(prefix="/auth", tags=["auth"])


def _register_founder_endpoint(role: Role):  # type: ignore[no-untyped-def]
    async def register(body: RegisterRequest, context: Context) -> Registered:
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
        summary=f"Register {_role.value}",
        responses=error_responses(409, 429),
        dependencies=[limit_per_ip("register")],
    )


@router.post(
    "/register/child",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404, 409, 429),
    dependencies=[limit_per_ip("invite_accept")],
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
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409),
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
        context.database,
        context.auth_provider,
        actor,
        display_name=body.display_name,
        email=body.email,
    )
    context.analytics.record(EventType.CHILD_PROVISIONED, actor=actor, child_id=child.user_id)
    return child


@router.post(
    "/register/pet", status_code=status.HTTP_201_CREATED, responses=error_responses(401, 403)
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


@router.post("/login", responses=error_responses(401, 429), dependencies=[limit_per_ip("login")])
async def login(body: LoginRequest, context: Context) -> Tokens:
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
        )
    context.analytics.record(
        EventType.USER_LOGGED_IN, user_id=issued.user_id, family_unit_id=issued.family_unit_id
    )
    return issued.tokens


@router.post(
    "/refresh", responses=error_responses(401, 429), dependencies=[limit_per_ip("refresh")]
)
async def refresh(body: RefreshRequest, context: Context) -> Tokens:
    """Exchange a refresh token (single use) for a new pair."""
    issued = await session_service.refresh(
        context.database, context.settings, refresh_token=body.refresh_token
    )
    return issued.tokens


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401))
async def logout(
    actor: CurrentUser, db: UserDb, context: Context, body: LogoutRequest | None = None
) -> None:
    """End this login: its refresh token and the presented access token stop working."""
    await session_service.logout(db, actor, refresh_token=body.refresh_token if body else None)
    context.analytics.record(EventType.USER_LOGGED_OUT, actor=actor)


@router.get("/me", responses=error_responses(401))
async def me(actor: CurrentUser, db: UserDb) -> Profile:
    """Your profile."""
    return await account_service.get_profile(db, actor)


@router.patch("/me", responses=error_responses(401))
async def update_me(body: ProfileUpdate, actor: CurrentUser, db: UserDb) -> Profile:
    """Change your display name or avatar (role and family cannot be changed here)."""
    changes = body.model_dump(exclude_unset=True)
    return await account_service.update_profile(db, actor, changes)
