# ruff: noqa: S608 -- statements are composed once, at import, from the constant fragments
# below; no value ever enters their text (every value is a $n parameter).
"""The family feed: published memories, scored and ordered in SQL, one page at a time.

A page costs the same few statements whatever its size: its total count, the page itself
(memories with author, media, counters, the caller's reactions and the top comments, all
in one query), and one call to sign every media URL of the page.

Ordering by score stays fast for a family with 100 000 memories without scoring them all.
feed_score = 0.6 × time_score + 0.4 × engagement_score, and time_score is a step function
of the age: inside one of its four age bands the score only grows with the engagement
weight. So each band's best rows come in order from the index
`memories_feed_engagement_idx (family, status, least(weight, 99), created_at, id)` (or,
for the few recent rows, by a small sort), and the page is the merge of the four bands'
first `offset + page_size` rows. docs/feed.md has the measurements.
"""

import time
from enum import Enum, auto
from typing import Any

from app.adapters.storage.base import StorageBackend
from app.db.postgres import Connection
from app.metrics import FEED_BUILD
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.feed import FeedItem, FeedPage, FeedQuery, OrderBy, OrderDirection, Pagination

# Long enough to scroll a page and come back to it; the contract's default for access URLs.
MEDIA_URL_EXPIRES_IN = 3600

# The statements ---------------------------------------------------------------------------
# Built once, at import, from the fixed fragments below; a request only chooses which one
# runs, and every value travels as a $n parameter. Each page statement takes
#   $1 family, $2 user_id, $3 tags, $4 memory_date_from, $5 memory_date_to, $6 search_query,
#   $7 offset, $8 page_size, $9 the caller.

# Which memories a page draws from. There are three kinds of statement, because a prepared
# statement soon runs one generic plan for all values, and a plan that must allow for
# optional filters is a poor plan for the common, unfiltered page.
_FAMILY_PUBLISHED = "m.family_unit_id = $1 and m.status = 'published'"
# Unfiltered. The filter parameters (all null) are checked once per statement, not per row,
# which leaves the planner's row estimates (and so its use of the indexes) alone.
_UNFILTERED = f"""{_FAMILY_PUBLISHED}
  and $2::uuid is null and $3::text[] is null and $4::date is null and $5::date is null
  and $6::text is null"""
_USER_AND_DATES = """
  and ($2::uuid is null or m.user_id = $2)
  and ($4::date is null or m.memory_date >= $4)
  and ($5::date is null or m.memory_date <= $5)"""
# By author and/or memory_date only.
_BY_COLUMNS = f"""{_FAMILY_PUBLISHED}{_USER_AND_DATES}
  and $3::text[] is null and $6::text is null"""
# By search and/or tags (and maybe author and dates): the ids app.matching_memory_ids finds
# through the GIN indexes (RLS keeps Postgres from using them itself), found once per
# statement and joined by primary key.
_MATCHING = "matching as materialized (select app.matching_memory_ids($6, $3) as id)"
_BY_TEXT = f"""{_FAMILY_PUBLISHED}{_USER_AND_DATES}
  and m.id in (select id from matching)"""


class _Kind(Enum):
    UNFILTERED = auto()
    BY_COLUMNS = auto()
    BY_TEXT = auto()


_WHERE = {
    _Kind.UNFILTERED: _UNFILTERED,
    _Kind.BY_COLUMNS: _BY_COLUMNS,
    _Kind.BY_TEXT: _BY_TEXT,
}

# The four age bands of time_score, with the very edges app.feed_time_score uses.
_BANDS = (
    "m.created_at >= app.feed_band_start(1)",
    "m.created_at >= app.feed_band_start(2) and m.created_at < app.feed_band_start(1)",
    "m.created_at >= app.feed_band_start(3) and m.created_at < app.feed_band_start(2)",
    "m.created_at < app.feed_band_start(3)",
)
# The order of memories_feed_engagement_idx.
_WEIGHT = "least(m.reaction_count + 2 * m.comment_count, 99)"

# (order_by, order_direction) → (order of the page, order inside an age band when scoring).
# Ties break by created_at, then id; asc is the exact reverse of desc, except that undated
# memories stay last when ordering by memory_date.
_ORDERINGS: dict[tuple[OrderBy, OrderDirection], tuple[str, str | None]] = {
    ("feed_score", "desc"): (
        "feed_score desc, created_at desc, id",
        f"{_WEIGHT} desc, m.created_at desc, m.id",
    ),
    ("feed_score", "asc"): (
        "feed_score, created_at, id desc",
        f"{_WEIGHT}, m.created_at, m.id desc",
    ),
    ("created_at", "desc"): ("created_at desc, id", None),
    ("created_at", "asc"): ("created_at, id desc", None),
    ("memory_date", "desc"): ("memory_date desc nulls last, created_at desc, id", None),
    ("memory_date", "asc"): ("memory_date nulls last, created_at, id desc", None),
}

_ROW = """m.id, m.created_at, m.memory_date, m.reactions_by_emoji,
  app.feed_score(m.created_at, m.reaction_count, m.comment_count) as feed_score"""

# Everything an item shows, for the page's rows in order.
_ITEMS = """
select d.*, p.reactions_by_emoji, p.feed_score,
       array(
         select r.emoji from public.memory_reactions r
         where r.memory_id = p.id and r.user_id = $9
         order by r.created_at, r.emoji
       ) as user_reactions,
       coalesce((
         select jsonb_agg(c order by c.created_at desc, c.id desc) from (
           select * from public.memory_comment_details c
           where c.memory_id = p.id and c.parent_comment_id is null and c.deleted_at is null
           order by c.created_at desc, c.id desc
           limit 3
         ) c
       ), '[]'::jsonb) as top_comments
from page p
-- One memory per page row, looked up by id. `limit 1` keeps the planner from turning this
-- into a join over the whole family: under RLS it cannot know how large the family is.
cross join lateral (
  select id, user_id, family_unit_id, title, description, memory_date, location, tags,
         status, created_at, updated_at, modified_by, author, media, reaction_count,
         comment_count
  from public.memory_details where id = p.id
  limit 1
) d
order by p.position
"""


def _statement(kind: _Kind, order: str, band_order: str | None) -> str:
    """Compose one page statement from the fixed fragments above (never from a value)."""
    where = _WHERE[kind]
    if band_order is None:
        rows = f"select {_ROW} from public.memories m where {where}"
    else:
        # The first offset + page_size rows of each age band, read in index order.
        rows = "\nunion all\n".join(
            f"(select {_ROW} from public.memories m where {where} and {band}\n"
            f" order by {band_order} limit $7::bigint + $8::bigint)"
            for band in _BANDS
        )
        rows = f"select * from (\n{rows}\n) candidates"
    matching = f"{_MATCHING},\n" if kind is _Kind.BY_TEXT else ""
    return (
        f"with {matching}page as materialized (\n"
        f"  select *, row_number() over (order by {order}) as position\n"
        f"  from ({rows}\n order by {order} offset $7 limit $8) ordered\n"
        f"){_ITEMS}"
    )


_PAGE = {
    (kind, ordering): _statement(kind, order, band_order)
    for kind in _Kind
    for ordering, (order, band_order) in _ORDERINGS.items()
}

# total_count. Unfiltered: the per-family counter the memories trigger keeps exact, one row.
_COUNT_PUBLISHED = """
select coalesce(
  (select published from app.family_memory_counts where family_unit_id = $1), 0
)
"""
_COUNT_BY_COLUMNS = "select count(*) from public.memories m where " + _BY_COLUMNS
_COUNT_BY_TEXT = f"with {_MATCHING} select count(*) from public.memories m where {_BY_TEXT}"
# Filtered statements are planned for the values at hand rather than generically, so that
# the absent filters really drop out and the present ones can use their indexes.
_PLAN_FOR_THESE_VALUES = "set local plan_cache_mode = force_custom_plan"


# The service ------------------------------------------------------------------------------


async def get_page(
    db: Connection, actor: Actor, query: FeedQuery, *, storage: StorageBackend
) -> FeedPage:
    rbac.require(actor, Permission.VIEW_MEMORIES)
    started = time.perf_counter()
    filters = (
        query.user_id,
        query.tag_list,
        query.memory_date_from,
        query.memory_date_to,
        query.search_query,
    )
    if query.search_query is not None or query.tag_list is not None:
        kind = _Kind.BY_TEXT
    elif any(value is not None for value in filters):
        kind = _Kind.BY_COLUMNS
    else:
        kind = _Kind.UNFILTERED

    if kind is _Kind.UNFILTERED:
        total: int = await db.fetchval(_COUNT_PUBLISHED, actor.family_unit_id)
    else:
        await db.execute(_PLAN_FOR_THESE_VALUES)
        count = _COUNT_BY_TEXT if kind is _Kind.BY_TEXT else _COUNT_BY_COLUMNS
        total = await db.fetchval(count, actor.family_unit_id, *filters)

    offset = (query.page - 1) * query.page_size
    rows = []
    if offset < total:  # past the last page there is nothing to read
        statement = _PAGE[(kind, (query.order_by, query.order_direction))]
        rows = await db.fetch(
            statement, actor.family_unit_id, *filters, offset, query.page_size, actor.id
        )
    items = [dict(row) for row in rows]
    await _sign_media(items, storage)

    total_pages = -(-total // query.page_size)
    page = FeedPage(
        items=[FeedItem.model_validate(item) for item in items],
        pagination=Pagination(
            page=query.page,
            page_size=query.page_size,
            total_pages=total_pages,
            has_more=query.page < total_pages,
        ),
        total_count=total,
    )
    FEED_BUILD.observe(time.perf_counter() - started)
    return page


def _thumbnail_ready(media: dict[str, Any]) -> bool:
    return media["processing_status"] == "completed" and bool(media["thumbnail_path"])


async def _sign_media(items: list[dict[str, Any]], storage: StorageBackend) -> None:
    """Give every media item its signed url and thumbnail_url: one signing call per page."""
    media = [m for item in items for m in item["media"]]
    if not media:
        return
    paths = [m["storage_path"] for m in media]
    paths += [m["thumbnail_path"] for m in media if _thumbnail_ready(m)]
    urls = await storage.signed_download_urls(paths, expires_in=MEDIA_URL_EXPIRES_IN)
    for m in media:
        m["url"] = urls.get(m["storage_path"])
        m["thumbnail_url"] = urls.get(m["thumbnail_path"]) if _thumbnail_ready(m) else None
