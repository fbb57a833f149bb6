from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator

from app.models.identity import Role
from app.schemas.common import NEXT_CURSOR_DESCRIPTION, NoNul

InvitableRole = Literal["adult", "teen", "child", "grandparent"]
InviteStatus = Literal["pending", "accepted", "expired", "revoked"]


class Member(BaseModel):
    id: UUID
    display_name: str
    role: Role
    avatar_url: str | None
    username: str | None = None


class FamilyStorage(BaseModel):
    used_bytes: int = Field(
        description="Registered files plus uploads in progress (upload URLs not yet registered)."
    )
    quota_bytes: int = Field(description="The family's storage quota; 0 means none.")


class Family(BaseModel):
    id: UUID
    name: str
    created_by: UUID | None
    created_at: datetime
    members: list[Member]
    keep_location: bool = Field(
        default=False,
        description="Whether GPS positions of photos and videos are kept (in each media's "
        "`metadata.location`); off by default.",
    )
    storage: FamilyStorage


class FamilyUpdate(BaseModel):
    """Only the fields sent change."""

    name: (
        Annotated[
            str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), NoNul
        ]
        | None
    ) = None
    keep_location: bool | None = Field(
        default=None,
        description="Keep the GPS position of photos and videos processed from now on; "
        "turning it off also forgets every position kept so far.",
    )

    @field_validator("name", "keep_location")
    @classmethod
    def _not_null_when_sent(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value


class InviteCreate(BaseModel):
    email: EmailStr
    role: InvitableRole
    send_email: bool = Field(
        default=False,
        description="Also mail the invite link to the address (503 mail_unavailable if no "
        "mail server is configured).",
    )


class Invite(BaseModel):
    id: UUID
    email: str
    role: InvitableRole
    expires_at: datetime
    status: InviteStatus
    created_at: datetime


class InvitePage(BaseModel):
    """Invites, one page of a scroll."""

    items: list[Invite]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class InviteCreated(Invite):
    token: str
    invite_link: str


class InvitePreview(BaseModel):
    id: UUID
    email: str
    role: InvitableRole
    family_name: str
    expires_at: datetime
    status: InviteStatus


class InviteLookup(BaseModel):
    valid: bool
    invite: InvitePreview | None = None
    reason: str | None = None
