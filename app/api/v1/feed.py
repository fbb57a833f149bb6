"""The family feed, and reactions and comments on memories."""

from typing import Annotated
from uuid import UUID

from fastapi import Query, Request, Response, status

from app.api import conditional
from app.api.deps import Context, CurrentUser, UserDb, query_model
from app.api.openapi import conditional_responses
from app.api.routing import ApiRouter
from app.schemas.common import MAX_CURSOR_LENGTH, error_responses
from app.schemas.feed import (
    Comment,
    CommentCreate,
    CommentPage,
    CommentUpdate,
    FeedPage,
    FeedQuery,
    Reaction,
    ReactionCreate,
)
from app.services import comment_service, feed_service, reaction_service
from app.services.analytics_service import EventType

router = ApiRouter(prefix="/feed", tags=["feed"])


@router.get(
    "",
    operation_id="feed_list",
    response_model=FeedPage,
    responses={**error_responses(400, 401), **conditional_responses()},
)
async def get_feed(
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    # After the member: a request without a valid token is refused (401) before its query
    # is read, as FastAPI reads the query parameters it declares itself.
    query: Annotated[FeedQuery, query_model(FeedQuery)],
    request: Request,
    response: Response,
) -> FeedPage | Response:
    """Your family's published memories, best first by default.

    `feed_score = 0.6 × time_score + 0.4 × engagement_score`, where time_score is 1.0 for
    memories posted in the last 24 h, 0.7 within 7 days, 0.4 within 30 days, else 0.2,
    and `engagement_score = min(log10(1 + reactions + 2 × comments) / 2, 1)`. Ties go to
    the newer memory, then by id. `order_direction=asc` reverses the whole order (except
    that undated memories stay last when ordering by `memory_date`).

    Every media item carries signed `url` and `thumbnail_url` (null until the thumbnail
    is ready), valid for at least an hour, so a page needs no further requests.

    Scrolling: send each page's `next_cursor` back as `cursor` (with the same filters and
    ordering) until it is null; pages of one scroll follow the order as it was when the
    scroll began, so none repeats or skips an item. `page`/`page_size` still work.
    Send the page's `ETag` as `If-None-Match` to get 304 when nothing on it changed.
    """
    read = await feed_service.read_page(db, actor, query, cursors=context.cursors)
    context.analytics.record(
        EventType.FEED_VIEWED, actor=actor, page=read.pagination.page, items=len(read.items)
    )
    salt = conditional.page_salt(read.urls_expire_at, read.next_cursor)
    tag = conditional.etag_of(read.shown, salt=salt)
    if conditional.matches(request, tag):
        return conditional.not_modified(tag)  # the client has it: nothing to sign or validate
    page = await feed_service.finish_page(db, read, storage=context.storage)
    return conditional.tagged(response, page, tag)


# Reactions ------------------------------------------------------------------------------------


@router.post(
    "/memories/{memory_id}/reactions",
    operation_id="reactions_create",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 404, 409),
)
async def create_reaction(
    memory_id: UUID, body: ReactionCreate, actor: CurrentUser, db: UserDb, context: Context
) -> Reaction:
    """React to a memory: one of 👍 ❤️ 😂 😮 😢 🎉 🔥 💯, each at most once per member (409)."""
    reaction = await reaction_service.create(db, actor, memory_id, body.emoji)
    context.analytics.record(
        EventType.REACTION_CREATED, actor=actor, memory_id=memory_id, reaction_id=reaction.id
    )
    return reaction


@router.get(
    "/memories/{memory_id}/reactions",
    operation_id="reactions_list",
    responses=error_responses(401, 404),
)
async def list_reactions(memory_id: UUID, actor: CurrentUser, db: UserDb) -> list[Reaction]:
    """Every reaction on a memory, oldest first."""
    return await reaction_service.list_for_memory(db, actor, memory_id)


@router.delete(
    "/memories/{memory_id}/reactions/{reaction_id}",
    operation_id="reactions_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
async def delete_reaction(
    memory_id: UUID, reaction_id: UUID, actor: CurrentUser, db: UserDb, context: Context
) -> None:
    """Take back one of your own reactions (someone else's: 403)."""
    await reaction_service.delete(db, actor, memory_id, reaction_id)
    context.analytics.record(
        EventType.REACTION_DELETED, actor=actor, memory_id=memory_id, reaction_id=reaction_id
    )


# Comments -------------------------------------------------------------------------------------


@router.post(
    "/memories/{memory_id}/comments",
    operation_id="comments_create",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 401, 404),
)
async def create_comment(
    memory_id: UUID, body: CommentCreate, actor: CurrentUser, db: UserDb, context: Context
) -> Comment:
    """Comment on a memory, or reply to a comment on it.

    Threads go at most 3 levels below a top-level comment; a deeper reply, a reply to a
    deleted comment or a parent on another memory is a 400.
    """
    comment = await comment_service.create(
        db, actor, memory_id, body.content, body.parent_comment_id, storage=context.storage
    )
    context.analytics.record(
        EventType.COMMENT_CREATED,
        actor=actor,
        memory_id=memory_id,
        comment_id=comment.id,
        parent_comment_id=comment.parent_comment_id,
    )
    return comment


@router.get(
    "/memories/{memory_id}/comments",
    operation_id="comments_list",
    response_model=list[Comment] | CommentPage,
    responses={**error_responses(400, 401, 404), **conditional_responses()},
)
async def list_comments(
    memory_id: UUID,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
    request: Request,
    response: Response,
    include_replies: bool = True,
    limit: Annotated[int, Query(ge=1, le=100, description="Top-level comments.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="Scroll: empty to start, then the previous page's `next_cursor`. "
            "With it the answer is `{items, next_cursor}` instead of a list.",
        ),
    ] = None,
) -> list[Comment] | CommentPage | Response:
    """Top-level comments oldest first, each with its replies nested (oldest first).

    Deleted comments stay in their thread with content "[deleted]". Without `cursor` the
    answer is a list of the first `limit` threads; with `cursor` (empty for the first page)
    it is `{items, next_cursor}`, and pages of one scroll never repeat or skip a thread.
    """
    if cursor is None:
        threads = await comment_service.list_threads(
            db,
            actor,
            memory_id,
            include_replies=include_replies,
            limit=limit,
            storage=context.storage,
        )
        return conditional.answer(request, response, threads, conditional.etag(threads))
    page = await comment_service.scroll_threads(
        db,
        actor,
        memory_id,
        include_replies=include_replies,
        limit=limit,
        cursor=cursor,
        cursors=context.cursors,
        storage=context.storage,
    )
    salt = conditional.page_salt(conditional.cursor_window(), page.next_cursor)
    tag = conditional.etag(page, exclude=conditional.NEXT_CURSOR, salt=salt)
    return conditional.answer(request, response, page, tag)


@router.put(
    "/memories/{memory_id}/comments/{comment_id}",
    operation_id="comments_update",
    responses=error_responses(401, 403, 404, 409),
)
async def update_comment(
    memory_id: UUID,
    comment_id: UUID,
    body: CommentUpdate,
    actor: CurrentUser,
    db: UserDb,
    context: Context,
) -> Comment:
    """Edit your own comment (only its author may; a deleted comment: 409)."""
    comment = await comment_service.update(
        db, actor, memory_id, comment_id, body.content, storage=context.storage
    )
    context.analytics.record(
        EventType.COMMENT_UPDATED, actor=actor, memory_id=memory_id, comment_id=comment_id
    )
    return comment


@router.delete(
    "/memories/{memory_id}/comments/{comment_id}",
    operation_id="comments_delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
async def delete_comment(
    memory_id: UUID, comment_id: UUID, actor: CurrentUser, db: UserDb, context: Context
) -> None:
    """Delete a comment: your own (not as a child), or anyone's as an adult or grandparent.

    The comment stays in its thread as "[deleted]"; deleting it again changes nothing.
    """
    if await comment_service.delete(db, actor, memory_id, comment_id):
        context.analytics.record(
            EventType.COMMENT_DELETED, actor=actor, memory_id=memory_id, comment_id=comment_id
        )
