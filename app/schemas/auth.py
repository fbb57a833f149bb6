from datetime import datetime
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, EmailStr, Field, StringConstraints, model_validator

from app.models.identity import Role
from app.schemas.common import AvatarUrl, DisplayName, NoNul

# Long enough to resist guessing; capped so hashing a submitted password stays cheap.
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256

Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description=f"At least {MIN_PASSWORD_LENGTH} characters.",
    ),
]
FamilyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), NoNul
]
OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Access token lifetime in seconds.", examples=[900])


class SignedIn(BaseModel):
    """A new login's tokens, and whose they are (for the caller's own records)."""

    tokens: Tokens
    user_id: UUID
    family_unit_id: UUID


class RegisterRequest(BaseModel):
    email: EmailStr
    password: Password
    display_name: DisplayName
    family_name: FamilyName | None = Field(
        default=None, description="Defaults to “<display name>'s family”."
    )


class AcceptInviteRequest(BaseModel):
    email: EmailStr
    password: Password
    display_name: DisplayName


class ChildRegisterRequest(BaseModel):
    invite_token: OpaqueToken
    password: Password
    display_name: DisplayName
    email: EmailStr | None = None


class Registered(BaseModel):
    user_id: UUID
    email: str | None
    role: Role
    family_unit_id: UUID
    tokens: Tokens
    username: str | None = Field(
        default=None,
        description="Only for a child who joined without an email: their login from now on.",
    )


class ProvisionChildRequest(BaseModel):
    display_name: DisplayName
    email: EmailStr | None = None


class ProvisionedChild(BaseModel):
    user_id: UUID
    username: str
    password: str = Field(description="Generated; shown only in this response.")
    display_name: str
    family_unit_id: UUID


class PetRequest(BaseModel):
    display_name: DisplayName
    avatar_url: AvatarUrl | None = None


class PetOut(BaseModel):
    pet_id: UUID
    display_name: str
    family_unit_id: UUID


class LoginRequest(BaseModel):
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=320),
        NoNul,
        Field(description="Email address, or a provisioned child's username."),
    ]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class RefreshRequest(BaseModel):
    refresh_token: OpaqueToken


class LogoutRequest(BaseModel):
    refresh_token: OpaqueToken | None = None


class Profile(BaseModel):
    id: UUID
    email: str | None
    username: str | None
    display_name: str
    avatar_url: str | None
    role: Role
    family_unit_id: UUID
    created_at: datetime


AvatarStoragePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    NoNul,
    Field(
        description="`storage_path` from `POST /storage/avatar-upload-url`, once uploaded: the "
        "picture becomes the avatar; `avatar_url` is then a signed URL of its thumbnail."
    ),
]


class ProfileUpdate(BaseModel):
    display_name: DisplayName | None = None
    avatar_url: AvatarUrl | None = None
    avatar_storage_path: AvatarStoragePath | None = None

    @model_validator(mode="after")
    def _one_avatar(self) -> Self:
        if "avatar_url" in self.model_fields_set and "avatar_storage_path" in self.model_fields_set:
            raise ValueError("send avatar_url or avatar_storage_path, not both")
        return self


class PetUpdate(BaseModel):
    avatar_url: AvatarUrl | None = None
    avatar_storage_path: AvatarStoragePath | None = None

    @model_validator(mode="after")
    def _one_avatar(self) -> Self:
        if "avatar_url" in self.model_fields_set and "avatar_storage_path" in self.model_fields_set:
            raise ValueError("send avatar_url or avatar_storage_path, not both")
        return self


class Session(BaseModel):
    """One login of the caller's account (GET /auth/sessions)."""

    id: UUID
    created_at: datetime
    last_used_at: datetime = Field(
        description="Moves on every refresh, and at most every few minutes on access."
    )
    user_agent: str | None
    current: bool = Field(description="The login whose access token made this request.")


class PasswordChange(BaseModel):
    current_password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
    new_password: Password


class PasswordResetRequest(BaseModel):
    email: EmailStr


class PasswordResetConfirm(BaseModel):
    # Ours are 43 characters; a Supabase recovery token (a JWT) is longer.
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    new_password: Password
