"""Imports: a family brings its past in (a Google Photos Takeout, a folder of photos and
videos, a Timeless export), as a job an adult or grandparent starts and follows.

The rules (docs/archive.md, "Import"):

- **One memory per album, one per day for loose photos.** A Takeout album folder (or any
  sub-folder of a plain folder) becomes one memory titled after the album; photos in no album
  are grouped by the day they were taken ("Photos of 14 June 2019"). An album larger than a
  memory may hold continues in "… (part 2)". A Timeless export keeps its own memories.
- **Dates** come from the Takeout sidecar (`photoTakenTime`), else the photo's EXIF, else the
  file's own date. Titles and descriptions come from the album and the sidecars.
- **A Timeless export's comments and reactions come back** (`_Replay`): comments with their
  text, dates and threads, each by the member of this family the archive's author is (the
  same account, or the same email by the archive's salted hash), else by the importing member
  under the author's archive name; reactions of members only, the others named in the report.
- **Location** only when the family keeps locations (`keep_location`).
- **Idempotent by content.** Each stored file is recorded in `import_items` under its SHA-256
  in the same transaction as its media row; the memory an album or a day became is recorded in
  `import_memories`. Running the same archive again, or again after a crash half-way, adds
  nothing twice: a file already in the family is counted as a duplicate and skipped.
- **As the member who started it**: every memory and media row is written in that member's RLS
  session, so the database's policies hold for an import exactly as for the API.

A job is claimed with `FOR UPDATE SKIP LOCKED` and heartbeats while it runs (its progress
update), so a process that dies mid-import leaves a job another process picks up again.
"""

import asyncio
import contextlib
import hashlib
import logging
import tempfile
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import asyncpg
from PIL import Image

from app.adapters.archive.sources import Source, SourceError, SourceFile, TimelessExport
from app.adapters.media.sniff import SNIFF_BYTES, sniff_mime
from app.adapters.storage.base import StorageBackend
from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from app.models import rbac
from app.models.identity import Actor, Role
from app.models.media_types import ALLOWED_MIME_TYPES
from app.models.rbac import Permission
from app.schemas.feed import Emoji
from app.schemas.imports import ImportJob
from app.schemas.memories import MediaRef, MemoryCreate
from app.services import media_paths, memory_service
from app.services.archive_writer import member_email_hash
from app.services.comment_service import MAX_DEPTH
from app.services.polling_job import PollingJob

logger = logging.getLogger(__name__)

IMPORT_NOT_FOUND = "Import not found"
# A report lists at most this many skipped files (the counts stay exact).
MAX_REPORTED_SKIPS = 1000
_PROGRESS_EVERY_SECONDS = 1.0
_COPY_CHUNK = 1024 * 1024
# Media handed to the processor together: it runs them with every slot it has, so the slots
# stay busy (one file at a time kept one of them idle), while the progress still moves.
_PROCESS_BATCH = 32
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_OFFSET_TIME_ORIGINAL = 0x9011
_EXIF_IFD = 0x8769

# Jobs ------------------------------------------------------------------------------------

_NEW_JOB = """
insert into public.family_imports (family_unit_id, created_by, storage_path, source_name)
values ($1, $2, $3, $4)
returning id, status, progress, report, error, source_name, created_at, updated_at, finished_at
"""
_LIST_JOBS = """
select id, status, progress, report, error, source_name, created_at, updated_at, finished_at
from public.family_imports order by created_at desc, id
"""
_GET_JOB = """
select id, status, progress, report, error, source_name, created_at, updated_at, finished_at
from public.family_imports where id = $1
"""


async def start(
    db: Connection, actor: Actor, storage: StorageBackend, *, storage_path: str
) -> ImportJob:
    """Queue an import of a zip the member uploaded with `purpose: "import"`."""
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    upload = media_paths.parse_import_path(storage_path)
    if upload.family_unit_id != actor.family_unit_id:
        raise NotFound("No uploaded archive at storage_path")
    if await storage.stat(storage_path) is None:
        raise Invalid("No uploaded archive at storage_path; upload the zip first")
    try:
        async with db.transaction():
            row = await db.fetchrow(
                _NEW_JOB, actor.family_unit_id, actor.id, storage_path, "uploaded archive"
            )
    except Exception as exc:  # the unique path: this upload is already being imported
        if type(exc).__name__ == "UniqueViolationError":
            raise Conflict("This upload is already being imported") from None
        raise
    return ImportJob.model_validate(_job(row))


async def list_jobs(db: Connection, actor: Actor) -> list[ImportJob]:
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    return [ImportJob.model_validate(_job(row)) for row in await db.fetch(_LIST_JOBS)]


async def get_job(db: Connection, actor: Actor, import_id: UUID) -> ImportJob:
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    row = await db.fetchrow(_GET_JOB, import_id)
    if row is None:  # another family's job is invisible (RLS): the same 404
        raise NotFound(IMPORT_NOT_FOUND)
    return ImportJob.model_validate(_job(row))


def _job(row: Any) -> dict[str, Any]:
    return dict(row)


# Running an import ---------------------------------------------------------------------------

_CLAIM = """
update public.family_imports j
set status = 'running', attempts = attempts + 1, claimed_at = now(), updated_at = now()
where j.id = (
  select id from public.family_imports
  where storage_path is not null
    and (status = 'queued'
         or (status = 'running' and claimed_at < now() - make_interval(secs => $1)))
  order by created_at
  for update skip locked
  limit 1
)
returning j.id, j.family_unit_id, j.created_by, j.storage_path, j.attempts
"""
_PROGRESS = """
update public.family_imports
set progress = $2::jsonb, report = $3::jsonb, claimed_at = now(), updated_at = now()
where id = $1
"""
_FINISH = """
update public.family_imports
set status = $2, progress = $3::jsonb, report = $4::jsonb, error = $5, claimed_at = null,
    updated_at = now(), finished_at = now()
where id = $1
"""
_ACTOR = """
select id, family_unit_id, role, display_name from public.user_profiles
where id = $1 and family_unit_id = $2 and removed_at is null
"""
_KEEP_LOCATION = "select keep_location from public.family_units where id = $1"
_IMPORTED = "select 1 from public.import_items where family_unit_id = $1 and sha256 = $2"
_RECORD_ITEM = """
insert into public.import_items (family_unit_id, sha256, media_id) values ($1, $2, $3)
"""
_MEMORY_FOR_KEY = """
select memory_id from public.import_memories where family_unit_id = $1 and import_key = $2
"""
_RECORD_MEMORY = """
insert into public.import_memories (family_unit_id, import_key, memory_id) values ($1, $2, $3)
"""
_MEMBERS_HERE = """
select id, email from public.user_profiles where family_unit_id = $1 and removed_at is null
"""
_IMPORT_COMMENT = """
select comment_id, added from app.import_comment($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_IMPORT_REACTION = "select app.import_reaction($1, $2, $3, $4)"
_EMOJIS = frozenset(typing.get_args(Emoji))
_MAX_COMMENT_LENGTH = 5000
_MAX_NAME_LENGTH = 100
UNKNOWN_AUTHOR = "Unknown"
_EARLIER_DATE = """
update public.memories set memory_date = $2, updated_at = now()
where id = $1 and (memory_date is null or memory_date > $2)
"""


@dataclass
class Report:
    memories_created: int = 0
    media_imported: int = 0
    duplicates_skipped: int = 0
    files_skipped: list[dict[str, str]] = field(default_factory=list)
    files_skipped_total: int = 0
    comments_imported: int = 0
    comments_skipped: list[dict[str, str]] = field(default_factory=list)
    comments_skipped_total: int = 0
    reactions_imported: int = 0
    reactions_skipped: list[dict[str, str]] = field(default_factory=list)
    reactions_skipped_total: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.files_skipped_total += 1
        _listed(self.files_skipped, name, reason)

    def skip_comment(self, name: str, reason: str) -> None:
        self.comments_skipped_total += 1
        _listed(self.comments_skipped, name, reason)

    def skip_reaction(self, name: str, reason: str) -> None:
        self.reactions_skipped_total += 1
        _listed(self.reactions_skipped, name, reason)

    def as_json(self) -> dict[str, Any]:
        return {
            "memories_created": self.memories_created,
            "media_imported": self.media_imported,
            "duplicates_skipped": self.duplicates_skipped,
            "files_skipped": self.files_skipped,
            "files_skipped_total": self.files_skipped_total,
            "comments_imported": self.comments_imported,
            "comments_skipped": self.comments_skipped,
            "comments_skipped_total": self.comments_skipped_total,
            "reactions_imported": self.reactions_imported,
            "reactions_skipped": self.reactions_skipped,
            "reactions_skipped_total": self.reactions_skipped_total,
        }


def _listed(skipped: list[dict[str, str]], name: str, reason: str) -> None:
    if len(skipped) < MAX_REPORTED_SKIPS:
        skipped.append({"name": name[-255:], "reason": reason})


@dataclass
class Progress:
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
        }


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Group:
    """Where a file goes: the memory an album (or a day) becomes."""

    key: str
    title: str
    description: str | None = None
    memory_date: date | None = None
    location: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Importer:
    """One import run: reads a source and writes memories and media as `actor`."""

    database: Database
    storage: StorageBackend
    settings: Settings
    actor: Actor
    job_id: UUID
    keep_location: bool
    on_progress: ProgressCallback | None = None
    # Media to process once stored (the API process hands them to its media processor).
    on_media: Callable[[list[UUID]], Awaitable[None]] | None = None
    report: Report = field(default_factory=Report)
    progress: Progress = field(default_factory=Progress)
    _memory_parts: dict[str, int] = field(default_factory=dict)
    _unprocessed: list[UUID] = field(default_factory=list)
    _last_saved: float = 0.0

    async def run(self, source: Source) -> None:
        export = source.timeless_export()
        if export is not None:
            await self._run_export(export)
        else:
            files, skipped = source.media_files()
            for name, reason in skipped:
                self.report.skip(name, reason)
            self.progress.files_total = len(files)
            for item in files:
                await self._import_file(item, self._group_for(item))
        await self._hand_over_media()
        await self._save_progress(force=True)

    # Files ---------------------------------------------------------------------------------

    async def _import_file(self, item: SourceFile, group: _Group | None) -> None:
        try:
            await self._import_one(item, group)
        except (OSError, SourceError) as exc:
            logger.warning("import could not read a file", extra={"error": type(exc).__name__})
            self.report.skip(item.name, "the file could not be read from the archive")
        self.progress.files_done += 1
        self.progress.bytes_done += item.size
        await self._save_progress()

    async def _import_one(self, item: SourceFile, group: _Group | None) -> None:
        if item.sidecar_problem:
            self.report.skip(item.name + " (sidecar)", item.sidecar_problem)
        if item.size > self.settings.max_file_bytes:
            self.report.skip(item.name, f"larger than {self.settings.max_file_bytes} bytes")
            return
        with tempfile.TemporaryDirectory(prefix="tl-import-") as tmp:
            local = Path(tmp) / "file"
            digest, head = await asyncio.to_thread(_copy_hashing, item.open, local)
            mime = sniff_mime(head)
            if mime is None or mime not in ALLOWED_MIME_TYPES:
                self.report.skip(item.name, "not a supported photo or video")
                return
            if await self._already_imported(digest):
                self.report.duplicates_skipped += 1
                return
            if group is None:
                taken = await asyncio.to_thread(_taken_at, item, local, mime)
                group = _day_group(taken)
            await self._store(item.name, local, mime, digest, group)

    async def _store(self, name: str, local: Path, mime: str, digest: str, group: _Group) -> None:
        size = (await asyncio.to_thread(local.stat)).st_size
        memory_id = await self._memory_for(group)
        media_id = uuid4()
        path = media_paths.media_object_path(self.actor.family_unit_id, memory_id, media_id, mime)
        await self.storage.upload_file(path, local, mime)
        ref = MediaRef(
            storage_path=path,
            file_name=Path(name).name[-255:] or "file",
            mime_type=mime,
            file_size=size,
        )
        try:
            async with self._member_session() as db:
                media = await memory_service.add_media(
                    db, self.actor, memory_id, ref, self.storage, self.settings
                )
                await db.execute(_RECORD_ITEM, self.actor.family_unit_id, digest, media.id)
        except PayloadTooLarge:
            # The memory is full: the album continues in its next part.
            await self.storage.remove([path])
            self._memory_parts[group.key] = self._memory_parts.get(group.key, 1) + 1
            await self._store(name, local, mime, digest, group)
            return
        except Conflict as exc:
            await self.storage.remove([path])
            if exc.code == "duplicate_media" or "already" in exc.detail:
                self.report.duplicates_skipped += 1
                return
            raise
        self.report.media_imported += 1
        self._unprocessed.append(media.id)
        if len(self._unprocessed) >= _PROCESS_BATCH:
            await self._hand_over_media()

    async def _hand_over_media(self) -> None:
        batch, self._unprocessed = self._unprocessed, []
        if batch and self.on_media is not None:
            await self.on_media(batch)

    async def _already_imported(self, digest: str) -> bool:
        async with self._member_session() as db:
            return await db.fetchval(_IMPORTED, self.actor.family_unit_id, digest) is not None

    # Memories ------------------------------------------------------------------------------

    async def _memory_for(self, group: _Group, part: int | None = None) -> UUID:
        part = part or self._memory_parts.get(group.key, 1)
        key = group.key if part == 1 else f"{group.key}#part{part}"
        title = group.title if part == 1 else f"{group.title} (part {part})"
        async with self._member_session() as db:
            existing = await db.fetchval(_MEMORY_FOR_KEY, self.actor.family_unit_id, key)
            if existing is not None:
                if group.memory_date is not None:
                    await db.execute(_EARLIER_DATE, existing, group.memory_date)
                memory_id: UUID = existing
                return memory_id
            memory = await memory_service.create(
                db,
                self.actor,
                MemoryCreate(
                    title=title[:255],
                    description=group.description[:10_000] if group.description else None,
                    memory_date=group.memory_date,
                    location=group.location,
                    tags=group.tags or None,
                    status="published",
                ),
                self.storage,
            )
            await db.execute(_RECORD_MEMORY, self.actor.family_unit_id, key, memory.id)
        self.report.memories_created += 1
        return memory.id

    def _group_for(self, item: SourceFile) -> _Group | None:
        """The album's memory; None when the day (known only once the file is read) decides."""
        location = None
        sidecar = item.sidecar
        if self.keep_location and sidecar and sidecar.latitude is not None:
            location = f"{sidecar.latitude:.5f}, {sidecar.longitude:.5f}"
        if item.album is None:
            if sidecar and sidecar.taken_at:
                group = _day_group(sidecar.taken_at)
                group.location = location
                group.description = sidecar.description
                return group
            return None
        taken = sidecar.taken_at.date() if sidecar and sidecar.taken_at else None
        return _Group(
            key=f"album:{item.album.key}",
            title=item.album.title,
            description=item.album.description,
            memory_date=taken,
            location=location,
        )

    # A Timeless export ---------------------------------------------------------------------

    async def _run_export(self, export: TimelessExport) -> None:
        """Each exported memory back as a memory (also one with no files), with its files,
        then its comments and reactions (`_Replay`)."""
        memories = export.document.get("memories")
        if not isinstance(memories, list):
            raise SourceError("the export's memories.json has no memories list")
        entries = [m for m in memories if isinstance(m, dict)]
        self.progress.files_total = sum(len(_media_list(m)) for m in entries)
        async with self.database.system_session() as db:
            here = await db.fetch(_MEMBERS_HERE, self.actor.family_unit_id)
        replay = _Replay.of(export.document, [(row["id"], row["email"]) for row in here])
        for memory in entries:
            group = _Group(
                key=f"export:{memory.get('id') or memory.get('title')}",
                title=str(memory.get("title") or "Untitled memory"),
                description=_opt_str(memory.get("description")),
                memory_date=_opt_date(memory.get("memory_date")),
                location=_opt_str(memory.get("location")) if self.keep_location else None,
                tags=[t for t in memory.get("tags") or [] if isinstance(t, str)][:20],
            )
            for media in _media_list(memory):
                path = media.get("path") or media.get("file")
                if not isinstance(path, str):
                    self.report.skip(str(media.get("file_name") or "?"), "no file in the export")
                    continue
                name = f"data/{path}" if not path.startswith("data/") else path
                relative = name.removeprefix("data/")
                item = SourceFile(
                    name=name,
                    size=export.payload_size(relative) or 0,
                    modified_at=None,
                    album=None,
                    sidecar=None,
                    sidecar_problem=None,
                    open=lambda relative=relative: export.open_payload(relative),  # type: ignore[misc]
                )
                await self._import_file(item, group)
            # The memory's first part holds its comments and reactions (created here when no
            # file of it came in: a memory of words only, or of files the family had).
            memory_id = await self._memory_for(group, part=1)
            async with self._member_session() as db:
                await replay.memory(db, self.report, memory_id, memory, group.title)

    # Plumbing --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _member_session(self) -> Any:
        claims = {"sub": str(self.actor.id), "role": "authenticated"}
        async with self.database.user_session(claims) as db:
            yield db

    async def _save_progress(self, *, force: bool = False) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)
        now = time.monotonic()
        if not force and now - self._last_saved < _PROGRESS_EVERY_SECONDS:
            return
        self._last_saved = now
        async with self.database.system_session() as db:
            await db.execute(_PROGRESS, self.job_id, self.progress.as_json(), self.report.as_json())


@dataclass
class _Replay:
    """A Timeless export's comments and reactions, written into this family.

    Who wrote what: an archive member is the member here with the same account (the archive's
    member `id`; an import back into the same family) or, failing that, whose email matches
    the archive's `email_sha256` (salted with its `member_email_salt`; a family that moved).
    A comment of anyone else is the importing member's, shown under the author's archive name
    (`imported_author_name`); their reactions cannot be anyone's, so they are named in the
    report. Each comment keeps its archive id, which makes a second run add nothing.
    """

    authors: dict[str, UUID]  # archive member id -> member here
    names: dict[str, str]  # archive member id -> the name the archive gives them

    @classmethod
    def of(cls, document: dict[str, Any], here: list[tuple[UUID, str | None]]) -> "_Replay":
        salt = document.get("member_email_salt")
        by_hash = (
            {member_email_hash(salt, email): id_ for id_, email in here if email}
            if isinstance(salt, str) and salt
            else {}
        )
        ids = {str(id_): id_ for id_, _email in here}
        authors: dict[str, UUID] = {}
        names: dict[str, str] = {}
        members = document.get("members")
        for member in members if isinstance(members, list) else []:
            if not isinstance(member, dict) or not isinstance(member.get("id"), str):
                continue
            key = member["id"]
            name = _opt_str(member.get("display_name"))
            names[key] = (name or UNKNOWN_AUTHOR).replace("\x00", "")[:_MAX_NAME_LENGTH]
            match = ids.get(key) or by_hash.get(str(member.get("email_sha256")))
            if match is not None:
                authors[key] = match
        return cls(authors, names)

    def name(self, author: object) -> str:
        return self.names.get(str(author), UNKNOWN_AUTHOR)

    async def memory(
        self, db: Connection, report: Report, memory_id: UUID, memory: dict[str, Any], title: str
    ) -> None:
        """One memory's comment threads, then its reactions; one transaction, so a run that
        dies half-way left all of them or none."""
        comments = memory.get("comments")
        await self._comments(db, report, memory_id, comments, None, 0, title)
        reactions = memory.get("reactions")
        for reaction in reactions if isinstance(reactions, list) else []:
            if isinstance(reaction, dict):
                await self._reaction(db, report, memory_id, reaction, title)

    async def _comments(
        self,
        db: Connection,
        report: Report,
        memory_id: UUID,
        nodes: object,
        parent: UUID | None,
        depth: int,
        title: str,
    ) -> None:
        for node in nodes if isinstance(nodes, list) else []:
            if not isinstance(node, dict):
                continue
            source = _opt_uuid(node.get("id"))
            deleted = node.get("deleted") is True
            content = node.get("content")
            text = content.replace("\x00", "").strip() if isinstance(content, str) else ""
            where = f'a comment by {self.name(node.get("author"))} on "{title}"'
            problem = None
            if source is None:
                problem = "it has no id in the export"
            elif depth > MAX_DEPTH:
                problem = f"replies can be at most {MAX_DEPTH} levels below a comment"
            elif not deleted and not text:
                problem = "it has no text"
            elif len(text) > _MAX_COMMENT_LENGTH:
                problem = f"longer than {_MAX_COMMENT_LENGTH} characters"
            if problem is None:
                problem = await self._comment(db, report, memory_id, node, source, parent, text)
            if problem is not None:
                # Its replies have nowhere to hang: they go with it (and are counted).
                report.skip_comment(where, problem)
                for _reply in _descendants(node):
                    report.skip_comment(where, "it replies to a comment that was not imported")
                continue
            await self._comments(
                db, report, memory_id, node.get("replies"), source, depth + 1, title
            )

    async def _comment(
        self,
        db: Connection,
        report: Report,
        memory_id: UUID,
        node: dict[str, Any],
        source: UUID | None,
        parent: UUID | None,
        text: str,
    ) -> str | None:
        """Write one comment; None when it is in the family (now or from before), else why not."""
        author = node.get("author")
        member = self.authors.get(str(author))
        try:
            async with db.transaction():  # a savepoint: one refusal leaves the others
                row = await db.fetchrow(
                    _IMPORT_COMMENT,
                    memory_id,
                    source,
                    parent,
                    member,
                    None if member else self.name(author),
                    text or "[deleted]",
                    _opt_time(node.get("created_at")),
                    _opt_time(node.get("updated_at")),
                    node.get("deleted") is True,
                )
        except asyncpg.PostgresError as exc:
            logger.warning("an imported comment was refused", extra={"error": exc.sqlstate})
            return "the database refused it"
        if row["added"]:
            report.comments_imported += 1
        return None

    async def _reaction(
        self, db: Connection, report: Report, memory_id: UUID, reaction: dict[str, Any], title: str
    ) -> None:
        emoji, author = reaction.get("emoji"), reaction.get("member")
        name = self.name(author)
        where = f'{emoji} from {name} on "{title}"'
        member = self.authors.get(str(author))
        if emoji not in _EMOJIS:
            report.skip_reaction(where, "not one of the reactions the app has")
            return
        if member is None:
            report.skip_reaction(
                where, f"{name} is not a member of this family (no account or email matches)"
            )
            return
        try:
            async with db.transaction():
                added = await db.fetchval(
                    _IMPORT_REACTION,
                    memory_id,
                    member,
                    emoji,
                    _opt_time(reaction.get("created_at")),
                )
        except asyncpg.PostgresError as exc:
            logger.warning("an imported reaction was refused", extra={"error": exc.sqlstate})
            report.skip_reaction(where, "the database refused it")
            return
        if added:
            report.reactions_imported += 1


def _descendants(node: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    replies = node.get("replies")
    for reply in replies if isinstance(replies, list) else []:
        if isinstance(reply, dict):
            found.append(reply)
            found.extend(_descendants(reply))
    return found


async def importer_for(
    database: Database,
    storage: StorageBackend,
    settings: Settings,
    *,
    job_id: UUID,
    family_unit_id: UUID,
    user_id: UUID,
) -> Importer:
    """The importer for a job, acting as the member who started it (who must still be an
    adult or grandparent of that family)."""
    async with database.system_session() as db:
        row = await db.fetchrow(_ACTOR, user_id, family_unit_id)
        keep_location = bool(await db.fetchval(_KEEP_LOCATION, family_unit_id))
    if row is None:
        raise NotFound("The member who started this import is no longer in the family")
    actor = Actor(
        id=row["id"],
        family_unit_id=row["family_unit_id"],
        role=Role(row["role"]),
        display_name=row["display_name"],
    )
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    return Importer(database, storage, settings, actor, job_id, keep_location)


async def finish(
    database: Database, importer: Importer | None, job_id: UUID, *, error: str | None
) -> None:
    progress = importer.progress.as_json() if importer else Progress().as_json()
    report = importer.report.as_json() if importer else Report().as_json()
    async with database.system_session() as db:
        await db.execute(
            _FINISH, job_id, "failed" if error else "completed", progress, report, error
        )


# Operators: `timeless import PATH --family ID --as USER_ID` ---------------------------------

_NEW_LOCAL_JOB = """
insert into public.family_imports (family_unit_id, created_by, source_name, status, claimed_at)
values ($1, $2, $3, 'running', now())
returning id
"""


async def import_local(
    database: Database,
    storage: StorageBackend,
    settings: Settings,
    *,
    path: Path,
    family_unit_id: UUID,
    user_id: UUID,
    on_progress: ProgressCallback | None = None,
    on_media: Callable[[list[UUID]], Awaitable[None]] | None = None,
) -> Report:
    """Import a zip or folder from this machine, as the job an operator can follow too.

    `on_media`: what to do with each media registered (the server's runner processes it at
    once; the command line leaves it to the running server's media sweep)."""
    async with database.system_session() as db:
        job_id = await db.fetchval(
            _NEW_LOCAL_JOB, family_unit_id, user_id, path.name[:255] or "import"
        )
    importer: Importer | None = None
    try:
        importer = await importer_for(
            database,
            storage,
            settings,
            job_id=job_id,
            family_unit_id=family_unit_id,
            user_id=user_id,
        )
        importer.on_progress = on_progress
        importer.on_media = on_media
        with Source(path) as source:
            await importer.run(source)
    except Exception as exc:
        await finish(database, importer, job_id, error=_failure(exc))
        raise
    await finish(database, importer, job_id, error=None)
    return importer.report


class ImportRunner(PollingJob):
    """Runs queued imports in the background, one at a time per process."""

    name = "imports"

    def __init__(
        self,
        database: Database,
        storage: StorageBackend,
        settings: Settings,
        on_media: Callable[[list[UUID]], Awaitable[None]] | None = None,
    ):
        super().__init__(settings.import_poll_interval_seconds)
        self._database = database
        self._storage = storage
        self._settings = settings
        self._on_media = on_media

    async def run_pass(self) -> bool:
        return await self.run_next()

    async def run_next(self) -> bool:
        """Claim and run one queued (or abandoned) import; False when there is none."""
        async with self._database.system_session() as db:
            job = await db.fetchrow(_CLAIM, self._settings.import_stale_seconds)
        if job is None:
            return False
        importer: Importer | None = None
        with tempfile.TemporaryDirectory(prefix="tl-import-") as tmp:
            archive = Path(tmp) / "archive.zip"
            try:
                importer = await importer_for(
                    self._database,
                    self._storage,
                    self._settings,
                    job_id=job["id"],
                    family_unit_id=job["family_unit_id"],
                    user_id=job["created_by"],
                )
                importer.on_media = self._on_media
                await self._storage.download_to(job["storage_path"], archive)
                with Source(archive) as source:
                    await importer.run(source)
            except Exception as exc:
                if not isinstance(exc, SourceError | NotFound | Invalid):
                    logger.exception("import failed", extra={"import_id": str(job["id"])})
                await finish(self._database, importer, job["id"], error=_failure(exc))
                return True
        await finish(self._database, importer, job["id"], error=None)
        # The family's files are in; the uploaded copy of the archive is not kept.
        with contextlib.suppress(Exception):
            await self._storage.remove([job["storage_path"]])
        return True


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc)
    if isinstance(exc, NotFound | Invalid):
        return exc.detail
    return "the import stopped on an unexpected error; it can be started again safely"


# Reading files -------------------------------------------------------------------------------


def _copy_hashing(open_stream: Callable[[], IO[bytes]], dest: Path) -> tuple[str, bytes]:
    """Copy a file out of the source, hashing as it goes: its SHA-256 and its first bytes."""
    digest = hashlib.sha256()
    head = b""
    with open_stream() as src, dest.open("wb") as out:
        while chunk := src.read(_COPY_CHUNK):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), head


def _taken_at(item: SourceFile, local: Path, mime: str) -> datetime | None:
    if item.sidecar and item.sidecar.taken_at:
        return item.sidecar.taken_at
    if mime.startswith("image/"):
        taken = _exif_taken_at(local)
        if taken is not None:
            return taken
    return item.modified_at


def _exif_taken_at(file: Path) -> datetime | None:
    """EXIF DateTimeOriginal (with OffsetTimeOriginal when present), or None."""
    try:
        with Image.open(file) as image:
            exif = image.getexif().get_ifd(_EXIF_IFD)
    except Exception:
        return None
    raw, offset = exif.get(_EXIF_DATETIME_ORIGINAL), exif.get(_EXIF_OFFSET_TIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        taken = datetime.strptime(raw.strip()[:19], "%Y:%m:%d %H:%M:%S")
        if isinstance(offset, str) and offset.strip():
            return datetime.fromisoformat(taken.isoformat() + offset.strip())
    except ValueError:
        return None
    return taken


def _day_group(taken: datetime | None) -> _Group:
    if taken is None:
        return _Group(key="day:unknown", title="Photos with no date")
    day = taken.date()
    return _Group(
        key=f"day:{day.isoformat()}",
        title=f"Photos of {day.day} {day.strftime('%B %Y')}",
        memory_date=day,
    )


def _media_list(memory: dict[str, Any]) -> list[dict[str, Any]]:
    media = memory.get("media")
    return [m for m in media if isinstance(m, dict)] if isinstance(media, list) else []


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _opt_uuid(value: object) -> UUID | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return UUID(value)
    return None


def _opt_time(value: object) -> datetime | None:
    """An ISO 8601 time with its offset (memories.json writes UTC with `Z`); else None."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                return moment
    return None


def _opt_date(value: object) -> date | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value[:10])
    return None
