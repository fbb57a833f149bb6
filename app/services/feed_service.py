# ruff: noqa: S608 -- statements are composed once, at import, from the constant fragments
# below; no value ever enters their text (every value is a $n parameter).
"""The family feed: published memories, scored and ordered in SQL, one page at a time.

A page costs the same few statements whatever its size: its total count (which reads the
family's storage signing epoch along), the page itself (memories with author, media,
counters, the caller's reactions and the top comments, all in one query), and one call to
sign every media URL of the page (which needs no statement of its own).

Ordering by score stays fast for a family with 100 000 memories without scoring them all.
feed_score = 0.6 × time_score + 0.4 × engagement_score, and time_score is a step function
of the age: inside one of its four age bands the score only grows with the engagement
weight. So each band's best rows come in order from the index
`memories_feed_engagement_idx (family, status, feed_weight, created_at, id)`, where
feed_weight is the stored column least(reactions + 2 × comments, 99) (or,
for the few recent rows, by a small sort), and the page is the merge of the four bands'
first rows. docs/feed.md has the measurements.

Two ways to page (docs/api.md, "Pagination"):

- `page`/`page_size`: an OFFSET into the order as it is now (the first page of a scroll is
  one of these, with offset 0).
- `cursor`: the next page of a scroll, in the order as the scroll's first page saw it. The
  cursor carries that page's PostgreSQL snapshot and time, and the position of its last
  item; the next page starts right after that position (keyset: no OFFSET, so page 200
  costs what page 2 does). Memories changed since the snapshot (engagement, memory_date,
  status) or created since are read back as they were from `app.memory_changes`
  (20250205000000_stable_scrolling.sql); docs/feed.md says why this design.
"""

import time
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum, auto
from typing import Any
from uuid import UUID

import orjson
from pydantic import TypeAdapter

from app.adapters.cursors import CursorCodec, InvalidCursor, Opened
from app.adapters.storage.base import StorageBackend
from app.adapters.storage.signing import expiry
from app.db.postgres import Connection
from app.metrics import FEED_BUILD
from app.models import rbac
from app.models.identity import Actor
from app.models.rbac import Permission
from app.schemas.feed import FeedItem, FeedPage, FeedQuery, OrderBy, OrderDirection, Pagination
from app.services import media_urls, storage_service
from app.services.media_urls import MEDIA_URL_EXPIRES_IN

# What cursors of this list are bound to (app.adapters.cursors).
CURSOR_KIND = "feed"


@dataclass(frozen=True)
class FeedRead:
    """A page as read, before any URL in it is signed: all its ETag is taken from (when its
    URLs will expire, whether more follow, and `shown`: what it shows), so that a page the
    client has already (304) costs no signing and no validation. `finish_page` makes it the
    answer."""

    urls_expire_at: int
    shown: bytes
    pagination: Pagination
    next_cursor: str | None
    total: int
    items: list[dict[str, Any]]
    epochs: dict[str, int]  # the family's signing epoch, read with the count
    started: float


# The statements ---------------------------------------------------------------------------
# Built once, at import, from the fixed fragments below; a request only chooses which one
# runs, and every value travels as a $n parameter. Each statement takes
#   $1 family, $2 user_id, $3 tags, $4 memory_date_from, $5 memory_date_to, $6 search_query,
# then an offset page $7 offset, $8 page_size, $9 the caller; a scroll's next page $7 limit,
# $8 the caller, $9 the scroll's time, $10 its snapshot, $11… the position it goes on from.

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
# The same bands at a scroll's time ($9), with the edges app.feed_band_at uses.
_BANDS_AT = (
    "m.created_at >= app.feed_band_start_at(1, $9)",
    "m.created_at >= app.feed_band_start_at(2, $9)"
    " and m.created_at < app.feed_band_start_at(1, $9)",
    "m.created_at >= app.feed_band_start_at(3, $9)"
    " and m.created_at < app.feed_band_start_at(2, $9)",
    "m.created_at < app.feed_band_start_at(3, $9)",
)
# The order of memories_feed_engagement_idx: feed_weight is least(reactions + 2 × comments,
# 99), a stored column so that conditions on it can start an index scan under RLS.
_WEIGHT = "m.feed_weight"
# Inside an age band, in the order of that index.
_BAND_ORDER = {
    "desc": f"{_WEIGHT} desc, m.created_at desc, m.id",
    "asc": f"{_WEIGHT}, m.created_at, m.id desc",
}

# (order_by, order_direction) → (order of the page, order inside an age band when scoring).
# Ties break by created_at, then id; asc is the exact reverse of desc, except that undated
# memories stay last when ordering by memory_date.
_ORDERINGS: dict[tuple[OrderBy, OrderDirection], tuple[str, str | None]] = {
    ("feed_score", "desc"): ("feed_score desc, created_at desc, id", _BAND_ORDER["desc"]),
    ("feed_score", "asc"): ("feed_score, created_at, id desc", _BAND_ORDER["asc"]),
    ("created_at", "desc"): ("created_at desc, id", None),
    ("created_at", "asc"): ("created_at, id desc", None),
    ("memory_date", "desc"): ("memory_date desc nulls last, created_at desc, id", None),
    ("memory_date", "asc"): ("memory_date nulls last, created_at, id desc", None),
}

# A page row: what orders it, and what a cursor needs to go on after it (its age band and
# engagement weight at the page's time).
_ROW = """m.id, m.created_at, m.memory_date, m.reactions_by_emoji,
  app.feed_score(m.created_at, m.reaction_count, m.comment_count) as feed_score,
  app.feed_band_at(m.created_at, now()) as band,
  m.reaction_count + 2 * m.comment_count as weight"""

# Everything an item shows, for the page's rows in order. {caller} is the caller's $n;
# {extra} adds columns about the page as a whole.
_ITEMS = """
select d.*, p.reactions_by_emoji, p.feed_score, p.band, p.weight,
       p.memory_date as position_memory_date, {extra}
       array(
         select r.emoji from public.memory_reactions r
         where r.memory_id = p.id and r.user_id = {caller}
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
# An offset page is the first page of a scroll: it says when, and with which snapshot, it
# was read (the same statement, so exactly what it saw).
_OFFSET_EXTRA = "now() as scroll_at, pg_current_snapshot()::text as snapshot,"


def _statement(kind: _Kind, order: str, band_order: str | None) -> str:
    """Compose one offset page statement from the fixed fragments above (never a value)."""
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
        f")" + _ITEMS.format(caller="$9", extra=_OFFSET_EXTRA)
    )


_PAGE = {
    (kind, ordering): _statement(kind, order, band_order)
    for kind in _Kind
    for ordering, (order, band_order) in _ORDERINGS.items()
}

# A scroll's next page -------------------------------------------------------------------------
# Memories whose place or membership the scroll's snapshot ($10) may not have seen: created
# since, or with engagement, memory_date or status changed since. For each, the first change
# the snapshot did not see holds the values the snapshot saw. Usually a handful of rows:
# only changes newer than the snapshot's oldest running transaction are even looked at.
_CHANGED = """changed as materialized (
  select distinct on (l.memory_id) l.memory_id, l.existed, l.status, l.memory_date,
         l.reaction_count + 2 * l.comment_count as weight
  from app.memory_changes l
  where l.family_unit_id = $1
    and l.xact >= pg_snapshot_xmin($10::text::pg_snapshot)
    and not pg_visible_in_snapshot(l.xact, $10::text::pg_snapshot)
  order by l.memory_id, l.id
)"""
# Uncorrelated, so Postgres hashes the changed ids once per statement.
_UNCHANGED = "m.id not in (select c.memory_id from changed c)"
# The scroll's candidates all have these columns, in this order.
_KEY_ROW = "m.id, m.created_at, m.memory_date, m.reactions_by_emoji, {band} as band, {weight}"
_CURRENT_WEIGHT = "m.reaction_count + 2 * m.comment_count as weight"
_BAND_AT = "app.feed_band_at(m.created_at, $9)"
# Changed memories as the snapshot saw them; only those that were in the feed then (and,
# by the filters, still are).
_CHANGED_ROWS = f"""select * from (
  select m.id, m.created_at, c.memory_date, m.reactions_by_emoji, {_BAND_AT} as band, c.weight
  from public.memories m join changed c on c.memory_id = m.id
  where {{where}} and c.existed and c.status = 'published'
) x where {{after}}"""

# Ordering by score: the position is (age band, weight, created_at, id). The score of each
# band and weight 0–99 against the position's tells, per band, which weights come after it.
_THRESHOLDS = """thresholds as materialized (
  select b.band,
         max(w.weight) filter (where app.feed_band_score(b.band, w.weight) < s.score) as below,
         min(w.weight) filter (where app.feed_band_score(b.band, w.weight) > s.score) as above,
         min(w.weight) filter (where app.feed_band_score(b.band, w.weight) = s.score) as level
  from generate_series(1, 4) b(band)
  cross join generate_series(0, 99) w(weight)
  cross join (select app.feed_band_score($11, $12) as score) s
  group by b.band
)"""
_SCORE_AFTER = {
    "desc": """(app.feed_band_score(x.band, x.weight) < app.feed_band_score($11, $12)
  or (app.feed_band_score(x.band, x.weight) = app.feed_band_score($11, $12)
      and (x.created_at < $13 or (x.created_at = $13 and x.id > $14))))""",
    "asc": """(app.feed_band_score(x.band, x.weight) > app.feed_band_score($11, $12)
  or (app.feed_band_score(x.band, x.weight) = app.feed_band_score($11, $12)
      and (x.created_at > $13 or (x.created_at = $13 and x.id < $14))))""",
}


def _threshold(name: str, band: int) -> str:
    return f"(select {name} from thresholds where band = {band})"


def _score_branches(direction: str) -> list[tuple[str, str, str]]:
    """(band expression, condition, order) of each index range after the position."""
    # The threshold on the position's side, and the comparisons that mean "after it".
    if direction == "desc":
        side, beyond, older, larger = "below", "<=", "<", ">"
    else:
        side, beyond, older, larger = "above", ">=", ">", "<"
    branches = []
    for band, edges in enumerate(_BANDS_AT, start=1):
        # A band with no weight on that side of the position (or none at its score) has
        # nothing in the range; `... is not null` on its own is decided before the scan starts
        # (a one-time filter), where the scan would otherwise walk the band only to find that.
        limit = _threshold(side, band)
        level = _threshold("level", band)
        at_level = f"{level} is not null and {_WEIGHT} = {level}"
        ranges = [
            f"{limit} is not null and {_WEIGHT} {beyond} {limit}",
            f"{at_level} and m.created_at {older} $13",
            f"{at_level} and m.created_at = $13 and m.id {larger} $14",
        ]
        # Each range in the full order of the index, even where the weight is fixed: so the
        # planner reads it from memories_feed_engagement_idx, starting at the position,
        # rather than walking the family by created_at and filtering on the weight.
        order = _BAND_ORDER[direction]
        branches += [(str(band), f"{edges} and {cond}", order) for cond in ranges]
    return branches


# Ordering by created_at: the position is (created_at, id).
_CREATED_BRANCHES = {
    "desc": [
        ("m.created_at < $11", "m.created_at desc, m.id"),
        ("m.created_at = $11 and m.id > $12", "m.id"),
    ],
    "asc": [
        ("m.created_at > $11", "m.created_at, m.id desc"),
        ("m.created_at = $11 and m.id < $12", "m.id desc"),
    ],
}
_CREATED_AFTER = {
    "desc": "(x.created_at < $11 or (x.created_at = $11 and x.id > $12))",
    "asc": "(x.created_at > $11 or (x.created_at = $11 and x.id < $12))",
}
# Ordering by memory_date: the position is (memory_date or null, created_at, id); undated
# memories come last, so after a dated position come the later dates and then every undated
# one; after an undated position only undated ones.
_DATE_BRANCHES = {
    "desc": [
        ("m.memory_date < $11", "m.memory_date desc nulls last, m.created_at desc, m.id"),
        ("m.memory_date = $11 and m.created_at < $12", "m.created_at desc, m.id"),
        ("m.memory_date = $11 and m.created_at = $12 and m.id > $13", "m.id"),
        ("$11::date is not null and m.memory_date is null", "m.created_at desc, m.id"),
        (
            "$11::date is null and m.memory_date is null and m.created_at < $12",
            "m.created_at desc, m.id",
        ),
        (
            "$11::date is null and m.memory_date is null and m.created_at = $12 and m.id > $13",
            "m.id",
        ),
    ],
    "asc": [
        ("m.memory_date > $11", "m.memory_date nulls last, m.created_at, m.id desc"),
        ("m.memory_date = $11 and m.created_at > $12", "m.created_at, m.id desc"),
        ("m.memory_date = $11 and m.created_at = $12 and m.id < $13", "m.id desc"),
        ("$11::date is not null and m.memory_date is null", "m.created_at, m.id desc"),
        (
            "$11::date is null and m.memory_date is null and m.created_at > $12",
            "m.created_at, m.id desc",
        ),
        (
            "$11::date is null and m.memory_date is null and m.created_at = $12 and m.id < $13",
            "m.id desc",
        ),
    ],
}
_DATE_AFTER = {
    "desc": """(case when $11::date is null
  then x.memory_date is null and (x.created_at < $12 or (x.created_at = $12 and x.id > $13))
  else x.memory_date is null or x.memory_date < $11
       or (x.memory_date = $11
           and (x.created_at < $12 or (x.created_at = $12 and x.id > $13))) end)""",
    "asc": """(case when $11::date is null
  then x.memory_date is null and (x.created_at > $12 or (x.created_at = $12 and x.id < $13))
  else x.memory_date is null or x.memory_date > $11
       or (x.memory_date = $11
           and (x.created_at > $12 or (x.created_at = $12 and x.id < $13))) end)""",
}


def _scroll_statement(kind: _Kind, order_by: OrderBy, direction: OrderDirection) -> str:
    """Compose the statement for a scroll's next page (never from a value).

    A union of index range scans, each starting right after the position and stopping after
    `limit + 1` rows (one more, to know whether another page follows), plus the changed
    memories as they were; then the merge, in the page's order.
    """
    where = _WHERE[kind]
    order = _ORDERINGS[order_by, direction][0]
    thresholds = ""
    branches: list[tuple[str, str, str]]
    if order_by == "feed_score":
        thresholds = f"{_THRESHOLDS},\n"
        branches = _score_branches(direction)
        after = _SCORE_AFTER[direction]
    elif order_by == "created_at":
        branches = [(_BAND_AT, cond, o) for cond, o in _CREATED_BRANCHES[direction]]
        after = _CREATED_AFTER[direction]
    else:
        branches = [(_BAND_AT, cond, o) for cond, o in _DATE_BRANCHES[direction]]
        after = _DATE_AFTER[direction]
    scans = [
        f"(select {_KEY_ROW.format(band=band, weight=_CURRENT_WEIGHT)}\n"
        f" from public.memories m\n where {where} and {_UNCHANGED} and {cond}\n"
        f" order by {branch_order} limit $7 + 1)"
        for band, cond, branch_order in branches
    ]
    # The changed memories: their first limit + 1 after the position, as they were.
    changed_order = order.replace("feed_score", "app.feed_band_score(band, weight)")
    scans.append(
        f"({_CHANGED_ROWS.format(where=where, after=after)}\n"
        f" order by {changed_order} limit $7 + 1)"
    )
    candidates = "\nunion all\n".join(scans)
    matching = f"{_MATCHING},\n" if kind is _Kind.BY_TEXT else ""
    return (
        f"with {matching}{_CHANGED},\n{thresholds}"
        f"candidates as (\n{candidates}\n),\n"
        f"ranked as materialized (\n"
        f"  select *, row_number() over (order by {order}) as position from (\n"
        f"    select *, app.feed_band_score(band, weight) as feed_score from candidates\n"
        f"    order by {order} limit $7 + 1\n"
        f"  ) scored\n"
        f"),\n"
        f"page as (select * from ranked where position <= $7)"
        + _ITEMS.format(caller="$8", extra="(select count(*) from ranked) > $7 as has_more,")
    )


_SCROLL = {
    (kind, ordering): _scroll_statement(kind, *ordering)
    for kind in _Kind
    for ordering in _ORDERINGS
}

# total_count, and the family's storage signing epoch along with it (what the page's URLs
# are signed with: storage_service.epochs_read), one round trip for both.
# Unfiltered: the per-family counter the memories trigger keeps exact, one row.
_EPOCH = f"{storage_service.SIGNING_EPOCH_OF_FAMILY} as signing_epoch"
_COUNT_PUBLISHED = f"""
select coalesce(
  (select published from app.family_memory_counts where family_unit_id = $1), 0
) as total, {_EPOCH}
"""
_COUNT_BY_COLUMNS = f"select count(*) as total, {_EPOCH} from public.memories m where {_BY_COLUMNS}"
_COUNT_BY_TEXT = (
    f"with {_MATCHING} select count(*) as total, {_EPOCH} from public.memories m where {_BY_TEXT}"
)
# Filtered statements are planned for the values at hand rather than generically, so that
# the absent filters really drop out and the present ones can use their indexes.
_PLAN_FOR_THESE_VALUES = "set local plan_cache_mode = force_custom_plan"


# Scrolls ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scroll:
    """Where a scroll goes on: its time and snapshot, its next page number and position."""

    at: datetime
    snapshot: str
    page: int
    position: tuple[Any, ...]
    started_at: float


def _position(order_by: OrderBy, row: dict[str, Any]) -> list[Any]:
    """The position of a row in its scroll's order, as JSON."""
    created, memory_id = row["created_at"].isoformat(), str(row["id"])
    if order_by == "feed_score":
        return [row["band"], row["weight"], created, memory_id]
    if order_by == "created_at":
        return [created, memory_id]
    day = row["position_memory_date"]
    return [day.isoformat() if day is not None else None, created, memory_id]


def _open_scroll(opened: Opened, order_by: OrderBy) -> _Scroll:
    state = opened.state
    try:
        raw = state["p"]
        if order_by == "feed_score":
            band, weight, created, memory_id = raw
            position: tuple[Any, ...] = (
                int(band),
                int(weight),
                datetime.fromisoformat(created),
                UUID(memory_id),
            )
        elif order_by == "created_at":
            created, memory_id = raw
            position = (datetime.fromisoformat(created), UUID(memory_id))
        else:
            day, created, memory_id = raw
            position = (
                date.fromisoformat(day) if day is not None else None,
                datetime.fromisoformat(created),
                UUID(memory_id),
            )
        return _Scroll(
            at=datetime.fromisoformat(state["at"]),
            snapshot=str(state["x"]),
            page=int(state["n"]),
            position=position,
            started_at=opened.started_at,
        )
    except (KeyError, TypeError, ValueError):
        # Signed by this server, so only a change of this code makes one unreadable.
        raise InvalidCursor() from None


# The service ------------------------------------------------------------------------------


async def read_page(
    db: Connection, actor: Actor, query: FeedQuery, *, cursors: CursorCodec
) -> FeedRead:
    rbac.require(actor, Permission.VIEW_MEMORIES)
    started = time.perf_counter()
    scroll = None
    if query.cursor:
        opened = cursors.open(
            query.cursor, kind=CURSOR_KIND, user_id=actor.id, binding=query.binding
        )
        scroll = _open_scroll(opened, query.order_by)
    # Before signing: the URLs signed below expire no earlier (docs/api.md, "Conditional
    # requests"), so a page answered 304 in this window still holds valid URLs.
    urls_expire_at = expiry(MEDIA_URL_EXPIRES_IN, time.time())
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
        counted = await db.fetchrow(_COUNT_PUBLISHED, actor.family_unit_id)
    else:
        await db.execute(_PLAN_FOR_THESE_VALUES)
        count = _COUNT_BY_TEXT if kind is _Kind.BY_TEXT else _COUNT_BY_COLUMNS
        counted = await db.fetchrow(count, actor.family_unit_id, *filters)
    total: int = counted["total"]

    ordering = (query.order_by, query.order_direction)
    size = query.page_size
    rows = []
    if scroll is None:
        number = query.page
        offset = (number - 1) * size
        if offset < total:  # past the last page there is nothing to read
            rows = await db.fetch(
                _PAGE[(kind, ordering)], actor.family_unit_id, *filters, offset, size, actor.id
            )
        more = number < -(-total // size)
    else:
        number = scroll.page
        rows = await db.fetch(
            _SCROLL[(kind, ordering)],
            actor.family_unit_id,
            *filters,
            size,
            actor.id,
            scroll.at,
            scroll.snapshot,
            *scroll.position,
        )
        more = bool(rows) and rows[0]["has_more"]
    items = [dict(row.items()) for row in rows]  # .items(): ~15 % quicker than dict(row)

    next_cursor = None
    if items and more:
        last = items[-1]
        at = scroll.at if scroll else last["scroll_at"]
        state = {
            "at": at.isoformat(),
            "x": scroll.snapshot if scroll else last["snapshot"],
            "n": number + 1,
            "p": _position(query.order_by, last),
        }
        next_cursor = cursors.seal(
            kind=CURSOR_KIND,
            user_id=actor.id,
            binding=query.binding,
            state=state,
            started_at=scroll.started_at if scroll else cursors.now(),
        )
    pagination = Pagination(
        page=number,
        page_size=size,
        total_pages=-(-total // size),
        has_more=next_cursor is not None if scroll else more,
    )
    shown = _shown(items, pagination, total)
    # Every object of the page is the family's (its first path segment; row level security
    # shows no other family's rows).
    epoch = counted["signing_epoch"]
    epochs = {str(actor.family_unit_id): epoch} if epoch is not None else {}
    return FeedRead(
        urls_expire_at=urls_expire_at,
        shown=shown,
        pagination=pagination,
        next_cursor=next_cursor,
        total=total,
        items=items,
        epochs=epochs,
        started=started,
    )


async def finish_page(db: Connection, read: FeedRead, *, storage: StorageBackend) -> FeedPage:
    """The page to answer with: its URLs signed (in one call) and validated (in one call)."""
    with storage_service.epochs_read(db, read.epochs):
        await _sign_media(read.items, storage)
    page = FeedPage(
        items=_ITEM_LIST.validate_python(read.items),
        pagination=read.pagination,
        total_count=read.total,
        next_cursor=read.next_cursor,
    )
    FEED_BUILD.observe(time.perf_counter() - read.started)
    return page


# The page's items validated in one call (not one model_validate per item: ~10 % less).
_ITEM_LIST = TypeAdapter(list[FeedItem])

# Columns of a page's rows that say when and how it was read, not what it shows.
_WHEN_READ = frozenset({"scroll_at", "snapshot", "has_more"})


def _shown(items: list[dict[str, Any]], pagination: Pagination, total: int) -> bytes:
    """What a page shows, for its ETag (app.api.conditional): its rows as read, before the
    URLs are signed, and its pagination. Every signed URL comes from a path in the rows and
    the window the ETag's salt names; Supabase Storage signs anew each time, so a URL itself
    must not count. Taken from the rows with orjson, this costs a tenth of dumping the
    validated page again without its URLs (docs/performance.md)."""
    for item in items:  # read already (the cursor), and shown nowhere
        for column in _WHEN_READ:
            item.pop(column, None)
    return orjson.dumps(
        {"items": items, "pagination": pagination.model_dump(), "total_count": total}, default=str
    )


def _thumbnail_ready(media: dict[str, Any]) -> bool:
    return media["processing_status"] == "completed" and bool(media["thumbnail_path"])


async def _sign_media(items: list[dict[str, Any]], storage: StorageBackend) -> None:
    """Sign every URL of the page in one call: each media item's url, thumbnail_url and
    variants, and the uploaded avatars of the authors of memories and top comments."""
    media = [m for item in items for m in item["media"]]
    authors = [item["author"] for item in items]
    authors += [comment["author"] for item in items for comment in item["top_comments"]]
    avatars = [p for author in authors if (p := media_urls.avatar_path(author))]
    if not media and not avatars:
        return
    paths = []
    for m in media:  # one pass: every page shows ~20 media
        paths.append(m["storage_path"])
        if _thumbnail_ready(m):
            paths.append(m["thumbnail_path"])
        paths += media_urls.media_paths(m)
    urls = await media_urls.sign(storage, paths + avatars)
    for m in media:
        m["url"] = urls.get(m["storage_path"])
        m["thumbnail_url"] = urls.get(m["thumbnail_path"]) if _thumbnail_ready(m) else None
        media_urls.shape_media(m, urls)
    for author in authors:
        media_urls.shape_author(author, urls)
