"""GET /feed: the score and its order, filters, orderings, pagination, item contents."""

import math
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.helpers import API
from tests.helpers.feed import comment, engage, feed, feed_ok, make_memory, react

# The contract's formula, written out here on its own (never the project's function).
AGES = {
    "23h": timedelta(hours=23),
    "3d": timedelta(days=3),
    "20d": timedelta(days=20),
    "90d": timedelta(days=90),
}


def spec_time_score(age: timedelta) -> float:
    if age <= timedelta(hours=24):
        return 1.0
    if age <= timedelta(days=7):
        return 0.7
    if age <= timedelta(days=30):
        return 0.4
    return 0.2


def spec_score(age: timedelta, reactions: int, comments: int) -> float:
    engagement = min(math.log10(1 + reactions + 2 * comments) / 2, 1)
    return 0.6 * spec_time_score(age) + 0.4 * engagement


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["items"]]


# The score ------------------------------------------------------------------------------------


async def test_scores_and_order_follow_the_spec_formula(client, factory, pg):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    expected = {}
    for age_name, age in AGES.items():
        for weight in (0, 1, 9, 99):
            memory_id = await make_memory(pg, family.adult, title=f"{age_name} {weight}", age=age)
            await engage(client, family.members, memory_id, weight)
            expected[memory_id] = (age, weight)

    page = await feed_ok(client, family.by_role("teen"), page_size=100)

    assert page["total_count"] == 16
    scores = {item["id"]: item["feed_score"] for item in page["items"]}
    for memory_id, (age, weight) in expected.items():
        item = next(i for i in page["items"] if i["id"] == memory_id)
        reactions, comments = item["reaction_count"], item["comment_count"]
        assert reactions + 2 * comments == weight
        assert scores[memory_id] == pytest.approx(spec_score(age, reactions, comments), abs=1e-12)
    # The literal values, for a reader: 23 h old with weight 99 scores 1.0, 90 d with 0 scores 0.12.
    by_name = {item["title"]: item["feed_score"] for item in page["items"]}
    assert by_name["23h 99"] == pytest.approx(1.0)
    assert by_name["3d 9"] == pytest.approx(0.62)
    assert by_name["20d 1"] == pytest.approx(0.24 + 0.4 * math.log10(2) / 2)
    assert by_name["90d 0"] == pytest.approx(0.12)
    assert ids(page) == sorted(
        expected, key=lambda m: -spec_score(expected[m][0], expected[m][1], 0)
    )


async def test_deleted_comments_do_not_count_towards_the_score(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult, age=timedelta(days=3))
    kept = await comment(client, family.by_role("teen"), memory_id)
    gone = await comment(client, family.by_role("teen"), memory_id)
    response = await client.delete(
        f"/api/v1/feed/memories/{memory_id}/comments/{gone['id']}",
        headers=family.by_role("teen").headers,
    )
    assert response.status_code == 204

    [item] = (await feed_ok(client, family.adult))["items"]
    assert item["comment_count"] == 1
    assert item["feed_score"] == pytest.approx(spec_score(timedelta(days=3), 0, 1))
    assert [c["id"] for c in item["top_comments"]] == [kept["id"]]


async def test_ties_break_by_created_at_desc_then_id(client, factory, pg):
    family = await factory.family(["adult"])
    moment = datetime.now(UTC) - timedelta(days=40)
    # Same score (old, no engagement): the newer first; same created_at too: by id.
    older = await make_memory(pg, family.adult, created_at=moment - timedelta(hours=1))
    same = [await make_memory(pg, family.adult, created_at=moment) for _ in range(3)]

    page = await feed_ok(client, family.adult)

    assert ids(page) == [*sorted(same), older]
    assert len({item["feed_score"] for item in page["items"]}) == 1
    reverse = await feed_ok(client, family.adult, order_direction="asc")
    assert ids(reverse) == [older, *sorted(same, reverse=True)]


async def test_an_older_memory_with_more_engagement_can_outrank_a_newer_one(client, factory, pg):
    family = await factory.family(["adult", "teen", "child", "grandparent"])
    quiet = await make_memory(pg, family.adult, age=timedelta(days=20))  # 0.24
    loved = await make_memory(pg, family.adult, age=timedelta(days=90))  # 0.12 + 0.2 = 0.32
    await engage(client, family.members, loved, 9)

    assert ids(await feed_ok(client, family.adult)) == [loved, quiet]


# Filters --------------------------------------------------------------------------------------


async def test_only_published_memories_of_the_family(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    other = await factory.family(["adult"])
    published = await make_memory(pg, family.by_role("teen"))
    await make_memory(pg, family.by_role("teen"), status="draft")
    await make_memory(pg, family.adult, status="draft")  # not even the author's own draft
    await make_memory(pg, family.adult, status="archived")
    await make_memory(pg, other.adult)

    for member in family.members:
        page = await feed_ok(client, member)
        assert ids(page) == [published]
        assert page["total_count"] == 1


async def test_filter_by_author(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    mine = await make_memory(pg, family.by_role("teen"))
    await make_memory(pg, family.adult)

    page = await feed_ok(client, family.adult, user_id=family.by_role("teen").id)

    assert ids(page) == [mine]
    assert page["total_count"] == 1
    nobody = await feed_ok(client, family.adult, user_id=str(uuid.uuid4()))
    assert nobody["items"] == [] and nobody["total_count"] == 0


async def test_filter_by_tags_needs_all_of_them(client, factory, pg):
    family = await factory.family(["adult"])
    both = await make_memory(pg, family.adult, tags=["beach", "summer", "family"])
    await make_memory(pg, family.adult, tags=["beach"])
    await make_memory(pg, family.adult, tags=["summer"])

    page = await feed_ok(client, family.adult, tags=" Summer, beach ,")
    assert ids(page) == [both]
    assert page["total_count"] == 1
    assert (await feed_ok(client, family.adult, tags="beach"))["total_count"] == 2
    assert (await feed_ok(client, family.adult, tags="beach,snow"))["total_count"] == 0


async def test_filter_by_memory_date_range_inclusive(client, factory, pg):
    family = await factory.family(["adult"])
    days = [date(2020, 1, 1), date(2020, 6, 1), date(2020, 12, 31), date(2021, 1, 1)]
    made = {day: await make_memory(pg, family.adult, memory_date=day) for day in days}
    await make_memory(pg, family.adult)  # undated: outside any range

    page = await feed_ok(
        client, family.adult, memory_date_from="2020-01-01", memory_date_to="2020-12-31"
    )
    assert set(ids(page)) == {made[d] for d in days[:3]}
    assert page["total_count"] == 3
    after = await feed_ok(client, family.adult, memory_date_from="2020-06-01")
    assert set(ids(after)) == {made[d] for d in days[1:]}
    before = await feed_ok(client, family.adult, memory_date_to="2020-06-01")
    assert set(ids(before)) == {made[d] for d in days[:2]}


async def test_search_is_word_stemmed_over_title_description_location_and_tags(client, factory, pg):
    family = await factory.family(["adult"])
    in_title = await make_memory(pg, family.adult, title="Picnic by the river")
    in_description = await make_memory(
        pg, family.adult, title="Sunday", description="Two picnics with grandma"
    )
    in_location = await make_memory(pg, family.adult, title="Trip", location="Lisbon")
    in_tags = await make_memory(pg, family.adult, title="Day out", tags=["picnics"])
    await make_memory(pg, family.adult, title="Snow day")

    page = await feed_ok(client, family.adult, search_query="picnics")
    assert set(ids(page)) == {in_title, in_tags, in_description}
    assert page["total_count"] == 3
    assert ids(await feed_ok(client, family.adult, search_query="lisbon")) == [in_location]
    # websearch syntax: both words, or a phrase.
    assert ids(await feed_ok(client, family.adult, search_query="picnic river")) == [in_title]
    assert (await feed_ok(client, family.adult, search_query='"river picnic"'))["items"] == []
    assert (await feed_ok(client, family.adult, search_query="volcano"))["total_count"] == 0


async def test_search_never_finds_drafts_or_other_families(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    other = await factory.family(["adult"])
    await make_memory(pg, family.by_role("teen"), title="Secret picnic", status="draft")
    await make_memory(pg, other.adult, title="Their picnic")

    for member in (family.adult, family.by_role("teen")):
        page = await feed_ok(client, member, search_query="picnic", tags="")
        assert page["items"] == [] and page["total_count"] == 0


async def test_filters_combine_and_total_count_follows_them(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    hit = await make_memory(
        pg,
        family.by_role("teen"),
        title="Beach picnic",
        tags=["summer"],
        memory_date=date(2022, 7, 1),
    )
    await make_memory(
        pg, family.adult, title="Beach picnic", tags=["summer"], memory_date=date(2022, 7, 1)
    )
    await make_memory(
        pg,
        family.by_role("teen"),
        title="Beach picnic",
        tags=["summer"],
        memory_date=date(2019, 7, 1),
    )
    await make_memory(
        pg,
        family.by_role("teen"),
        title="Beach walk",
        tags=["summer"],
        memory_date=date(2022, 7, 1),
    )
    await make_memory(
        pg, family.by_role("teen"), title="Beach picnic", memory_date=date(2022, 7, 1)
    )

    page = await feed_ok(
        client,
        family.adult,
        user_id=family.by_role("teen").id,
        tags="summer",
        memory_date_from="2022-01-01",
        search_query="picnic",
        page_size=1,
    )
    assert ids(page) == [hit]
    assert page["total_count"] == 1
    assert page["pagination"] == {"page": 1, "page_size": 1, "total_pages": 1, "has_more": False}


# Orderings ------------------------------------------------------------------------------------


async def test_order_by_created_at_both_ways(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    made = [await make_memory(pg, family.adult, age=timedelta(days=d)) for d in (40, 3, 10)]
    # Engagement must not matter here.
    await engage(client, family.members, made[0], 9)

    newest_first = await feed_ok(client, family.adult, order_by="created_at")
    assert ids(newest_first) == [made[1], made[2], made[0]]
    oldest_first = await feed_ok(client, family.adult, order_by="created_at", order_direction="asc")
    assert ids(oldest_first) == [made[0], made[2], made[1]]


async def test_order_by_memory_date_keeps_undated_last(client, factory, pg):
    family = await factory.family(["adult"])
    undated = await make_memory(pg, family.adult)
    early = await make_memory(pg, family.adult, memory_date=date(1990, 5, 1))
    late = await make_memory(pg, family.adult, memory_date=date(2020, 5, 1))
    # Same memory_date: the newer post first (reversed for asc).
    twin_old = await make_memory(
        pg, family.adult, memory_date=date(2000, 1, 1), age=timedelta(days=2)
    )
    twin_new = await make_memory(pg, family.adult, memory_date=date(2000, 1, 1))

    desc = await feed_ok(client, family.adult, order_by="memory_date")
    assert ids(desc) == [late, twin_new, twin_old, early, undated]
    asc = await feed_ok(client, family.adult, order_by="memory_date", order_direction="asc")
    assert ids(asc) == [early, twin_old, twin_new, late, undated]


async def test_order_by_score_ascending_is_the_reverse(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    made = [await make_memory(pg, family.adult, age=timedelta(days=d)) for d in (1, 5, 25, 60)]
    await engage(client, family.members, made[3], 3)

    desc = ids(await feed_ok(client, family.adult))
    asc = ids(await feed_ok(client, family.adult, order_direction="asc"))
    assert asc == list(reversed(desc))


@pytest.mark.parametrize(
    "params",
    [
        {"order_by": "popularity"},
        {"order_direction": "up"},
        {"page": 0},
        {"page_size": 0},
        {"page_size": 101},
        {"user_id": "not-a-uuid"},
        {"memory_date_from": "2024-13-01"},
        {"memory_date_from": "2024-02-01", "memory_date_to": "2024-01-01"},
        {"search_query": "x" * 201},
        {"tags": ",".join(f"t{i}" for i in range(21))},
        {"tags": "t" * 51},
    ],
)
async def test_bad_query_parameters_are_422(client, factory, params):
    family = await factory.family(["adult"])
    response = await feed(client, family.adult, **params)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed" and response.json()["errors"]


@pytest.mark.parametrize(
    ("params", "loc", "detail"),
    [
        (
            {"page_size": "abc"},
            ["query", "page_size"],
            "Invalid query parameter page_size: Input should be a valid integer, unable to"
            " parse string as an integer",
        ),
        (
            {"cursor": "x", "page": 2},
            ["query"],
            "Invalid query: Value error, cursor cannot be combined with page",
        ),
        (
            {"order_direction": "up", "page_size": 0},
            ["query", "order_direction"],
            "Invalid query parameter order_direction: Input should be 'desc' or 'asc'"
            " (and 1 more in `errors`)",
        ),
    ],
)
async def test_a_bad_query_is_told_as_fastapi_tells_it(client, factory, params, loc, detail):
    # The feed reads its query itself (deps.query_model, docs/performance.md); the answers
    # are the ones FastAPI gave when it read them.
    family = await factory.family(["adult"])
    response = await feed(client, family.adult, **params)
    assert response.status_code == 422
    assert response.json()["detail"] == detail
    assert response.json()["errors"][0]["loc"] == loc


async def test_a_bad_query_without_a_token_is_refused_for_the_token(client):
    response = await client.get(f"{API}/feed", params={"page": 0})
    assert response.status_code == 401


# Pagination -----------------------------------------------------------------------------------


async def test_empty_family(client, factory):
    family = await factory.family(["adult"])
    page = await feed_ok(client, family.adult)
    assert page == {
        "items": [],
        "pagination": {"page": 1, "page_size": 20, "total_pages": 0, "has_more": False},
        "total_count": 0,
        "next_cursor": None,
    }


async def test_pages_walk_the_whole_feed_without_overlap(client, factory, pg):
    family = await factory.family(["adult"])
    made = [await make_memory(pg, family.adult, age=timedelta(hours=h)) for h in range(7)]

    seen = []
    for number in (1, 2, 3):
        page = await feed_ok(client, family.adult, page=number, page_size=3)
        seen += ids(page)
        assert page["total_count"] == 7
        assert page["pagination"]["total_pages"] == 3
        assert page["pagination"]["has_more"] is (number < 3)
    assert seen == made  # newest first within the 24 h band, all the same weight
    last = await feed_ok(client, family.adult, page=3, page_size=3)
    assert len(last["items"]) == 1

    beyond = await feed_ok(client, family.adult, page=4, page_size=3)
    assert beyond["items"] == []
    assert beyond["total_count"] == 7
    assert beyond["pagination"] == {"page": 4, "page_size": 3, "total_pages": 3, "has_more": False}


async def test_page_size_one_and_one_hundred(client, factory, pg):
    family = await factory.family(["adult"])
    for index in range(101):
        await make_memory(pg, family.adult, title=f"m{index}", age=timedelta(minutes=index))

    one = await feed_ok(client, family.adult, page_size=1)
    assert [i["title"] for i in one["items"]] == ["m0"]
    assert one["pagination"] == {"page": 1, "page_size": 1, "total_pages": 101, "has_more": True}
    hundred = await feed_ok(client, family.adult, page_size=100)
    assert len(hundred["items"]) == 100
    assert hundred["pagination"]["total_pages"] == 2 and hundred["pagination"]["has_more"]
    rest = await feed_ok(client, family.adult, page_size=100, page=2)
    assert [i["title"] for i in rest["items"]] == ["m100"]


async def test_pagination_by_score_matches_one_big_page(client, factory, pg):
    """The band merge must give every page exactly what one long list would hold."""
    family = await factory.family(["adult", "teen"])
    for index, days in enumerate([0, 0.5, 2, 4, 6, 8, 15, 29, 31, 100, 400, 1000]):
        memory_id = await make_memory(pg, family.adult, age=timedelta(days=days))
        await engage(client, family.members, memory_id, index % 4 * 3)

    whole = ids(await feed_ok(client, family.adult, page_size=100))
    pieces = []
    for number in range(1, 5):
        pieces += ids(await feed_ok(client, family.adult, page=number, page_size=3))
    assert pieces == whole


# Items ----------------------------------------------------------------------------------------


async def test_item_carries_memory_fields_counters_reactions_and_top_comments(client, factory, pg):
    family = await factory.family(["adult", "teen", "child"])
    memory_id = await make_memory(
        pg,
        family.by_role("teen"),
        title="Zoo",
        description="Lions",
        location="Berlin",
        tags=["zoo"],
        memory_date=date(2023, 4, 1),
    )
    await react(client, family.adult, memory_id, "❤️")
    await react(client, family.by_role("child"), memory_id, "❤️")
    await react(client, family.adult, memory_id, "👍")
    first = await comment(client, family.adult, memory_id, "first")
    await comment(client, family.by_role("child"), memory_id, "reply", parent=first["id"])
    second = await comment(client, family.by_role("child"), memory_id, "second")
    third = await comment(client, family.by_role("teen"), memory_id, "third")
    fourth = await comment(client, family.adult, memory_id, "fourth")
    deleted = await comment(client, family.adult, memory_id, "fifth")
    await client.delete(
        f"/api/v1/feed/memories/{memory_id}/comments/{deleted['id']}", headers=family.adult.headers
    )

    [item] = (await feed_ok(client, family.adult))["items"]

    assert item["id"] == memory_id
    assert item["title"] == "Zoo" and item["description"] == "Lions"
    assert item["location"] == "Berlin" and item["tags"] == ["zoo"]
    assert item["memory_date"] == "2023-04-01" and item["status"] == "published"
    assert item["user_id"] == family.by_role("teen").id and item["family_unit_id"] == family.id
    assert item["author"]["id"] == family.by_role("teen").id and item["author"]["role"] == "teen"
    assert item["reaction_count"] == 3
    assert item["comment_count"] == 5  # four top-level and a reply; the deleted one not
    assert item["reactions_by_emoji"] == {"❤️": 2, "👍": 1}
    assert sorted(item["user_reactions"]) == sorted(["❤️", "👍"])
    top = item["top_comments"]
    assert [c["id"] for c in top] == [fourth["id"], third["id"], second["id"]]
    assert top[0]["author"]["id"] == family.adult.id
    assert set(top[0]) >= {
        "id",
        "memory_id",
        "user_id",
        "author",
        "parent_comment_id",
        "content",
        "created_at",
        "updated_at",
        "deleted_at",
        "reply_count",
        "replies",
    }
    teen_view = (await feed_ok(client, family.by_role("teen")))["items"][0]
    assert teen_view["user_reactions"] == []
    child_view = (await feed_ok(client, family.by_role("child")))["items"][0]
    assert child_view["user_reactions"] == ["❤️"]


async def test_media_carry_signed_urls_and_thumbnails_only_when_ready(client, factory, pg):
    family = await factory.family(["adult"])
    ready = await make_memory(pg, family.adult, photos=2, age=timedelta(hours=2))
    pending = await make_memory(pg, family.adult, photos=1, thumbnails_ready=False)

    page = await feed_ok(client, family.adult, order_by="created_at")
    by_id = {item["id"]: item for item in page["items"]}

    for media in by_id[ready]["media"]:
        assert media["url"] and media["storage_path"] in media["url"]
        assert media["thumbnail_url"] and media["thumbnail_path"] in media["thumbnail_url"]
        assert "signature=" in media["url"] and "signature=" in media["thumbnail_url"]
    [waiting] = by_id[pending]["media"]
    assert waiting["url"] and waiting["thumbnail_url"] is None
    # The signed URL really serves the object (the built-in storage checks the signature).
    response = await client.get(by_id[ready]["media"][0]["url"])
    assert response.status_code in (200, 404)  # signature accepted; the test file may not exist
    assert response.status_code != 403


async def test_every_feed_endpoint_needs_a_token(client):
    memory_id, item_id = uuid.uuid4(), uuid.uuid4()
    calls = [
        ("GET", "/api/v1/feed"),
        ("GET", f"/api/v1/feed/memories/{memory_id}/reactions"),
        ("POST", f"/api/v1/feed/memories/{memory_id}/reactions"),
        ("DELETE", f"/api/v1/feed/memories/{memory_id}/reactions/{item_id}"),
        ("GET", f"/api/v1/feed/memories/{memory_id}/comments"),
        ("POST", f"/api/v1/feed/memories/{memory_id}/comments"),
        ("PUT", f"/api/v1/feed/memories/{memory_id}/comments/{item_id}"),
        ("DELETE", f"/api/v1/feed/memories/{memory_id}/comments/{item_id}"),
    ]
    for method, path in calls:
        body = {"emoji": "👍", "content": "x"} if method in ("POST", "PUT") else None
        response = await client.request(method, path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
