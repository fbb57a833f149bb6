"""The permission table: the one home of "which role may do what".

FastAPI dependencies (`app.api.deps.require`) and services both read it. The RLS
policies in `supabase/migrations` say the same thing in SQL, so the database holds
even if this table or a service were wrong.
"""

from collections.abc import Mapping
from enum import StrEnum

from app.errors import Forbidden
from app.models.identity import Actor, Role


class Permission(StrEnum):
    UPDATE_FAMILY = "update_family"
    INVITE_MEMBERS = "invite_members"
    PROVISION_CHILD = "provision_child"
    CREATE_PET = "create_pet"
    REMOVE_MEMBER = "remove_member"
    VIEW_MEMORIES = "view_memories"
    CREATE_MEMORY = "create_memory"
    EDIT_OWN_MEMORY = "edit_own_memory"
    EDIT_ANY_MEMORY = "edit_any_memory"
    DELETE_OWN_MEMORY = "delete_own_memory"
    DELETE_ANY_MEMORY = "delete_any_memory"
    REACT = "react"
    COMMENT = "comment"
    EDIT_OWN_COMMENT = "edit_own_comment"
    DELETE_OWN_COMMENT = "delete_own_comment"
    DELETE_ANY_COMMENT = "delete_any_comment"
    VIEW_ANALYTICS = "view_analytics"
    MANAGE_ARCHIVE = "manage_archive"  # export and import the family archive


_A, _T, _C, _G = Role.ADULT, Role.TEEN, Role.CHILD, Role.GRANDPARENT
_EVERY_MEMBER = frozenset({_A, _T, _C, _G})

PERMISSIONS: Mapping[Permission, frozenset[Role]] = {
    Permission.UPDATE_FAMILY: frozenset({_A, _G}),
    Permission.INVITE_MEMBERS: frozenset({_A, _G}),
    Permission.PROVISION_CHILD: frozenset({_A}),
    Permission.CREATE_PET: frozenset({_A, _G}),
    Permission.REMOVE_MEMBER: frozenset({_A}),
    Permission.VIEW_MEMORIES: _EVERY_MEMBER,
    Permission.CREATE_MEMORY: _EVERY_MEMBER,
    Permission.EDIT_OWN_MEMORY: _EVERY_MEMBER,
    Permission.EDIT_ANY_MEMORY: frozenset({_A, _G}),
    Permission.DELETE_OWN_MEMORY: frozenset({_A, _T, _G}),
    Permission.DELETE_ANY_MEMORY: frozenset({_A}),
    Permission.REACT: _EVERY_MEMBER,
    Permission.COMMENT: _EVERY_MEMBER,
    Permission.EDIT_OWN_COMMENT: _EVERY_MEMBER,
    Permission.DELETE_OWN_COMMENT: frozenset({_A, _T, _G}),
    Permission.DELETE_ANY_COMMENT: frozenset({_A, _G}),
    Permission.VIEW_ANALYTICS: frozenset({_A, _G}),
    Permission.MANAGE_ARCHIVE: frozenset({_A, _G}),
}

# Which roles each role may invite (pets are created, never invited).
INVITABLE_ROLES: Mapping[Role, frozenset[Role]] = {
    _A: frozenset({_A, _T, _C, _G}),
    _G: frozenset({_A, _T, _G}),
}

_ROLE_ORDER = (_A, _G, _T, _C)


def allows(role: Role, permission: Permission) -> bool:
    return role in PERMISSIONS[permission]


def require(actor: Actor, permission: Permission) -> None:
    """Raise Forbidden unless the actor's role holds the permission."""
    if not allows(actor.role, permission):
        raise Forbidden(required_roles_message(permission))


def required_roles_message(permission: Permission) -> str:
    roles = [role.value for role in _ROLE_ORDER if role in PERMISSIONS[permission]]
    names = roles[0] if len(roles) == 1 else ", ".join(roles[:-1]) + " or " + roles[-1]
    return f"Operation requires {names} role"


def may_invite(inviter_role: Role, invited_role: Role) -> bool:
    return invited_role in INVITABLE_ROLES.get(inviter_role, frozenset())


def require_can_invite(actor: Actor, invited_role: Role) -> None:
    require(actor, Permission.INVITE_MEMBERS)
    if not may_invite(actor.role, invited_role):
        raise Forbidden(f"A {actor.role.value} cannot invite a {invited_role.value}")
