from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from app.api import conditional
from app.api.deps import Context, CurrentUser, UserDb
from app.api.openapi import conditional_responses, success_headers
from app.api.routing import ApiRouter
from app.schemas.common import MAX_CURSOR_LENGTH, error_responses
from app.schemas.memories import (
    Media,
    MediaRef,
    Memory,
    MemoryCreate,
    MemoryPage,
    MemoryStatus,
    MemoryUpdate,
)
from app.services import memory_service, storage_service
from app.services.analytics_service import EventType

router = ApiRouter(prefix="/memories", tags=["memories"])

# The largest OFFSET PostgreSQL takes (bigint); beyond it, a 422 rather than a 500.
MAX_OFFSET = 2**63 - 1


@router.post(
    "",
    operation_id="memories_create",
    status_code=status.HTTP_201_CREATED,
    responses={**error_responses(400, 401, 403), **success_headers(201, "Location")},
)
async def create_memory(
    body: MemoryCreate,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    request: Request,
    response: Response,
) -> Memory:
    """Create a memory; it is a draft (visible only to you) unless `status` says `published`.

    Photos and videos are added to it afterwards: `POST /storage/upload-url`, send the bytes,
    then `POST /memories/{id}/media`.
    """
    memory = await memory_service.create(db, actor, body, context.storage)
    # Relative (the path only): an absolute URL would repeat the client's Host header.
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{memory.id}"
    context.analytics.record(EventType.MEMORY_POSTED, actor=actor, memory_id=memory.id)
    return memory


@router.get(
    "",
    operation_id="memories_list",
    response_model=list[Memory] | MemoryPage,
    responses={**error_responses(400, 401), **success_headers(200, "X-Total-Count")},
)
async def list_memories(
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    response: Response,
    status_filter: Annotated[MemoryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[
        int | None, Query(ge=0, le=MAX_OFFSET, description="Default 0; not with `cursor`.")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="Scroll: empty to start, then the previous page's `next_cursor`. "
            "With it the answer is `{items, next_cursor}` instead of a list.",
        ),
    ] = None,
) -> list[Memory] | MemoryPage:
    """The family's memories you can see (and your own drafts), newest first.

    Without `cursor` the answer is a list (`limit`, `offset`); with `cursor` (empty for the
    first page) it is `{items, next_cursor}`, and pages of one scroll never repeat or skip
    a memory. The total across all pages is in the `X-Total-Count` header.
    """
    if cursor is None:
        memories, total = await memory_service.list_visible(
            db, actor, context.storage, status=status_filter, limit=limit, offset=offset or 0
        )
        response.headers["X-Total-Count"] = str(total)
        return memories
    if offset is not None:
        # A 422 like any other query that breaks the schema's rules.
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "offset"),
                    "msg": "cursor cannot be combined with offset",
                    "type": "value_error",
                }
            ]
        )
    page, total = await memory_service.scroll_visible(
        db,
        actor,
        context.storage,
        status=status_filter,
        limit=limit,
        cursor=cursor,
        cursors=context.cursors,
    )
    response.headers["X-Total-Count"] = str(total)
    return page


@router.get(
    "/{memory_id}",
    operation_id="memories_get",
    response_model=Memory,
    responses={**error_responses(401, 404), **conditional_responses()},
)
async def get_memory(
    memory_id: UUID,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    request: Request,
    response: Response,
) -> Memory | Response:
    """One memory with its author and media.

    Send its `ETag` as `If-None-Match` to get 304 when nothing about it changed.
    """
    memory = await memory_service.get(db, actor, memory_id, context.storage)
    context.analytics.record(EventType.MEMORY_VIEWED, actor=actor, memory_id=memory_id)
    return conditional.answer(request, response, memory, conditional.etag(memory))


@router.put(
    "/{memory_id}", operation_id="memories_update", responses=error_responses(400, 401, 403, 404)
)
async def update_memory(
    memory_id: UUID, body: MemoryUpdate, actor: CurrentUser, db: UserDb, context: Context
) -> Memory:
    """Change only the fields sent; `modified_by` becomes you.

    Status: draft → published → archived → published; anything else is a 400.
    """
    memory, fields = await memory_service.update(db, actor, memory_id, body, context.storage)
    context.analytics.record(
        EventType.MEMORY_UPDATED, actor=actor, memory_id=memory_id, fields_changed=fields
    )
    return memory


@router.delete(
    "/{memory_id}",
    operation_id="memories_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
async def delete_memory(
    memory_id: UUID, actor: CurrentUser, db: UserDb, context: Context, tasks: BackgroundTasks
) -> None:
    """Delete a memory with its media; the stored files are removed in the background."""
    removed = await memory_service.delete(db, actor, memory_id)
    tasks.add_task(storage_service.remove_objects, context.storage, removed.storage_paths)
    context.analytics.record(
        EventType.MEMORY_DELETED, actor=actor, memory_id=memory_id, media_count=removed.media_count
    )


@router.post(
    "/{memory_id}/media",
    operation_id="media_create",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415),
)
async def add_media(
    memory_id: UUID,
    body: MediaRef,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
) -> Media:
    """Register an uploaded file with the memory; it is then processed in the background.

    `storage_path` comes from `POST /storage/upload-url`; the size counted is the stored
    file's. Watch `processing_status`: pending → processing → completed | failed.
    """
    media = await memory_service.add_media(
        db, actor, memory_id, body, context.storage, context.settings
    )
    tasks.add_task(context.media.process, [media.id])
    return media


@router.delete(
    "/{memory_id}/media/{media_id}",
    operation_id="media_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
async def remove_media(
    memory_id: UUID,
    media_id: UUID,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    tasks: BackgroundTasks,
) -> None:
    """Remove a photo or video from the memory; its files are removed in the background."""
    removed = await memory_service.remove_media(db, actor, memory_id, media_id)
    tasks.add_task(storage_service.remove_objects, context.storage, removed.storage_paths)
