"""The family archive: exports (docs/archive.md). Imports live beside them in their own router."""

from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Depends, status

from app.api.deps import Context, UserDb, require
from app.api.routing import ApiRouter
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.archive import ExportCreate, ExportJob
from app.schemas.common import error_responses
from app.services import export_service

router = ApiRouter(prefix="/families/me/exports", tags=["archive"])

ArchiveManager = Annotated[Actor, Depends(require(Permission.MANAGE_ARCHIVE))]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="exports_create",
    responses=error_responses(401, 403, 409),
)
async def start_export(
    actor: ArchiveManager,
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
    body: ExportCreate | None = None,
) -> ExportJob:
    """Start making your family's archive: one zip (a BagIt bag) to keep forever.

    Follow it with GET `/families/me/exports/{id}`; when `completed`, `download_url` fetches
    it. One export at a time (409 `export_in_progress`).
    """
    include = (body or ExportCreate()).include
    job = await export_service.start_export(db, actor, include)
    # After the commit (background tasks run once the response is under way), so the
    # exporter finds the job when it wakes.
    tasks.add_task(context.exporter.wake)
    return job


@router.get("", operation_id="exports_list", responses=error_responses(401, 403))
async def list_exports(actor: ArchiveManager, db: UserDb, context: Context) -> list[ExportJob]:
    """Your family's exports, newest first."""
    return await export_service.list_exports(db, actor, context.archives)


@router.get("/{export_id}", operation_id="exports_get", responses=error_responses(401, 403, 404))
async def get_export(
    export_id: UUID, actor: ArchiveManager, db: UserDb, context: Context
) -> ExportJob:
    """One export: its progress, and its download URL once completed."""
    return await export_service.get_export(db, actor, context.archives, export_id)
