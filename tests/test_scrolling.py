"""Stable scrolling with cursors (docs/api.md, "Pagination"): GET /feed in every ordering,
GET /memories, top-level comments and GET /invites.

Pages of one scroll never repeat an item and never skip one that existed when the scroll
began, whatever reactions, comments, new memories, edits and deletions happen in between;
cursors are refused (400 invalid_cursor) when changed, foreign, for other filters or old.
"""

import itertools
import random
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.helpers import API
from tests.helpers.factories import Family, Member
from tests.helpers.feed import EMOJI, comment, feed, feed_ok, make_memory, react

ORDERINGS = [
    (order_by, direction)
    for order_by in ("feed_score", "created_at", "memory_date")
    for direction in ("desc", "asc")
]


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def get_ok(client, member: Member, path: str, **params: Any) -> Any:
    response = await client.get(f"{API}{path}", params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    return response.json()


# The repro of the issue ---------------------------------------------------------------------


async def test_a_boosted_memory_is_neither_repeated_nor_skipped(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    # Six old memories without engagement: by score they come newest first.
    made = [
        await make_memory(pg, family.adult, title=f"m{i}", age=timedelta(days=40, hours=i))
        for i in range(6)
    ]
    first = await feed_ok(client, family.adult, page_size=3)
    assert ids(first) == made[:3]
    assert first["next_cursor"] and first["pagination"]["has_more"]

    boosted = made[-1]
    for emoji in EMOJI[:5]:
        await react(client, family.by_role("teen"), boosted, emoji)
    for index in range(3):
        await comment(client, family.by_role("teen"), boosted, f"Wow {index}")

    # Offsets follow the order as it is now: the boosted memory jumped to the top, so page 2
    # repeats m2 and the boosted one is never seen. That is what cursors are for.
    by_offset = await feed_ok(client, family.adult, page=2, page_size=3)
    assert ids(by_offset) == made[2:5]

    second = await feed_ok(client, family.adult, page_size=3, cursor=first["next_cursor"])
    assert ids(second) == made[3:]
    assert second["next_cursor"] is None
    assert second["pagination"] == {"page": 2, "page_size": 3, "total_pages": 2, "has_more": False}
    shown = {item["id"]: item for item in second["items"]}
    # The score the scroll orders by is the one it began with; the counts are today's.
    assert shown[boosted]["feed_score"] == pytest.approx(0.12)
    assert shown[boosted]["reaction_count"] == 5 and shown[boosted]["comment_count"] == 3
    # A new scroll sees the current order.
    assert ids(await feed_ok(client, family.adult, page_size=3))[0] == boosted


# The feed under random changes, in every ordering -------------------------------------------


class FeedWorld:
    """A family's feed and the random things its members do to it while one of them scrolls."""

    def __init__(self, client, pg, family: Family, rng: random.Random):
        self.client, self.pg, self.family, self.rng = client, pg, family, rng
        self.published: list[str] = []
        self.drafts: list[str] = []
        self.reactions: dict[str, list[tuple[Member, str, str]]] = {}  # memory → (who, emoji, id)
        self.comments: dict[str, list[str]] = {}
        self.removed: set[str] = set()  # deleted or archived: no longer in the feed

    @property
    def adult(self) -> Member:
        return self.family.adult

    def _age(self) -> timedelta:
        hours = self.rng.choice([0.5, 3, 20, 30, 100, 160, 200, 500, 700, 800, 2000, 9000])
        return timedelta(hours=hours, minutes=self.rng.randrange(50))

    def _day(self) -> date | None:
        # Few distinct days, so memory_date ties are common; a fifth undated.
        if self.rng.random() < 0.2:
            return None
        return date(2020, 1, 1) + timedelta(days=self.rng.randrange(6))

    async def seed(self, count: int) -> None:
        for index in range(count):
            memory_id = await make_memory(
                self.pg,
                self.rng.choice(self.family.members),
                title=f"seed {index}",
                age=self._age(),
                memory_date=self._day(),
            )
            self.published.append(memory_id)
        # A burst posted at the very same moment: ties down to the id.
        moment = self.rng.choice(["2024-02-01T10:00:00+00:00", "2025-01-01T00:00:00+00:00"])
        for index in range(4):
            memory_id = await make_memory(
                self.pg,
                self.adult,
                title=f"burst {index}",
                created_at=datetime.fromisoformat(moment),
                memory_date=self._day(),
            )
            self.published.append(memory_id)
        for index in range(3):
            self.drafts.append(
                await make_memory(self.pg, self.adult, title=f"draft {index}", status="draft")
            )
        for memory_id in self.published:
            for _ in range(self.rng.choice([0, 0, 1, 2, 5])):
                await self.react()
                await self.comment(memory_id)

    def _live(self) -> list[str]:
        return [m for m in self.published if m not in self.removed]

    async def react(self, memory_id: str | None = None) -> None:
        live = self._live()
        memory_id = memory_id or self.rng.choice(live)
        taken = {(who.id, emoji) for who, emoji, _ in self.reactions.get(memory_id, [])}
        free = [(m, e) for m in self.family.members for e in EMOJI if (m.id, e) not in taken]
        if not free:
            return
        who, emoji = self.rng.choice(free)
        reaction = await react(self.client, who, memory_id, emoji)
        self.reactions.setdefault(memory_id, []).append((who, emoji, reaction["id"]))

    async def unreact(self) -> None:
        choices = [(m, r) for m, rs in self.reactions.items() if m not in self.removed for r in rs]
        if not choices:
            return
        memory_id, (who, emoji, reaction_id) = self.rng.choice(choices)
        response = await self.client.delete(
            f"{API}/feed/memories/{memory_id}/reactions/{reaction_id}", headers=who.headers
        )
        assert response.status_code == 204, response.text
        self.reactions[memory_id].remove((who, emoji, reaction_id))

    async def comment(self, memory_id: str | None = None) -> None:
        memory_id = memory_id or self.rng.choice(self._live())
        made = await comment(self.client, self.rng.choice(self.family.members), memory_id)
        self.comments.setdefault(memory_id, []).append(made["id"])

    async def uncomment(self) -> None:
        choices = [(m, c) for m, cs in self.comments.items() if m not in self.removed for c in cs]
        if not choices:
            return
        memory_id, comment_id = self.rng.choice(choices)
        response = await self.client.delete(
            f"{API}/feed/memories/{memory_id}/comments/{comment_id}", headers=self.adult.headers
        )
        assert response.status_code == 204, response.text
        self.comments[memory_id].remove(comment_id)

    async def new_memory(self) -> None:
        # Sometimes through the API (the newest), sometimes with any age, so that it would
        # fall in the middle of the scroll's order: it must wait for the next scroll.
        if self.rng.random() < 0.5:
            response = await self.client.post(
                f"{API}/memories",
                json={"title": "posted during the scroll", "status": "published"},
                headers=self.rng.choice(self.family.members).headers,
            )
            assert response.status_code == 201, response.text
            memory_id = response.json()["id"]
        else:
            memory_id = await make_memory(
                self.pg, self.adult, age=self._age(), memory_date=self._day()
            )
        self.published.append(memory_id)

    async def edit(self) -> None:
        body: dict[str, Any] = {"title": f"edited {self.rng.randrange(1000)}"}
        if self.rng.random() < 0.7:
            day = self._day()
            body["memory_date"] = day.isoformat() if day else None
        await self._put(self.rng.choice(self._live()), body)

    async def delete(self) -> None:
        memory_id = self.rng.choice(self._live())
        response = await self.client.delete(
            f"{API}/memories/{memory_id}", headers=self.adult.headers
        )
        assert response.status_code == 204, response.text
        self.removed.add(memory_id)

    async def archive(self) -> None:
        memory_id = self.rng.choice(self._live())
        await self._put(memory_id, {"status": "archived"})
        self.removed.add(memory_id)

    async def publish_draft(self) -> None:
        if self.drafts:
            memory_id = self.drafts.pop()
            await self._put(memory_id, {"status": "published"})
            self.published.append(memory_id)

    async def _put(self, memory_id: str, body: dict[str, Any]) -> None:
        response = await self.client.put(
            f"{API}/memories/{memory_id}", json=body, headers=self.adult.headers
        )
        assert response.status_code == 200, response.text

    async def something(self) -> None:
        action = self.rng.choice(
            [
                self.react,
                self.react,
                self.react,
                self.unreact,
                self.comment,
                self.comment,
                self.uncomment,
                self.new_memory,
                self.edit,
                self.edit,
                self.delete,
                self.archive,
                self.publish_draft,
            ]
        )
        await action()


def _in_scroll_order(items: list[dict[str, Any]], order_by: str, direction: str) -> bool:
    """Whether items follow the ordering by the values the scroll orders by.

    feed_score (the score as of the scroll's start) and created_at never change under a
    scroll; memory_date may be edited, so its order is checked by the other tests.
    """
    if order_by == "memory_date":
        return True
    keys = []
    for item in items:
        primary = item["feed_score"] if order_by == "feed_score" else 0.0
        created = datetime.fromisoformat(item["created_at"])
        keys.append((primary, created, uuid.UUID(item["id"])))
    for before, after in itertools.pairwise(keys):
        if direction == "desc":
            ok = before[0] > after[0] or (
                before[0] == after[0]
                and (before[1] > after[1] or (before[1] == after[1] and before[2] < after[2]))
            )
        else:
            ok = before[0] < after[0] or (
                before[0] == after[0]
                and (before[1] < after[1] or (before[1] == after[1] and before[2] > after[2]))
            )
        if not ok:
            return False
    return True


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(("order_by", "direction"), ORDERINGS)
async def test_a_feed_scroll_never_repeats_or_skips_whatever_happens(
    client, factory, pg, order_by, direction, seed
):
    rng = random.Random(f"{order_by}/{direction}/{seed}")
    family = await factory.family(["adult", "teen", "grandparent"])
    world = FeedWorld(client, pg, family, rng)
    await world.seed(22)
    start = set(world.published)
    params = {"order_by": order_by, "order_direction": direction, "page_size": 3}

    page = await feed_ok(client, family.adult, **params)
    shown, items, pages = ids(page), list(page["items"]), 1
    while page["next_cursor"]:
        for _ in range(rng.randint(1, 4)):
            await world.something()
        page = await feed_ok(client, family.adult, **params, cursor=page["next_cursor"])
        shown += ids(page)
        items += page["items"]
        pages += 1
        assert page["pagination"]["page"] == pages
        assert pages < 40

    assert len(shown) == len(set(shown)), "an item was shown twice"
    assert set(shown) <= start, "an item that was not there at the start was shown"
    assert start - world.removed <= set(shown), "an item was skipped"
    assert _in_scroll_order(items, order_by, direction)
    # A new scroll sees what happened.
    now = await feed_ok(client, family.adult, order_by=order_by, page_size=100)
    assert set(ids(now)) == set(world.published) - world.removed


@pytest.mark.parametrize(
    "filters",
    [
        {"tags": "beach"},
        {"search_query": "picnic"},
        {"user_id": "teen"},
        {"memory_date_from": "2020-01-02", "memory_date_to": "2020-01-04"},
    ],
)
@pytest.mark.parametrize(("order_by", "direction"), ORDERINGS)
async def test_filtered_scrolls_walk_exactly_the_filtered_feed(
    client, factory, pg, filters, order_by, direction
):
    family = await factory.family(["adult", "teen"])
    rng = random.Random(str(filters) + order_by + direction)
    for index in range(14):
        await make_memory(
            pg,
            rng.choice(family.members),
            title=rng.choice(["Picnic at the lake", "Snow day", "Picnics again"]),
            tags=rng.choice([["beach"], ["beach", "summer"], []]),
            memory_date=rng.choice([None, date(2020, 1, 1 + rng.randrange(6))]),
            age=timedelta(hours=rng.choice([2, 50, 300, 2000]), minutes=index),
        )
    params: dict[str, Any] = {**filters, "order_by": order_by, "order_direction": direction}
    if params.get("user_id") == "teen":
        params["user_id"] = family.by_role("teen").id
    whole = await feed_ok(client, family.adult, **params, page_size=100)
    assert whole["items"], "the filter must match something"

    page = await feed_ok(client, family.adult, **params, limit=2)
    walked = ids(page)
    while page["next_cursor"]:
        page = await feed_ok(client, family.adult, **params, limit=2, cursor=page["next_cursor"])
        walked += ids(page)
        assert page["total_count"] == whole["total_count"]
    assert walked == ids(whole)


async def test_page_then_cursor_and_limit_as_page_size(client, factory, pg):
    family = await factory.family(["adult"])
    made = [await make_memory(pg, family.adult, age=timedelta(hours=h)) for h in range(7)]

    # A page asked by number gives a cursor that goes on right after it.
    second = await feed_ok(client, family.adult, page=2, page_size=3)
    assert ids(second) == made[3:6]
    third = await feed_ok(client, family.adult, limit=3, cursor=second["next_cursor"])
    assert ids(third) == made[6:]
    assert third["pagination"] == {"page": 3, "page_size": 3, "total_pages": 3, "has_more": False}
    assert third["next_cursor"] is None
    # An empty cursor starts a scroll.
    started = await feed_ok(client, family.adult, limit=3, cursor="")
    assert ids(started) == made[:3]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "x", "page": 2},
        {"cursor": "x", "page": 1},
        {"limit": 3, "page_size": 4},
        {"limit": 0},
        {"limit": 101},
        {"cursor": "x" * 8193},
    ],
)
async def test_cursor_with_page_or_conflicting_sizes_is_422(client, factory, params):
    family = await factory.family(["adult"])
    response = await feed(client, family.adult, **params)
    assert response.status_code == 422, response.text


# GET /memories, comments and invites -----------------------------------------------------------


async def walk(client, member: Member, path: str, **params: Any) -> tuple[list[str], list[Any]]:
    """A whole scroll of a list: ids in order, and every page."""
    page = await get_ok(client, member, path, **params, cursor="")
    pages = [page]
    while page["next_cursor"]:
        page = await get_ok(client, member, path, **params, cursor=page["next_cursor"])
        pages.append(page)
        assert len(pages) < 50
    return [item["id"] for p in pages for item in p["items"]], pages


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_memories_scroll_never_repeats_or_skips(client, factory, pg, seed):
    rng = random.Random(seed)
    family = await factory.family(["adult", "teen"])
    adult = family.adult
    for index in range(12):
        await make_memory(
            pg,
            rng.choice(family.members),
            title=f"m{index}",
            status=rng.choice(["published", "published", "archived", "draft"]),
            age=timedelta(hours=rng.randrange(2000)),
        )
    at_start = await get_ok(client, adult, "/memories", limit=100)
    start = {memory["id"] for memory in at_start}
    deleted: set[str] = set()

    page = await get_ok(client, adult, "/memories", limit=3, cursor="")
    shown = [memory["id"] for memory in page["items"]]
    while page["next_cursor"]:
        for _ in range(rng.randint(1, 3)):
            live = sorted(start - deleted)
            action = rng.choice(["create", "edit", "delete", "create"])
            if action == "create":
                response = await client.post(
                    f"{API}/memories",
                    json={"title": "new", "status": rng.choice(["draft", "published"])},
                    headers=rng.choice(family.members).headers,
                )
                assert response.status_code == 201
            elif action == "edit" and live:
                response = await client.put(
                    f"{API}/memories/{rng.choice(live)}",
                    json={"title": "edited"},
                    headers=adult.headers,
                )
                assert response.status_code == 200
            elif live:
                memory_id = rng.choice(live)
                response = await client.delete(f"{API}/memories/{memory_id}", headers=adult.headers)
                assert response.status_code == 204
                deleted.add(memory_id)
        page = await get_ok(client, adult, "/memories", limit=3, cursor=page["next_cursor"])
        shown += [memory["id"] for memory in page["items"]]

    assert len(shown) == len(set(shown))
    assert set(shown) <= start
    assert start - deleted <= set(shown)


async def test_memories_scroll_shape_filter_and_offset(client, factory, pg):
    family = await factory.family(["adult"])
    made = [
        await make_memory(pg, family.adult, status=status, age=timedelta(hours=hour))
        for hour, status in enumerate(["published", "archived", "published", "draft"])
    ]
    response = await client.get(
        f"{API}/memories", params={"cursor": "", "limit": 1}, headers=family.adult.headers
    )
    assert response.status_code == 200
    assert set(response.json()) == {"items", "next_cursor"}
    assert response.headers["x-total-count"] == "4"

    walked, _ = await walk(client, family.adult, "/memories", limit=1, status="published")
    assert walked == [made[0], made[2]]
    # The list without a cursor is as it was: a plain list.
    listed = await get_ok(client, family.adult, "/memories", limit=2, offset=1)
    assert [memory["id"] for memory in listed] == made[1:3]
    both = await client.get(
        f"{API}/memories", params={"cursor": "", "offset": 0}, headers=family.adult.headers
    )
    assert both.status_code == 422


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_comment_scroll_never_repeats_or_skips(client, factory, pg, seed):
    rng = random.Random(seed)
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    top = [
        (await comment(client, rng.choice(family.members), memory_id, f"c{i}"))["id"]
        for i in range(10)
    ]
    path = f"/feed/memories/{memory_id}/comments"

    page = await get_ok(client, family.adult, path, limit=3, cursor="")
    shown = [c["id"] for c in page["items"]]
    deleted: set[str] = set()
    while page["next_cursor"]:
        for _ in range(rng.randint(1, 3)):
            action = rng.choice(["new", "reply", "edit", "delete"])
            target = rng.choice(top)
            if action == "new":
                await comment(client, family.adult, memory_id, "later")
            elif action == "reply" and target not in deleted:
                await comment(client, family.adult, memory_id, "re", parent=target)
            elif action == "edit":
                await client.put(
                    f"{API}{path}/{target}",
                    json={"content": "edited"},
                    headers=family.adult.headers,
                )
            elif action == "delete":
                await client.delete(f"{API}{path}/{target}", headers=family.adult.headers)
                deleted.add(target)
        page = await get_ok(client, family.adult, path, limit=3, cursor=page["next_cursor"])
        shown += [c["id"] for c in page["items"]]
        assert all(c["parent_comment_id"] is None for c in page["items"])

    # Deleted comments keep their place; comments made during the scroll wait for the next.
    assert shown == top
    again, _ = await walk(client, family.adult, path, limit=3)
    listed = await get_ok(client, family.adult, path, limit=100)
    assert again == [c["id"] for c in listed]


async def test_comment_pages_carry_their_replies(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    first = await comment(client, family.adult, memory_id, "first")
    reply = await comment(client, family.adult, memory_id, "reply", parent=first["id"])
    second = await comment(client, family.adult, memory_id, "second")
    path = f"/feed/memories/{memory_id}/comments"

    page = await get_ok(client, family.adult, path, limit=1, cursor="")
    assert [c["id"] for c in page["items"]] == [first["id"]]
    assert [r["id"] for r in page["items"][0]["replies"]] == [reply["id"]]
    last = await get_ok(client, family.adult, path, limit=1, cursor=page["next_cursor"])
    assert [c["id"] for c in last["items"]] == [second["id"]]
    assert last["next_cursor"] is None
    bare = await get_ok(client, family.adult, path, limit=1, include_replies=False, cursor="")
    assert bare["items"][0]["replies"] == []


@pytest.mark.parametrize("seed", [1, 2])
async def test_an_invite_scroll_never_repeats_or_skips(client, factory, seed):
    rng = random.Random(seed)
    family = await factory.family(["adult"])
    start = [(await factory.invite(family.adult, "teen"))["id"] for _ in range(9)]
    start.reverse()  # newest first

    page = await get_ok(client, family.adult, "/invites", limit=2, cursor="")
    shown = [i["id"] for i in page["items"]]
    revoked: set[str] = set()
    while page["next_cursor"]:
        if rng.random() < 0.5:
            await factory.invite(family.adult, "grandparent")
        target = rng.choice(start)
        if target not in revoked:
            response = await client.delete(f"{API}/invites/{target}", headers=family.adult.headers)
            assert response.status_code == 204
            revoked.add(target)
        page = await get_ok(client, family.adult, "/invites", limit=2, cursor=page["next_cursor"])
        shown += [i["id"] for i in page["items"]]

    assert shown == start  # revoked invites keep their place (status "revoked")
    pending, _ = await walk(client, family.adult, "/invites", limit=2, status="pending")
    assert set(pending) & revoked == set()


# Refused cursors ------------------------------------------------------------------------------


async def _first_page(client, pg, factory, kind: str) -> tuple[Family, str, dict[str, Any], str]:
    """A family with three items of `kind`; returns (family, path, params, next_cursor)."""
    family = await factory.family(["adult", "grandparent"])
    adult = family.adult
    if kind == "feed":
        for hour in range(3):
            await make_memory(pg, adult, age=timedelta(hours=hour))
        path, params = "/feed", {"limit": 1, "order_by": "created_at"}
        page = await get_ok(client, adult, path, **params)
    else:
        if kind == "memories":
            for hour in range(3):
                await make_memory(pg, adult, age=timedelta(hours=hour))
            path, params = "/memories", {"limit": 1, "status": "published"}
        elif kind == "comments":
            memory_id = await make_memory(pg, adult)
            for index in range(3):
                await comment(client, adult, memory_id, f"c{index}")
            path, params = f"/feed/memories/{memory_id}/comments", {"limit": 1}
        else:
            for _ in range(3):
                await factory.invite(adult, "teen")
            path, params = "/invites", {"limit": 1, "status": "pending"}
        page = await get_ok(client, adult, path, **params, cursor="")
    assert page["next_cursor"]
    return family, path, params, page["next_cursor"]


def _other_filters(kind: str, path: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind == "feed":
        return path, {**params, "order_direction": "asc"}
    if kind == "comments":
        return f"/feed/memories/{uuid.uuid4()}/comments", params
    return path, {key: value for key, value in params.items() if key != "status"}


async def assert_invalid_cursor(response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_cursor"
    assert "cursor" in body["detail"].lower()


@pytest.mark.parametrize("kind", ["feed", "memories", "comments", "invites"])
async def test_changed_foreign_other_filter_and_garbage_cursors_are_refused(
    client, pg, factory, kind
):
    family, path, params, cursor = await _first_page(client, pg, factory, kind)
    adult, other = family.adult, family.by_role("grandparent")

    async def ask(member: Member, value: str, at: str = path, **query: Any):
        return await client.get(
            f"{API}{at}", params={**(query or params), "cursor": value}, headers=member.headers
        )

    assert (await ask(adult, cursor)).status_code == 200
    body, signature = cursor.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    await assert_invalid_cursor(await ask(adult, f"{flipped}.{signature}"))
    await assert_invalid_cursor(await ask(adult, f"{body}.{signature[::-1]}"))
    await assert_invalid_cursor(await ask(adult, "not-a-cursor"))
    await assert_invalid_cursor(await ask(other, cursor))  # another member of the family
    other_path, other_params = _other_filters(kind, path, params)
    await assert_invalid_cursor(await ask(adult, cursor, other_path, **other_params))


async def test_a_cursor_of_one_list_is_refused_by_another(client, pg, factory):
    family, _, _, cursor = await _first_page(client, pg, factory, "feed")
    response = await client.get(
        f"{API}/memories", params={"cursor": cursor}, headers=family.adult.headers
    )
    await assert_invalid_cursor(response)
    # Another family's member cannot use it either.
    stranger = (await factory.family(["adult"])).adult
    await assert_invalid_cursor(
        await client.get(
            f"{API}/feed",
            params={"limit": 1, "order_by": "created_at", "cursor": cursor},
            headers=stranger.headers,
        )
    )


@pytest.mark.parametrize("kind", ["feed", "memories", "comments", "invites"])
async def test_cursors_expire_24_hours_after_the_scroll_began(
    client, pg, factory, app, monkeypatch, kind
):
    family, path, params, cursor = await _first_page(client, pg, factory, kind)
    codec = app.state.context.cursors
    began = codec.now()

    async def ask() -> Any:
        return await client.get(
            f"{API}{path}", params={**params, "cursor": cursor}, headers=family.adult.headers
        )

    monkeypatch.setattr(codec, "clock", lambda: began + 24 * 3600 - 60)
    fresh = await ask()
    assert fresh.status_code == 200, fresh.text
    # The next page's cursor keeps the scroll's start: it expires with it.
    follow = fresh.json()["next_cursor"]
    monkeypatch.setattr(codec, "clock", lambda: began + 24 * 3600 + 1)
    await assert_invalid_cursor(await ask())
    response = await client.get(
        f"{API}{path}", params={**params, "cursor": follow}, headers=family.adult.headers
    )
    await assert_invalid_cursor(response)


# What scrolls cost and keep -------------------------------------------------------------------


def test_a_scroll_page_never_walks_an_offset():
    # Keyset: every next page starts at its position in an index, whatever its depth
    # (bench/feed.py measures page 1 against page 200; docs/performance.md).
    from app.services import comment_service, feed_service, invite_service, memory_service

    statements = [
        *feed_service._SCROLL.values(),
        memory_service._SCROLL,
        comment_service._THREADS,
        invite_service._SCROLL_INVITES,
    ]
    assert len(feed_service._SCROLL) == 18
    for statement in statements:
        assert " offset " not in statement.lower()


async def test_the_history_of_changes_is_kept_as_long_as_a_cursor_lives(app, factory, pg):
    family = await factory.family(["adult"])
    adult = family.adult
    memory_id = await make_memory(pg, adult)
    fid, mid = uuid.UUID(family.id), uuid.UUID(memory_id)
    insert = (
        "insert into app.memory_changes (family_unit_id, memory_id, existed, changed_at)"
        " values ($1, $2, true, now() - $3::interval)"
    )
    await pg.execute(insert, fid, mid, timedelta(hours=26))
    await pg.execute(insert, fid, mid, timedelta(hours=24, minutes=30))

    await app.state.context.scroll_history.purge()

    ages = await pg.fetch(
        "select now() - changed_at as age from app.memory_changes where memory_id = $1", mid
    )
    assert len(ages) == 2  # the memory's creation, and the change 24.5 hours ago
    assert all(row["age"] < timedelta(hours=25) for row in ages)
