"""What goes into a family's archive, and in what order: the bag of docs/archive.md.

Everything is read from one snapshot (`Database.snapshot_session`: REPEATABLE READ, as
pg_dump does), so the files, memories.json and index.html agree even while the family keeps
adding memories. The family is read in three passes over the same ordered rows, each in
batches through server-side cursors, so memory stays flat whatever the family's size:

1. media: every original (and preview, when asked) is streamed from storage into the zip,
   its SHA-256 computed on the way (`app.adapters.bag_zip`). What each media item became
   (its checksum, or why it is missing) is noted, one short line each, in a spooled file;
2. `memories.json`: memories with their media, reactions and comment threads, one line
   each, the notes of pass 1 read back in the same order;
3. `index.html`, from the very same records (`app.services.archive_html`).

Drafts stay out (they are private to their author); published and archived memories go in.
Background work, so the snapshot runs as the service role: every statement names the
family.
"""

import asyncio
import hashlib
import json
import logging
import re
import secrets
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from importlib import metadata
from typing import IO, Any, BinaryIO
from uuid import UUID

from app.adapters.bag_zip import BagTotals, BagZipWriter, PayloadFile
from app.adapters.storage.base import StorageBackend
from app.db.postgres import Connection, Database
from app.errors import NotFound
from app.models.media_types import EXTENSION_FOR_MIME
from app.services import archive_html

logger = logging.getLogger(__name__)

FORMAT = "timeless-archive"
FORMAT_VERSION = 1
INCLUDE_ORIGINALS = "originals"
INCLUDE_PREVIEWS = "previews"
# Memories read, and written out, per round trip; bounds what one batch holds.
BATCH = 100
MISSING = "the file was missing from storage when the archive was made"
# Members' email addresses are not in the archive; a salted SHA-256 of each is, so an import
# can recognise a member by the address they sign in with (docs/archive.md).
EMAIL_SALT_BYTES = 16
# Extensions of the types a preview may have (a superset of the uploadable ones).
_EXTENSIONS = {**EXTENSION_FOR_MIME, "image/avif": "avif"}

# Progress ----------------------------------------------------------------------------------


@dataclass
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0


ProgressReport = Callable[[Progress], Awaitable[None]]


async def _no_report(progress: Progress) -> None:
    return None


# Names inside the bag ----------------------------------------------------------------------


def slug(text: str, *, fallback: str, limit: int = 40) -> str:
    """Lower-case ASCII letters, digits and "-" only: a name every file system keeps as is."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cut = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")
    return cut or fallback


def bag_name(family_name: str, day: date) -> str:
    return f"timeless-{slug(family_name, fallback='family')}-{day.isoformat()}"


def memory_folder(day: date, title: str, memory_id: UUID) -> str:
    name = f"{day.isoformat()}_{slug(title, fallback='memory')}_{memory_id.hex[:8]}"
    return f"media/{day.year:04d}/{name}"


def _stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0] if "." in file_name.strip(".") else file_name


def original_name(folder: str, position: int, file_name: str, mime_type: str) -> str:
    extension = _EXTENSIONS.get(mime_type, "bin")
    return f"{folder}/{position:02d}_{slug(_stem(file_name), fallback='file')}.{extension}"


def preview_name(folder: str, position: int, file_name: str, mime_type: str) -> str:
    extension = _EXTENSIONS.get(mime_type, "bin")
    return f"{folder}/{position:02d}_{slug(_stem(file_name), fallback='file')}.preview.{extension}"


# The snapshot ------------------------------------------------------------------------------

_FAMILY = """
select name, created_at, now() as exported_at from public.family_units where id = $1
"""
_COUNTS = """
select count(*) as memories,
       (select count(*) from public.memory_media mm
        join public.memories m on m.id = mm.memory_id
        where m.family_unit_id = $1 and m.status <> 'draft') as media,
       (select count(*) from public.memory_media mm
        join public.memories m on m.id = mm.memory_id
        where m.family_unit_id = $1 and m.status <> 'draft'
          and jsonb_typeof(to_jsonb(mm) -> 'variants' -> 'preview' -> 'path') = 'string')
         as previews
from public.memories
where family_unit_id = $1 and status <> 'draft'
"""
_YEARS = """
select distinct extract(year from coalesce(memory_date, (created_at at time zone 'UTC')::date))::int
       as year
from public.memories where family_unit_id = $1 and status <> 'draft'
order by 1
"""
_MEMBERS = """
select id, display_name, role, created_at, removed_at is not null as former, email
from public.user_profiles where family_unit_id = $1
order by created_at, id
"""
_PETS = """
select id, display_name, created_at from public.pet_profiles where family_unit_id = $1
order by created_at, id
"""
# The one order of everything: the memory's day, then when it was created; media in the
# order they were added. Passes 1 and 2 rely on it being the same.
_MEMORIES = """
select m.id, m.title, m.description, m.memory_date, m.location, m.tags, m.status, m.user_id,
       m.created_at, m.updated_at, m.modified_by,
       coalesce(m.memory_date, (m.created_at at time zone 'UTC')::date) as day
from public.memories m
where m.family_unit_id = $1 and m.status <> 'draft'
order by day, m.created_at, m.id
"""
# to_jsonb(mm): the columns newer migrations add (variants, sha256, taken_at, camera) are read
# when they exist and are null before.
_MEDIA_FILES = """
select mm.id, mm.memory_id, mm.file_name, mm.mime_type, mm.storage_path, mm.file_size,
       to_jsonb(mm) -> 'variants' -> 'preview' as preview, m.title,
       coalesce(m.memory_date, (m.created_at at time zone 'UTC')::date) as day,
       row_number() over (partition by mm.memory_id order by mm.created_at, mm.id) as position
from public.memory_media mm
join public.memories m on m.id = mm.memory_id
where m.family_unit_id = $1 and m.status <> 'draft' and mm.family_unit_id = $1
order by day, m.created_at, m.id, mm.created_at, mm.id
"""
_MEDIA_OF = """
select mm.id, mm.memory_id, mm.file_name, mm.mime_type, mm.file_size, mm.width, mm.height,
       mm.duration, mm.metadata, mm.created_at, to_jsonb(mm) as row_json,
       row_number() over (partition by mm.memory_id order by mm.created_at, mm.id) as position
from public.memory_media mm
where mm.memory_id = any($1::uuid[]) and mm.family_unit_id = $2
order by mm.created_at, mm.id
"""
_REACTIONS_OF = """
select memory_id, user_id, emoji, created_at from public.memory_reactions
where memory_id = any($1::uuid[]) and family_unit_id = $2
order by created_at, id
"""
_COMMENTS_OF = """
select id, memory_id, user_id, parent_comment_id, content, created_at, updated_at, deleted_at
from public.memory_comments
where memory_id = any($1::uuid[]) and family_unit_id = $2
order by created_at, id
"""
# Processing notes that say nothing about the file itself.
_INTERNAL_METADATA = frozenset({"error", "last_error"})


@dataclass(frozen=True)
class FamilySnapshot:
    """A family as the database held it at one instant (the connection's transaction)."""

    db: Connection
    family_id: UUID
    family_name: str
    family_created_at: datetime
    exported_at: datetime

    @property
    def bag_name(self) -> str:
        return bag_name(self.family_name, self.exported_at.astimezone(UTC).date())


@asynccontextmanager
async def family_snapshot(database: Database, family_id: UUID) -> AsyncIterator[FamilySnapshot]:
    """Open the snapshot an archive is read from; NotFound if the family does not exist."""
    async with database.snapshot_session() as db:
        row = await db.fetchrow(_FAMILY, family_id)
        if row is None:
            raise NotFound("Family not found")
        yield FamilySnapshot(db, family_id, row["name"], row["created_at"], row["exported_at"])


@dataclass(frozen=True)
class ArchiveSummary:
    bag_name: str
    totals: BagTotals
    memories: int
    media: int


# Writing the bag ---------------------------------------------------------------------------


async def write_archive(
    snapshot: FamilySnapshot,
    storage: StorageBackend,
    out: BinaryIO,
    *,
    include: Sequence[str] = (INCLUDE_ORIGINALS,),
    report: ProgressReport = _no_report,
) -> ArchiveSummary:
    """Write the family's bag as a zip into `out` (an open, writable, seekable binary file)."""
    db, family = snapshot.db, snapshot.family_id
    counts = await db.fetchrow(_COUNTS, family)
    originals = INCLUDE_ORIGINALS in include
    previews = INCLUDE_PREVIEWS in include
    progress = Progress(
        files_total=(counts["media"] if originals else 0)
        + (counts["previews"] if previews else 0)
        # README.txt, memories.json, index.html.
        + 3
    )
    await report(progress)
    bag = _Bag(BagZipWriter(out, snapshot.bag_name, when=snapshot.exported_at.timestamp()))
    # Closed below, once all three passes have read it.
    notes = tempfile.SpooledTemporaryFile(max_size=1024 * 1024, mode="w+", encoding="utf-8")  # noqa: SIM115
    try:
        await _write_media(snapshot, storage, bag, notes, originals, previews, progress, report)
        members = [dict(row) for row in await db.fetch(_MEMBERS, family)]
        names = {str(member["id"]): member["display_name"] for member in members}
        await bag.text("README.txt", _readme(snapshot, counts["memories"], counts["media"]))
        await _count_text_file(progress, report, bag)
        notes.seek(0)
        await _write_memories_json(snapshot, bag, notes, members, progress)
        await _count_text_file(progress, report, bag)
        notes.seek(0)
        await _write_index_html(snapshot, bag, notes, names, counts)
        await _count_text_file(progress, report, bag)
        totals = await bag.finish(_bag_info(snapshot, counts["memories"], counts["media"]))
    except BaseException:
        await asyncio.shield(asyncio.to_thread(bag.writer.abort))
        raise
    finally:
        notes.close()
    return ArchiveSummary(snapshot.bag_name, totals, counts["memories"], counts["media"])


async def _count_text_file(progress: Progress, report: ProgressReport, bag: "_Bag") -> None:
    progress.files_done += 1
    progress.bytes_done = bag.writer.payload_bytes
    await report(progress)


class _Bag:
    """The bag writer, each blocking step in a thread so the event loop keeps serving."""

    def __init__(self, writer: BagZipWriter) -> None:
        self.writer = writer

    async def copy(
        self,
        storage: StorageBackend,
        storage_path: str,
        name: str,
        size: int | None,
        progress: Progress,
    ) -> str:
        """Stream a stored object into `data/<name>`; its SHA-256. NotFound if it is missing
        (raised before anything is written).

        The next chunk is read before the current one is written, so the first and last
        writes share their trip to a thread with opening and closing the entry: per file the
        event loop hands work to a thread about once per chunk read and once per chunk
        written, and no more (those trips were a third of the time on small files).
        """
        chunks = aiter(storage.read_chunks(storage_path))
        try:
            chunk = await anext(chunks, b"")
            entry: PayloadFile | None = None
            while True:
                following = await anext(chunks, b"")
                last = not following
                entry = await asyncio.to_thread(self._write, entry, name, size, chunk, last)
                progress.bytes_done += len(chunk)
                if last:
                    return entry.digest
                chunk = following
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def _write(
        self, entry: PayloadFile | None, name: str, size: int | None, chunk: bytes, last: bool
    ) -> PayloadFile:
        if entry is None:
            entry = self.writer.open_payload(name, size=size)
        entry.write(chunk)
        if last:
            entry.close()
        return entry

    async def text(self, name: str, text: str) -> None:
        data = text.encode()
        await asyncio.to_thread(self.writer.write_payload, name, data)

    async def open_text(self, name: str) -> "_TextEntry":
        entry = await asyncio.to_thread(self.writer.open_payload, name, compress=True)
        return _TextEntry(entry)

    async def finish(self, info: Mapping[str, str]) -> BagTotals:
        return await asyncio.to_thread(self.writer.finish, info)


class _TextEntry:
    """A text file written in pieces; small pieces are gathered into larger writes."""

    def __init__(self, entry: PayloadFile) -> None:
        self._entry = entry
        self._buffer: list[str] = []
        self._buffered = 0

    async def write(self, text: str) -> None:
        self._buffer.append(text)
        self._buffered += len(text)
        if self._buffered >= 256 * 1024:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data = "".join(self._buffer).encode()
            self._buffer, self._buffered = [], 0
            await asyncio.to_thread(self._entry.write, data)

    async def close(self) -> None:
        await self.flush()
        await asyncio.to_thread(self._entry.close)


# Pass 1: the files -------------------------------------------------------------------------


async def _write_media(
    snapshot: FamilySnapshot,
    storage: StorageBackend,
    bag: _Bag,
    notes: IO[str],
    originals: bool,
    previews: bool,
    progress: Progress,
    report: ProgressReport,
) -> None:
    """Copy the files; note for each media item: id, sha256, preview written, missing."""
    async for row in _rows(snapshot.db, _MEDIA_FILES, snapshot.family_id):
        folder = memory_folder(row["day"], row["title"], row["memory_id"])
        digest, missing, preview_written = "", "", ""
        if originals:
            name = original_name(folder, row["position"], row["file_name"], row["mime_type"])
            try:
                digest = await bag.copy(
                    storage, row["storage_path"], name, row["file_size"], progress
                )
            except NotFound:
                logger.warning("archive: a stored file is missing", extra={"media": str(row["id"])})
                missing = MISSING
            progress.files_done += 1
            await report(progress)
        preview = _preview(row["preview"])
        if previews and preview is not None:
            name = preview_name(folder, row["position"], row["file_name"], preview["mime_type"])
            try:
                await bag.copy(storage, preview["path"], name, preview.get("size"), progress)
                preview_written = "1"
            except NotFound:
                pass  # a preview is a convenience: the archive goes on without it
            progress.files_done += 1
            await report(progress)
        notes.write(f"{row['id']}\t{digest}\t{preview_written}\t{missing}\n")


def _preview(value: object) -> dict[str, Any] | None:
    """The preview variant, if processing made one (`variants.preview` with a path)."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        mime = value.get("mime_type")
        return {**value, "mime_type": mime if isinstance(mime, str) else "image/jpeg"}
    return None


async def _rows(db: Connection, query: str, *args: object) -> AsyncIterator[Mapping[str, Any]]:
    cursor = await db.cursor(query, *args)
    while rows := await cursor.fetch(BATCH):
        for row in rows:
            yield row


async def _memory_batches(
    snapshot: FamilySnapshot, notes: IO[str]
) -> AsyncIterator[list[tuple[date, dict[str, Any]]]]:
    """The memories in archive order, as their memories.json records, a batch at a time."""
    db, family = snapshot.db, snapshot.family_id
    cursor = await db.cursor(_MEMORIES, family)
    while rows := await cursor.fetch(BATCH):
        ids = [row["id"] for row in rows]
        media: dict[UUID, list[Mapping[str, Any]]] = {}
        for item in await db.fetch(_MEDIA_OF, ids, family):
            media.setdefault(item["memory_id"], []).append(item)
        reactions: dict[UUID, list[Mapping[str, Any]]] = {}
        for reaction in await db.fetch(_REACTIONS_OF, ids, family):
            reactions.setdefault(reaction["memory_id"], []).append(reaction)
        comments: dict[UUID, list[Mapping[str, Any]]] = {}
        for comment in await db.fetch(_COMMENTS_OF, ids, family):
            comments.setdefault(comment["memory_id"], []).append(comment)
        yield [
            (
                row["day"],
                _memory_record(
                    row,
                    [_media_record(row, item, notes) for item in media.get(row["id"], [])],
                    reactions.get(row["id"], []),
                    comments.get(row["id"], []),
                ),
            )
            for row in rows
        ]


# Pass 2: memories.json ---------------------------------------------------------------------


async def _write_memories_json(
    snapshot: FamilySnapshot,
    bag: _Bag,
    notes: IO[str],
    members: Sequence[Mapping[str, Any]],
    progress: Progress,
) -> None:
    pets = await snapshot.db.fetch(_PETS, snapshot.family_id)
    salt = secrets.token_hex(EMAIL_SALT_BYTES)
    head = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": _time(snapshot.exported_at),
        "generator": f"Timeless Love {_version()}",
        "family": {"name": snapshot.family_name, "created_at": _time(snapshot.family_created_at)},
        "member_email_salt": salt,
        "members": [
            {
                "id": str(member["id"]),
                "display_name": member["display_name"],
                "role": member["role"],
                "joined_at": _time(member["created_at"]),
                "former_member": member["former"],
                "email_sha256": member_email_hash(salt, member["email"])
                if member["email"]
                else None,
            }
            for member in members
        ],
        "pets": [
            {
                "id": str(pet["id"]),
                "display_name": pet["display_name"],
                "added_at": _time(pet["created_at"]),
            }
            for pet in pets
        ],
    }
    opening = json.dumps(head, ensure_ascii=False, indent=2)
    entry = await bag.open_text("memories.json")
    # The head's closing brace is replaced by the memories list, one memory per line.
    await entry.write(opening[: opening.rindex("}")].rstrip() + ',\n  "memories": [')
    first = True
    async for batch in _memory_batches(snapshot, notes):
        for _day, record in batch:
            line = json.dumps(record, ensure_ascii=False, separators=(", ", ": "))
            await entry.write(("\n" if first else ",\n") + line)
            first = False
    await entry.write("\n  ]\n}\n")
    await entry.close()


def member_email_hash(salt: str, email: str) -> str:
    """What memories.json holds of a member's email: SHA-256 of `<salt>:<email lower-cased>`
    (hex), the salt being the archive's own `member_email_salt`."""
    return hashlib.sha256(f"{salt}:{email.strip().lower()}".encode()).hexdigest()


def _memory_record(
    row: Mapping[str, Any],
    media: list[dict[str, Any]],
    reactions: Sequence[Mapping[str, Any]],
    comments: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "description": row["description"],
        "memory_date": row["memory_date"].isoformat() if row["memory_date"] else None,
        "location": row["location"],
        "tags": list(row["tags"]),
        "status": row["status"],
        "author": str(row["user_id"]),
        "created_at": _time(row["created_at"]),
        "updated_at": _time(row["updated_at"]),
        "last_edited_by": str(row["modified_by"]) if row["modified_by"] else None,
        "media": media,
        "reactions": [
            {
                "member": str(reaction["user_id"]),
                "emoji": reaction["emoji"],
                "created_at": _time(reaction["created_at"]),
            }
            for reaction in reactions
        ],
        "comments": _threads(comments),
    }


def _media_record(
    memory: Mapping[str, Any], item: Mapping[str, Any], notes: IO[str]
) -> dict[str, Any]:
    media_id, digest, preview_written, missing = notes.readline().rstrip("\n").split("\t")
    if media_id != str(item["id"]):
        # Both passes read one snapshot in one order: this cannot happen unless that breaks.
        raise RuntimeError("archive passes disagree on the order of media")
    folder = memory_folder(memory["day"], memory["title"], memory["id"])
    full = item["row_json"]
    preview = _preview((full.get("variants") or {}).get("preview"))
    metadata_ = {
        key: value
        for key, value in (item["metadata"] or {}).items()
        if key not in _INTERNAL_METADATA
    }
    return {
        "id": media_id,
        "file": original_name(folder, item["position"], item["file_name"], item["mime_type"])
        if digest
        else None,
        "file_name": item["file_name"],
        "mime_type": item["mime_type"],
        "size": item["file_size"],
        "sha256": digest or None,
        "width": item["width"],
        "height": item["height"],
        "duration": item["duration"],
        "taken_at": _taken_at(full),
        "camera": full.get("camera"),
        "metadata": metadata_,
        "preview": {
            "file": preview_name(folder, item["position"], item["file_name"], preview["mime_type"]),
            "mime_type": preview["mime_type"],
            "width": preview.get("width"),
            "height": preview.get("height"),
        }
        if preview is not None and preview_written
        else None,
        "missing": missing or None,
        "created_at": _time(item["created_at"]),
    }


def _threads(comments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Comments (oldest first) as nested threads: each reply under its parent."""
    nodes: dict[UUID, dict[str, Any]] = {}
    top: list[dict[str, Any]] = []
    for comment in comments:
        deleted = comment["deleted_at"] is not None
        node: dict[str, Any] = {
            "id": str(comment["id"]),
            "author": str(comment["user_id"]),
            "content": None if deleted else comment["content"],
            "created_at": _time(comment["created_at"]),
            "updated_at": _time(comment["updated_at"]),
            "deleted": deleted,
            "replies": [],
        }
        nodes[comment["id"]] = node
        parent = nodes.get(comment["parent_comment_id"]) if comment["parent_comment_id"] else None
        # A reply is always younger than its parent, so the parent is already placed.
        (parent["replies"] if parent is not None else top).append(node)
    return top


# Pass 3: index.html ------------------------------------------------------------------------


async def _write_index_html(
    snapshot: FamilySnapshot,
    bag: _Bag,
    notes: IO[str],
    names: Mapping[str, str],
    counts: Mapping[str, int],
) -> None:
    years = [row["year"] for row in await snapshot.db.fetch(_YEARS, snapshot.family_id)]
    entry = await bag.open_text("index.html")
    await entry.write(
        archive_html.page_start(
            family_name=snapshot.family_name,
            exported_on=snapshot.exported_at.astimezone(UTC).date(),
            memory_count=counts["memories"],
            media_count=counts["media"],
            years=years,
        )
    )
    position: tuple[int, int] | None = None
    async for batch in _memory_batches(snapshot, notes):
        for day, record in batch:
            headings, position = archive_html.section_headings(position, day)
            await entry.write(headings + archive_html.memory(record, day, names))
    await entry.write(archive_html.page_end())
    await entry.close()


# Small things ------------------------------------------------------------------------------


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _taken_at(row: Mapping[str, Any]) -> str | None:
    """The capture time, with the camera's UTC offset when it was known."""
    value = row.get("taken_at")
    if not isinstance(value, str):
        return None
    moment = datetime.fromisoformat(value)
    offset = row.get("taken_at_offset")
    if isinstance(offset, int):
        return moment.astimezone(timezone(timedelta(minutes=offset))).isoformat()
    return _time(moment)


def _version() -> str:
    try:
        return metadata.version("timeless-love")
    except metadata.PackageNotFoundError:
        return "unknown"


def _bag_info(snapshot: FamilySnapshot, memories: int, media: int) -> dict[str, str]:
    return {
        "Source-Organization": "Timeless Love",
        "External-Description": (
            f"The memories of {snapshot.family_name}: {_counted(memories, media)}, with their "
            "stories, comments and reactions. Open data/index.html in a web browser to see "
            "them; data/memories.json holds everything as data."
        ),
        "Bagging-Date": snapshot.exported_at.astimezone(UTC).date().isoformat(),
        "Bag-Software-Agent": f"Timeless Love {_version()}",
        "Timeless-Archive-Format-Version": str(FORMAT_VERSION),
    }


def _counted(memories: int, media: int) -> str:
    return (
        f"{archive_html.plural(memories, 'memory', 'memories')} and "
        f"{archive_html.plural(media, 'photo or video', 'photos and videos')}"
    )


def _readme(snapshot: FamilySnapshot, memories: int, media: int) -> str:
    day = archive_html.long_date(snapshot.exported_at.astimezone(UTC).date())
    return f"""The memories of {snapshot.family_name}
{"=" * (16 + len(snapshot.family_name))}

Kept on {day}: {_counted(memories, media)}.

To look at them, open index.html (in this folder) in any web browser. It needs no
internet connection and no special program.

What is here
- index.html     every memory by date, with its photos, videos, comments and reactions.
- media/         the photos and videos, exactly as they were shared, in folders by year
                 and date (media/2019/2019-07-14_summer-at-the-lake_3f2a9c1e/...).
- memories.json  everything written down as data (JSON, UTF-8), for programs: memories,
                 media, comments with their replies, reactions, family members and pets.
                 Format "{FORMAT}", version {FORMAT_VERSION}: every memory has an id, title,
                 description, memory_date, location, tags, author (a member id), media
                 (file: the path of the photo or video from this folder; sha256: its
                 checksum), reactions and comments (replies nested under each comment).

This folder is the "data" part of a BagIt bag (RFC 8493). One folder up,
manifest-sha256.txt lists the SHA-256 checksum of every file here, so anyone can check that
nothing was lost or changed: from that folder, run `sha256sum -c manifest-sha256.txt`,
or use any BagIt tool.

How to keep it: keep two copies in two different places (a computer and a USB drive, or a
cloud drive), copy them onto new devices every few years, and open index.html now and
then to check that everything is still there.
"""
