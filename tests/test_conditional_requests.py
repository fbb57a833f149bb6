"""Conditional requests (docs/api.md, "Conditional requests"): ETag on a feed page, a memory,
its comments and /families/me; If-None-Match with the current one → 304 with no body; the
ETag changes when something visible changes. Signed media URLs stay the same within a window
so that an unchanged page keeps its ETag.
"""

import uuid
from datetime import timedelta
from typing import Any

import pytest

from app.adapters.storage.signing import expiry, window
from app.api import conditional
from app.schemas.feed import FeedPage
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Member
from tests.helpers.feed import comment, make_memory, react


async def get(client, member: Member, path: str, etag: str | None = None, **params: Any):
    headers = dict(member.headers)
    if etag is not None:
        headers["If-None-Match"] = etag
    return await client.get(f"{API}{path}", params=params, headers=headers)


async def assert_not_modified(
    client, member: Member, path: str, etag: str, *, sent: str | None = None, **params: Any
):
    """If-None-Match `sent` (by default the ETag itself) → 304, no body, the current ETag."""
    response = await get(client, member, path, sent or etag, **params)
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == etag
    return response


async def current_etag(client, member: Member, path: str, **params: Any) -> str:
    response = await get(client, member, path, **params)
    assert response.status_code == 200, response.text
    tag: str = response.headers["etag"]
    assert tag.startswith('W/"')
    assert response.headers["cache-control"] == "private, no-cache"
    return tag


async def test_feed_page_304_until_a_reaction_an_edit_or_a_comment(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    memory_id = await make_memory(pg, family.adult, photos=2, age=timedelta(days=2))
    await make_memory(pg, family.adult, photos=1)

    first = await get(client, family.adult, "/feed")
    etag = first.headers["etag"]
    again = await get(client, family.adult, "/feed")
    assert again.headers["etag"] == etag
    # The same signed URLs: the page is the same, and the browser keeps its cached images.
    assert again.json() == first.json()
    await assert_not_modified(client, family.adult, "/feed", etag)
    # Weak comparison, and one of several tags.
    strong = etag.removeprefix("W/")
    await assert_not_modified(client, family.adult, "/feed", etag, sent=f'"x", {strong}')
    await assert_not_modified(client, family.adult, "/feed", etag, sent="*")

    await react(client, teen, memory_id, "❤️")
    after_reaction = await get(client, family.adult, "/feed", etag)
    assert after_reaction.status_code == 200
    assert after_reaction.headers["etag"] != etag
    etag = after_reaction.headers["etag"]

    response = await client.put(
        f"{API}/memories/{memory_id}", json={"title": "Renamed"}, headers=family.adult.headers
    )
    assert response.status_code == 200
    after_edit = await get(client, family.adult, "/feed", etag)
    assert after_edit.status_code == 200 and after_edit.headers["etag"] != etag
    etag = after_edit.headers["etag"]

    await comment(client, teen, memory_id, "Nice")
    after_comment = await get(client, family.adult, "/feed", etag)
    assert after_comment.status_code == 200 and after_comment.headers["etag"] != etag


async def test_each_member_and_each_page_has_its_own_etag(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    await make_memory(pg, family.adult)
    await react(client, family.adult, memory_id, "👍")

    adult = await current_etag(client, family.adult, "/feed")
    teen = await current_etag(client, family.by_role("teen"), "/feed")
    assert adult != teen  # user_reactions differ
    first = await current_etag(client, family.adult, "/feed", page_size=1)
    second = await current_etag(client, family.adult, "/feed", page_size=1, page=2)
    assert first != second
    await assert_not_modified(client, family.adult, "/feed", second, page_size=1, page=2)


async def test_a_scroll_page_answers_304_too(client, factory, pg):
    family = await factory.family(["adult"])
    for hour in range(3):
        await make_memory(pg, family.adult, age=timedelta(hours=hour))
    first = (await get(client, family.adult, "/feed", limit=2)).json()
    cursor = first["next_cursor"]
    etag = await current_etag(client, family.adult, "/feed", limit=2, cursor=cursor)
    await assert_not_modified(client, family.adult, "/feed", etag, limit=2, cursor=cursor)
    # A fresh first page has a new cursor in it, but shows the same: the same ETag.
    start = await current_etag(client, family.adult, "/feed", limit=2)
    await assert_not_modified(client, family.adult, "/feed", start, limit=2)


async def _published_processed_photo(client, member) -> tuple[dict, dict]:
    """A published memory with one photo, processed: (memory, media)."""
    memory = await samples.create_memory(client, member, status="published")
    media = await samples.upload(client, member, memory["id"], samples.webp((60, 40)), "image/webp")
    await samples.wait_for_media(client, member, memory["id"], media["id"])
    return memory, media


async def test_feed_etag_changes_when_a_thumbnail_is_processed(client, factory, app, pg):
    family = await factory.family(["adult"])
    memory, media = await _published_processed_photo(client, family.adult)
    # Back to how it was before processing, then processed again by the real processor.
    await pg.execute(
        "update public.memory_media set processing_status = 'pending', thumbnail_path = null,"
        " width = null, height = null, processing_claimed_at = null where id = $1",
        uuid.UUID(media["id"]),
    )
    waiting = await get(client, family.adult, "/feed")
    assert waiting.json()["items"][0]["media"][0]["thumbnail_url"] is None
    before = waiting.headers["etag"]
    memory_etag = await current_etag(client, family.adult, f"/memories/{memory['id']}")

    assert await app.state.context.media.sweep() >= 1  # other tests' pending media too

    processed = await get(client, family.adult, "/feed", before)
    assert processed.status_code == 200
    assert processed.json()["items"][0]["media"][0]["thumbnail_url"]
    assert processed.headers["etag"] != before
    changed = await get(client, family.adult, f"/memories/{memory['id']}", memory_etag)
    assert changed.status_code == 200 and changed.headers["etag"] != memory_etag


async def test_memory_304_until_edited(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    path = f"/memories/{memory_id}"

    etag = await current_etag(client, family.adult, path)
    await assert_not_modified(client, family.adult, path, etag)
    # Reactions are not part of a Memory: nothing it shows changed.
    await react(client, family.by_role("teen"), memory_id, "🎉")
    await assert_not_modified(client, family.adult, path, etag)

    response = await client.put(
        f"{API}{path}", json={"tags": ["summer"]}, headers=family.adult.headers
    )
    assert response.status_code == 200
    edited = await get(client, family.adult, path, etag)
    assert edited.status_code == 200 and edited.headers["etag"] != etag
    # Someone who cannot see it gets no ETag and no 304, whatever they send.
    stranger = (await factory.family(["adult"])).adult
    assert (await get(client, stranger, path, etag)).status_code == 404


async def test_comments_304_until_a_comment_is_added_edited_or_deleted(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    memory_id = await make_memory(pg, family.adult)
    first = await comment(client, teen, memory_id, "first")
    path = f"/feed/memories/{memory_id}/comments"

    etag = await current_etag(client, family.adult, path)
    await assert_not_modified(client, family.adult, path, etag)
    for change in ("reply", "edit", "delete"):
        if change == "reply":
            await comment(client, family.adult, memory_id, "re", parent=first["id"])
        elif change == "edit":
            response = await client.put(
                f"{API}{path}/{first['id']}", json={"content": "edited"}, headers=teen.headers
            )
            assert response.status_code == 200
        else:
            response = await client.delete(f"{API}{path}/{first['id']}", headers=teen.headers)
            assert response.status_code == 204
        response = await get(client, family.adult, path, etag)
        assert response.status_code == 200, change
        assert response.headers["etag"] != etag, change
        etag = response.headers["etag"]
    await assert_not_modified(client, family.adult, path, etag)
    # The scroll form has its own ETag and answers 304 the same way.
    scroll = await current_etag(client, family.adult, path, cursor="")
    await assert_not_modified(client, family.adult, path, scroll, cursor="")


async def test_family_304_until_renamed_or_joined(client, factory):
    family = await factory.family(["adult"])
    etag = await current_etag(client, family.adult, "/families/me")
    await assert_not_modified(client, family.adult, "/families/me", etag)

    response = await client.patch(
        f"{API}/families/me", json={"name": "The Renamed"}, headers=family.adult.headers
    )
    assert response.status_code == 200
    renamed = await get(client, family.adult, "/families/me", etag)
    assert renamed.status_code == 200 and renamed.headers["etag"] != etag

    etag = renamed.headers["etag"]
    await factory.join(family.adult, "teen")
    joined = await get(client, family.adult, "/families/me", etag)
    assert joined.status_code == 200 and joined.headers["etag"] != etag


async def test_a_stale_or_foreign_etag_is_a_full_answer(client, factory):
    family = await factory.family(["adult"])
    for tag in ('W/"0000"', '"nonsense"', "", "W/"):
        response = await get(client, family.adult, "/families/me", tag)
        assert response.status_code == 200 and response.json()["name"]


# Signed URLs stay the same within a window -------------------------------------------------


@pytest.mark.parametrize("expires_in", [60, 300, 3600, 86_400])
def test_url_expiry_is_rounded_up_to_a_window_and_never_shorter(expires_in):
    step = window(expires_in)
    assert step == min(expires_in, 3600)
    start = 1_700_000_000.25
    seen = set()
    for offset in range(0, 3 * step, max(1, step // 7)):
        now = start + offset
        at = expiry(expires_in, now)
        assert now + expires_in <= at <= now + expires_in + step
        assert (at - expires_in) % step == 0
        seen.add(at)
    # One value per window: the URL of an object stays the same for a whole window.
    assert 3 <= len(seen) <= 4
    assert expiry(expires_in, 7200.0) == expiry(expires_in, 7200.0 - step + 1)


def test_feed_etag_leaves_out_signatures_and_the_cursor_but_not_their_window():
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "family_unit_id": str(uuid.uuid4()),
        "title": "t",
        "description": None,
        "memory_date": None,
        "location": None,
        "tags": [],
        "status": "published",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "modified_by": None,
        "author": {
            "id": str(uuid.uuid4()),
            "display_name": "A",
            "avatar_url": None,
            "role": "adult",
        },
        "reaction_count": 0,
        "comment_count": 0,
        "reactions_by_emoji": {},
        "user_reactions": [],
        "top_comments": [],
        "feed_score": 0.5,
        "media": [],
    }
    media = {
        "id": str(uuid.uuid4()),
        "memory_id": item["id"],
        "storage_path": "a/b/c.jpg",
        "storage_bucket": "memories",
        "file_name": "c.jpg",
        "mime_type": "image/jpeg",
        "file_size": 1,
        "width": None,
        "height": None,
        "duration": None,
        "thumbnail_path": None,
        "processing_status": "completed",
        "metadata": {},
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    }
    pagination = {"page": 1, "page_size": 20, "total_pages": 1, "has_more": False}

    def page(url: str, cursor: str | None, avatar: str | None = None) -> FeedPage:
        author = {**item["author"], "avatar_url": avatar}
        return FeedPage.model_validate(
            {
                "items": [
                    {
                        **item,
                        "author": author,
                        "media": [{**media, "url": url, "thumbnail_url": None}],
                    }
                ],
                "pagination": pagination,
                "total_count": 1,
                "next_cursor": cursor,
            }
        )

    hour = 3600.0

    def tag(p: FeedPage, window_end: int, now: float = hour) -> str:
        salt = conditional.page_salt(window_end, p.next_cursor)
        return conditional.etag(p, exclude=conditional.NEXT_CURSOR, salt=salt, now=now)

    supabase = "https://project.supabase.co/storage/v1/object/sign/memories/f/m/{}.jpg?token={}"
    builtin = (
        "http://127.0.0.1:8000/storage/v1/object/sign/memories/f/m/{}.jpg?expires={}&signature={}"
    )
    # Supabase signs anew each time (and each process for itself): the URL differs, what the
    # page shows does not. So for the built-in store's signature.
    one, again = supabase.format(1, "eyJa"), supabase.format(1, "eyJb")
    assert tag(page(one, "c1"), 10) == tag(page(again, "c2"), 10)
    assert tag(page(builtin.format(1, 7200, "x"), None), 10) == tag(
        page(builtin.format(1, 7200, "y"), None), 10
    )
    # An avatar's signed thumbnail and a variant's URLs: the same.
    assert tag(page(one, None, avatar=supabase.format("a", "t1")), 10) == tag(
        page(one, None, avatar=supabase.format("a", "t2")), 10
    )
    # Another object (a new avatar, a processed variant) is another ETag.
    assert tag(page(one, None, avatar=supabase.format("a", "t1")), 10) != tag(
        page(one, None, avatar=supabase.format("b", "t1")), 10
    )
    assert tag(page(one, None), 10) != tag(page(supabase.format(2, "eyJa"), None), 10)
    # A URL avatar that is not signed stays as it is.
    assert tag(page(one, None, avatar="https://example.com/a.png?size=1"), 10) != tag(
        page(one, None, avatar="https://example.com/a.png?size=2"), 10
    )
    # The URLs' window is in every ETag, as is whether more pages follow.
    assert tag(page(one, "c1"), 10) != tag(page(one, "c1"), 11)
    assert tag(page(one, None), 10, now=hour) != tag(page(one, None), 10, now=3 * hour)
    assert tag(page("u", None), 10) != tag(page("u", "c1"), 10)


def test_feed_etag_names_its_urls_window_and_whether_more_follow() -> None:
    shown = b'{"items": []}'

    def tag(window_end: int, cursor: str | None) -> str:
        return conditional.etag_of(shown, salt=conditional.page_salt(window_end, cursor))

    assert tag(10, "c1") == tag(10, "c2")  # a cursor records when it was made: left out
    assert tag(10, "c1") != tag(11, "c1")  # ... but not the window of the page's URLs
    assert tag(10, None) != tag(10, "c1")  # ... nor whether more pages follow
    assert tag(10, None).startswith('W/"')


async def test_feed_etag_stays_when_every_url_is_signed_anew(client, factory, app, monkeypatch):
    # Supabase Storage signs with a new token on every request: the URLs of a page (the
    # originals, thumbnails, variants and avatars alike) differ each time, what it shows not.
    family = await factory.family(["adult"])
    await _published_processed_photo(client, family.adult)
    storage = app.state.context.storage
    signed = storage.signed_download_urls
    signings = iter(range(1_000_000))

    async def signed_anew(paths, *, expires_in):
        urls = await signed(paths, expires_in=expires_in)
        return {path: f"{url}&signed={next(signings)}" for path, url in urls.items()}

    monkeypatch.setattr(storage, "signed_download_urls", signed_anew)
    first = await get(client, family.adult, "/feed")
    second = await get(client, family.adult, "/feed")
    first_media, second_media = (
        first.json()["items"][0]["media"][0],
        second.json()["items"][0]["media"][0],
    )
    assert first_media["variants"] and first_media["thumbnail_url"]
    assert first_media != second_media  # every URL differs
    assert first.headers["etag"] == second.headers["etag"]
    await assert_not_modified(client, family.adult, "/feed", first.headers["etag"])


async def test_browsers_let_scripts_read_the_etag(client, factory):
    family = await factory.family(["adult"])
    response = await client.get(
        f"{API}/families/me",
        headers={**family.adult.headers, "Origin": "http://localhost:5173"},
    )
    assert response.status_code == 200
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "etag" in {name.strip() for name in exposed.split(",")}


async def test_a_feed_page_answered_304_signs_no_url(client, factory, pg, signing_calls):
    # The ETag is known from the page as read, before any URL is signed: when the client
    # has the page, nothing is signed (with Supabase Storage, no request to it) or validated.
    family = await factory.family(["adult"])
    await make_memory(pg, family.adult, photos=2)
    signings = signing_calls
    etag = await current_etag(client, family.adult, "/feed")
    assert len(signings) == 1

    await assert_not_modified(client, family.adult, "/feed", etag)
    await assert_not_modified(client, family.adult, "/feed", etag, sent="*")
    assert len(signings) == 1
    again = await get(client, family.adult, "/feed", '"another"')
    assert again.status_code == 200 and again.headers["etag"] == etag
    assert again.json()["items"][0]["media"][0]["url"]
    assert len(signings) == 2
