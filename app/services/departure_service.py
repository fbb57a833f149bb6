"""Leaving a family, and deleting one's own account.

Both are one call of `app.depart_family` in the member's own transaction, under the
family's lock (so two adults leaving at once cannot leave the family without an adult):

- The last adult of a family with other members can do neither (409 `last_adult`): invite
  another adult and wait for them to join first (roles never change).
- A member alone in the family (pets aside) takes the family with them: every memory, file,
  pet, invite and former member's profile goes.
- Otherwise the profile stays, marked removed, so what stays with the family keeps its
  author: leaving keeps the name the family knew; deleting the account shows "Former
  member" instead and drops the avatar. Deleting with `memories=delete` removes the
  member's memories (and everyone's reactions and comments on them); their comments and
  reactions on other memories stay, as a former member's, so others' threads stay whole.

Either way every login ends, pending invites they issued are revoked, reset links die, the
email (or username) is free again, and the account itself is closed at the sign-in provider
(no password, no email). This account's departure is the provider call between the work
and the commit, as registration does it: if closing fails, nothing is committed and the
member, still signed in, can try again; closing is idempotent.
"""

from dataclasses import dataclass

from app.adapters.auth.provider import AuthProvider
from app.db.postgres import Connection
from app.errors import Conflict, Unauthorized
from app.models.identity import Actor
from app.services.memory_service import with_thumbnails

LAST_ADULT = (
    "You are the last adult of this family: invite another adult and wait until they have "
    "joined, then you can leave or delete your account"
)

_DEPART = "select outcome, storage_path from app.depart_family($1, $2)"


@dataclass(frozen=True)
class Departure:
    """What the router needs after the commit: the files to remove in the background."""

    family_deleted: bool
    storage_paths: list[str]
    media_count: int


async def _depart(
    db: Connection,
    provider: AuthProvider,
    actor: Actor,
    *,
    erase: bool,
    delete_memories: bool,
) -> Departure:
    rows = await db.fetch(_DEPART, erase, delete_memories)
    outcome = rows[0]["outcome"] if rows else "not_found"
    if outcome == "last_adult":
        raise Conflict(LAST_ADULT, code="last_adult")
    if outcome not in ("departed", "family_deleted"):
        raise Unauthorized("Token has been revoked")  # removed in this very moment
    files = [row["storage_path"] for row in rows if row["outcome"] == "file"]
    await provider.close_account(actor.id)
    return Departure(
        family_deleted=outcome == "family_deleted",
        storage_paths=with_thumbnails(files),
        media_count=len(files),
    )


async def leave_family(db: Connection, provider: AuthProvider, actor: Actor) -> Departure:
    return await _depart(db, provider, actor, erase=False, delete_memories=False)


async def delete_account(
    db: Connection, provider: AuthProvider, actor: Actor, *, delete_memories: bool
) -> Departure:
    return await _depart(db, provider, actor, erase=True, delete_memories=delete_memories)
