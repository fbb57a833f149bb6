"""Who acts: roles and the signed-in member a request acts for."""

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class Role(StrEnum):
    ADULT = "adult"
    TEEN = "teen"
    CHILD = "child"
    GRANDPARENT = "grandparent"
    PET = "pet"


# Roles that can found a family by registering.
FOUNDER_ROLES = (Role.ADULT, Role.TEEN, Role.GRANDPARENT)
# Roles a person (not a pet) can hold; the ones stored in user_profiles.
MEMBER_ROLES = (Role.ADULT, Role.TEEN, Role.CHILD, Role.GRANDPARENT)


@dataclass(frozen=True, slots=True)
class Actor:
    """The family member a request acts for, as the database knows them now."""

    id: UUID
    family_unit_id: UUID
    role: Role
    display_name: str
    # The login session the access token belongs to; None for Supabase Auth tokens.
    session_id: UUID | None = None
