"""Imports: bring a family's past in from a Google Photos Takeout, a folder, or an export."""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, status

from app.api.deps import Context, UserDb, require
from app.api.routing import ApiRouter
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.common import error_responses
from app.schemas.imports import ImportCreate, ImportJob
from app.services import import_service

router = ApiRouter(prefix="/families/me/imports", tags=["archive"])

Archivist = Annotated[Actor, Depends(require(Permission.MANAGE_ARCHIVE))]


@router.post(
    "",
    operation_id="imports_create",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 401, 403, 404, 409),
)
async def imports_create(
    body: ImportCreate, actor: Archivist, db: UserDb, context: Context
) -> ImportJob:
    """Import a zip uploaded with `POST /storage/upload-url` and `purpose: "import"`.

    It runs in the background: follow it with `GET /families/me/imports/{id}`.
    """
    job = await import_service.start(db, actor, context.storage, storage_path=body.storage_path)
    context.imports.wake()
    return job


@router.get("", operation_id="imports_list", responses=error_responses(401, 403))
async def imports_list(actor: Archivist, db: UserDb) -> list[ImportJob]:
    """The family's imports, newest first."""
    return await import_service.list_jobs(db, actor)


@router.get("/{import_id}", operation_id="imports_get", responses=error_responses(401, 403, 404))
async def imports_get(import_id: UUID, actor: Archivist, db: UserDb) -> ImportJob:
    """One import: its progress while it runs, and its report once it has finished."""
    return await import_service.get_job(db, actor, import_id)
