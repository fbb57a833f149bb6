"""Exports of the family archive, as members see them: start one, list them, see one.

Who may: adults and grandparents (`Permission.MANAGE_ARCHIVE`), checked here and by the row
level security of `public.archive_exports` (another family's export, or any export for a
teen or child, does not exist: 404 after the role's 403). The work itself is
`app.services.archive_exporter`; the bag is `app.services.archive_writer`.
"""

import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.adapters.storage.base import StorageBackend
from app.db.postgres import Connection
from app.errors import Conflict, Invalid, NotFound
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.archive import ExportJob, ExportPart, ExportProgress

ZIP_TYPE = "application/zip"
EXPORT_NOT_FOUND = "Export not found"
IN_PROGRESS = (
    "An export of your family is already being made; wait for it to finish (see its "
    "progress at GET /families/me/exports/{export_id})"
)

# The archives bucket: {family_unit_id}/{export id}/{bag name}.zip.
_ARCHIVE_PATH = re.compile(r"[0-9a-f-]{36}/[0-9a-f-]{36}/[a-z0-9][a-z0-9._-]*\.zip")


def archive_object_path(family_unit_id: UUID, export_id: UUID, bag_name: str) -> str:
    return f"{family_unit_id}/{export_id}/{bag_name}.zip"


def check_archive_path(path: str) -> str:
    """Invalid (400) unless `path` is one the exporter makes."""
    if _ARCHIVE_PATH.fullmatch(path) is None:
        raise Invalid("Invalid storage path")
    return path


_COLUMNS = """
id, status, include, files_done, files_total, bytes_done, size_bytes, storage_path,
expires_at, error, created_at
"""
_ACTIVE = """
select id from public.archive_exports
where family_unit_id = $1 and status in ('queued', 'running')
"""
_INSERT = f"""
insert into public.archive_exports (family_unit_id, requested_by, include)
values ($1, $2, $3)
returning {_COLUMNS}
"""  # noqa: S608 (a constant column list)
_LIST = f"""
select {_COLUMNS} from public.archive_exports order by created_at desc, id
"""  # noqa: S608 (a constant column list)
_ONE = f"""
select {_COLUMNS} from public.archive_exports where id = $1
"""  # noqa: S608 (a constant column list)


async def start_export(db: Connection, actor: Actor, include: list[ExportPart]) -> ExportJob:
    """Queue an export of the caller's family (the caller commits; then wake the exporter)."""
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    await _refuse_if_active(db, actor)
    try:
        # A savepoint: if a concurrent request queued one first, the transaction goes on.
        async with db.transaction():
            row = await db.fetchrow(_INSERT, actor.family_unit_id, actor.id, include)
    except asyncpg.UniqueViolationError:
        await _refuse_if_active(db, actor)
        raise Conflict(
            "An export of your family was just started; wait for it to finish",
            code="export_in_progress",
        ) from None
    assert row is not None
    return _job(row, None)


async def _refuse_if_active(db: Connection, actor: Actor) -> None:
    active = await db.fetchval(_ACTIVE, actor.family_unit_id)
    if active is not None:
        raise Conflict(
            IN_PROGRESS.format(export_id=active),
            code="export_in_progress",
            extra={"export_id": str(active)},
        )


async def list_exports(db: Connection, actor: Actor, archives: StorageBackend) -> list[ExportJob]:
    """The family's exports, newest first (row level security keeps to the family)."""
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    return [await _with_url(row, archives) for row in await db.fetch(_LIST)]


async def get_export(
    db: Connection, actor: Actor, archives: StorageBackend, export_id: UUID
) -> ExportJob:
    rbac.require(actor, Permission.MANAGE_ARCHIVE)
    row = await db.fetchrow(_ONE, export_id)
    if row is None:
        raise NotFound(EXPORT_NOT_FOUND)
    return await _with_url(row, archives)


async def _with_url(row: Any, archives: StorageBackend) -> ExportJob:
    url = None
    if row["status"] == "completed" and row["storage_path"] and row["expires_at"]:
        # Valid until the file goes: the download may be slow, and the link may be shared
        # with the family member who keeps the archive.
        seconds = int((row["expires_at"] - datetime.now(UTC)).total_seconds())
        if seconds > 0:
            path = row["storage_path"]
            url = (await archives.signed_download_urls([path], expires_in=seconds)).get(path)
    return _job(row, url)


def _job(row: Any, download_url: str | None) -> ExportJob:
    return ExportJob(
        id=row["id"],
        status=row["status"],
        include=list(row["include"]),
        progress=ExportProgress(
            files_done=row["files_done"],
            files_total=row["files_total"],
            bytes_done=row["bytes_done"],
        ),
        size_bytes=row["size_bytes"],
        download_url=download_url,
        expires_at=row["expires_at"] if row["status"] == "completed" else None,
        error=row["error"] if row["status"] == "failed" else None,
        created_at=row["created_at"],
    )
