"""Hostile input: huge and deeply nested JSON, broken UTF-8, NUL bytes, SQL metacharacters,
and the Unicode a family really writes (emoji, right-to-left scripts, combining marks).

Whatever the input, the answer is a clear 4xx or the text stored exactly as sent — never a
500, never a hang, never a query that means something else.
"""

import time
import uuid
from typing import Any

import httpx
import pytest

from app.middleware import URL_NOT_UTF8
from tests.attacks.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Factory, Member, unique_email

MiB = 1024 * 1024


@pytest.fixture
async def family(factory: Factory):
    return await factory.family(["adult", "teen"])


@pytest.fixture
async def adult(family) -> Member:
    return family.adult


@pytest.fixture
async def published(client, adult) -> dict[str, Any]:
    return await samples.create_memory(client, adult, title="Picnic", status="published")


def assert_clean_4xx(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, f"{response.status_code}: {response.text}"
    detail = response.json()["detail"]
    assert detail and "Traceback" not in response.text


# Size ----------------------------------------------------------------------------------------

JSON_ENDPOINTS = [
    ("POST", "/memories"),
    ("PUT", "/memories/{memory}"),
    ("POST", "/feed/memories/{memory}/comments"),
    ("PATCH", "/auth/me"),
    ("POST", "/auth/register/adult"),
    ("POST", "/auth/login"),
]


def _url(path: str, memory: dict[str, Any]) -> str:
    return API + path.format(memory=memory["id"])


@pytest.mark.parametrize(
    ("method", "path"), JSON_ENDPOINTS, ids=[f"{m} {p}" for m, p in JSON_ENDPOINTS]
)
async def test_json_body_over_one_mebibyte_is_413(client, pg, adult, published, method, path):
    body = b'{"title": "' + b"x" * (MiB + 10) + b'"}'
    before = await pg.fetchval("select count(*) from public.memories")
    response = await client.request(
        method,
        _url(path, published),
        content=body,
        headers={**adult.headers, "Content-Type": "application/json"},
    )
    assert_clean_4xx(response, 413)
    assert await pg.fetchval("select count(*) from public.memories") == before


async def test_json_body_over_one_mebibyte_without_content_length_is_413(client, pg, adult):
    async def chunks():
        yield b'{"title": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    before = await pg.fetchval("select count(*) from public.memories")
    response = await client.post(
        f"{API}/memories",
        content=chunks(),
        headers={**adult.headers, "Content-Type": "application/json"},
    )
    assert_clean_4xx(response, 413)
    assert await pg.fetchval("select count(*) from public.memories") == before


async def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(client, pg, adult):
    # The declared length alone decides: nothing of the body is waited for or parsed. (A
    # small body under a false Content-Length shows it was never read.)
    before = await pg.fetchval("select count(*) from public.memories")
    response = await client.post(
        f"{API}/memories",
        content=b'{"title": "declared big"}',
        headers={
            **adult.headers,
            "Content-Type": "application/json",
            "Content-Length": str(MiB + 1),
        },
    )
    assert_clean_4xx(response, 413)
    assert await pg.fetchval("select count(*) from public.memories") == before


async def test_json_body_just_under_the_limit_is_accepted_or_refused_by_field_rules(client, adult):
    # 1 MiB is the body limit, not a field limit: a description over 10 000 chars is a 422.
    body = {"title": "Big", "description": "z" * (MiB - 100)}
    response = await client.post(f"{API}/memories", json=body, headers=adult.headers)
    assert_clean_4xx(response, 422)


# Structure -----------------------------------------------------------------------------------

NESTINGS = {
    "arrays": b"[" * 100_000 + b"]" * 100_000,
    "objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "title holding arrays": b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "unclosed": b"[" * 500_000,
}


@pytest.mark.parametrize("name", list(NESTINGS))
async def test_deeply_nested_json_is_a_quick_4xx(client, adult, name):
    started = time.perf_counter()
    response = await client.post(
        f"{API}/memories",
        content=NESTINGS[name],
        headers={**adult.headers, "Content-Type": "application/json"},
    )
    assert_clean_4xx(response, 422)
    assert time.perf_counter() - started < 3.0  # (generous: CI machines are shared)


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"title": "\xff\xfe"}',
        b'{"title": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"title": "\xc0\xaf"}',  # overlong "/"
        b'\xff{"title": "x"}',
    ],
    ids=["latin-1", "ff-fe", "surrogate", "overlong", "leading garbage"],
)
async def test_invalid_utf8_in_a_json_body_is_422(client, pg, adult, body):
    before = await pg.fetchval("select count(*) from public.memories")
    response = await client.post(
        f"{API}/memories",
        content=body,
        headers={**adult.headers, "Content-Type": "application/json"},
    )
    # Malformed JSON like any other: the contract's 422 with `errors`.
    assert_clean_4xx(response, 422)
    # (A UTF-8-encoded surrogate gets as far as the field, which refuses it.)
    assert response.json()["errors"][0]["type"] in ("json_invalid", "string_unicode")
    assert await pg.fetchval("select count(*) from public.memories") == before


@pytest.mark.parametrize(
    "body",
    [b'{"title": "\\ud800"}', b'{"title": "a\\udfffb"}'],
    ids=["lone high surrogate", "lone low surrogate"],
)
async def test_lone_surrogate_escape_in_json_is_422(client, adult, body):
    response = await client.post(
        f"{API}/memories",
        content=body,
        headers={**adult.headers, "Content-Type": "application/json"},
    )
    assert_clean_4xx(response, 422)
    assert response.json()["errors"][0]["loc"] == ["body", "title"]


@pytest.mark.parametrize(
    "query",
    ["search_query=%FF%FE", "search_query=caf%E9", "tags=%C0%AF", "search_query=%ED%A0%80"],
)
async def test_invalid_utf8_in_a_query_string_is_a_4xx(client, adult, query):
    response = await client.get(f"{API}/feed?{query}", headers=adult.headers)
    assert_clean_4xx(response, 422)
    assert response.json()["errors"] == [
        {"loc": ["query"], "msg": URL_NOT_UTF8, "type": "string_unicode"}
    ]


@pytest.mark.parametrize(
    "path",
    ["/memories/%FF%FE", "/invites/%C0%AF%FF", "/storage/media/%ED%A0%80/url"],
)
async def test_invalid_utf8_in_a_path_is_a_4xx(client, adult, path):
    response = await client.get(API + path, headers=adult.headers)
    assert_clean_4xx(response, 422)
    assert response.json()["errors"] == [
        {"loc": ["path"], "msg": URL_NOT_UTF8, "type": "string_unicode"}
    ]


# NUL -----------------------------------------------------------------------------------------

NUL = "before\x00after"


async def _nul_requests(client: httpx.AsyncClient, family, published) -> dict[str, httpx.Response]:
    """Every text field a client writes, each with a NUL byte in it."""
    adult = family.adult
    h = adult.headers
    memory = published["id"]
    comment = (
        await client.post(
            f"{API}/feed/memories/{memory}/comments", json={"content": "ok"}, headers=h
        )
    ).json()
    invite = await Factory(client).invite(adult, "teen")
    calls = {
        "memory.title": client.post(f"{API}/memories", json={"title": NUL}, headers=h),
        "memory.description": client.post(
            f"{API}/memories", json={"title": "t", "description": NUL}, headers=h
        ),
        "memory.location": client.post(
            f"{API}/memories", json={"title": "t", "location": NUL}, headers=h
        ),
        "memory.tags": client.post(
            f"{API}/memories", json={"title": "t", "tags": [NUL]}, headers=h
        ),
        "update.title": client.put(f"{API}/memories/{memory}", json={"title": NUL}, headers=h),
        "update.description": client.put(
            f"{API}/memories/{memory}", json={"description": NUL}, headers=h
        ),
        "update.location": client.put(
            f"{API}/memories/{memory}", json={"location": NUL}, headers=h
        ),
        "update.tags": client.put(f"{API}/memories/{memory}", json={"tags": ["a", NUL]}, headers=h),
        "comment.content": client.post(
            f"{API}/feed/memories/{memory}/comments", json={"content": NUL}, headers=h
        ),
        "edited_comment.content": client.put(
            f"{API}/feed/memories/{memory}/comments/{comment['id']}",
            json={"content": NUL},
            headers=h,
        ),
        "me.display_name": client.patch(f"{API}/auth/me", json={"display_name": NUL}, headers=h),
        "me.avatar_url": client.patch(
            f"{API}/auth/me", json={"avatar_url": "https://x.example/\x00.png"}, headers=h
        ),
        "family.name": client.patch(f"{API}/families/me", json={"name": NUL}, headers=h),
        "pet.display_name": client.post(
            f"{API}/auth/register/pet", json={"display_name": NUL}, headers=h
        ),
        "child.display_name": client.post(
            f"{API}/auth/provision/child", json={"display_name": NUL}, headers=h
        ),
        "register.display_name": client.post(
            f"{API}/auth/register/adult",
            json={"email": unique_email(), "password": "x" * 12, "display_name": NUL},
        ),
        "register.family_name": client.post(
            f"{API}/auth/register/adult",
            json={
                "email": unique_email(),
                "password": "x" * 12,
                "display_name": "ok",
                "family_name": NUL,
            },
        ),
        "register.email": client.post(
            f"{API}/auth/register/adult",
            json={"email": "a\x00b@example.com", "password": "x" * 12, "display_name": "ok"},
        ),
        "accept.display_name": client.post(
            f"{API}/invites/{invite['token']}/accept",
            json={"email": invite["email"], "password": "x" * 12, "display_name": NUL},
        ),
        "login.email": client.post(
            f"{API}/auth/login", json={"email": "someone\x00@example.com", "password": "x" * 12}
        ),
        "invite.email": client.post(
            f"{API}/invites", json={"email": "a\x00@example.com", "role": "teen"}, headers=h
        ),
        "upload.file_name": client.post(
            f"{API}/storage/upload-url",
            json={"memory_id": memory, "file_name": NUL, "mime_type": "image/jpeg"},
            headers=h,
        ),
        "media.storage_path": client.post(
            f"{API}/memories/{memory}/media",
            json={"storage_path": NUL, "file_name": "x.jpg", "mime_type": "image/jpeg"},
            headers=h,
        ),
        "feed.search_query": client.get(f"{API}/feed", params={"search_query": NUL}, headers=h),
        "feed.tags": client.get(f"{API}/feed", params={"tags": NUL}, headers=h),
        "access_url.storage_path": client.get(
            f"{API}/storage/access-url", params={"storage_path": NUL}, headers=h
        ),
    }
    return {name: await call for name, call in calls.items()}


async def test_nul_byte_in_any_text_field_is_a_clear_422_and_nothing_is_written(
    client, pg, family, published
):
    before = await pg.fetchval("select count(*) from public.memories")
    responses = await _nul_requests(client, family, published)
    # The object-path check answers first for the one query parameter that is a storage path.
    not_422 = {"access_url.storage_path": 400}
    failures = {
        name: f"{response.status_code} {response.text[:120]}"
        for name, response in responses.items()
        if response.status_code != not_422.get(name, 422)
    }
    assert not failures, failures
    for name, response in responses.items():
        if response.status_code == 422:  # names the field and says why
            error = response.json()["errors"][0]
            assert error["loc"][-1] == name.split(".")[-1] or error["loc"][-2] == "tags", name
            assert "U+0000" in error["msg"], (name, error)
    assert await pg.fetchval("select count(*) from public.memories") == before
    row = await pg.fetchrow(
        "select title, description, location, tags from public.memories where id = $1",
        uuid.UUID(published["id"]),
    )
    assert dict(row) == {"title": "Picnic", "description": None, "location": None, "tags": []}


# Unicode round trips -------------------------------------------------------------------------

UNICODE = {
    "emoji zwj family": "Sunday with 👨‍👩‍👧‍👦 and 🐕‍🦺 🎉",
    "flags and skin tones": "🇯🇵 🇧🇷 👍🏽 🙌🏿",
    "hebrew": "שבת שלום סבתא",
    "arabic": "عيد ميلاد سعيد يا جدتي",
    "mixed direction": "Trip to القاهرة with סבא",
    "rtl override": "photo\u202egnp.exe",
    "combining marks": "Cafe\u0301 Zu\u0308rich (decomposed) — Z̤̈ã̱",
    "precomposed": "Café Zürich (precomposed)",
    "zero width": "a\u200bb\u200cc\u200dd\ufeffe",
    "astral": "𝔉𝔞𝔪𝔦𝔩𝔶 𓀀 𠜎",
    "devanagari": "दादी की रसोई",
    "thai": "คุณยายทำอาหาร",
}


@pytest.mark.parametrize("name", list(UNICODE))
async def test_unicode_round_trips_exactly_everywhere_it_is_written(client, pg, family, name):
    text = UNICODE[name]
    adult, teen = family.adult, family.by_role("teen")
    tag = text[:50].lower()
    created = await client.post(
        f"{API}/memories",
        json={
            "title": text,
            "description": text,
            "location": text,
            "tags": [text[:50]],
            "status": "published",
        },
        headers=adult.headers,
    )
    assert created.status_code == 201, created.text
    memory = created.json()
    expected = {"title": text, "description": text, "location": text, "tags": [tag]}
    assert {key: memory[key] for key in expected} == expected
    fetched = (await client.get(f"{API}/memories/{memory['id']}", headers=teen.headers)).json()
    assert {key: fetched[key] for key in expected} == expected
    stored = await pg.fetchrow(
        "select title, description, location, tags from public.memories where id = $1",
        uuid.UUID(memory["id"]),
    )
    assert dict(stored) == expected  # not normalised (NFC/NFKC) on the way in

    comment = await client.post(
        f"{API}/feed/memories/{memory['id']}/comments", json={"content": text}, headers=teen.headers
    )
    assert comment.status_code == 201, comment.text
    assert comment.json()["content"] == text
    listed = await client.get(f"{API}/feed/memories/{memory['id']}/comments", headers=adult.headers)
    assert [c["content"] for c in listed.json()] == [text]

    name_100 = text[:100]
    me = await client.patch(f"{API}/auth/me", json={"display_name": name_100}, headers=teen.headers)
    assert me.status_code == 200 and me.json()["display_name"] == name_100
    renamed = await client.patch(f"{API}/families/me", json={"name": text}, headers=adult.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == text
    members = {m["id"]: m["display_name"] for m in renamed.json()["members"]}
    assert members[teen.id] == name_100

    tagged = await client.get(f"{API}/feed", params={"tags": tag}, headers=adult.headers)
    assert tagged.status_code == 200, tagged.text
    assert [item["id"] for item in tagged.json()["items"]] == [memory["id"]]


async def test_precomposed_and_decomposed_text_stay_distinct(client, adult):
    composed, decomposed = "Zürich", "Zu\u0308rich"
    ids = []
    for title in (composed, decomposed):
        response = await client.post(
            f"{API}/memories", json={"title": title}, headers=adult.headers
        )
        assert response.json()["title"] == title
        ids.append(response.json()["id"])
    titles = [
        (await client.get(f"{API}/memories/{i}", headers=adult.headers)).json()["title"]
        for i in ids
    ]
    assert titles == [composed, decomposed]


# SQL metacharacters ----------------------------------------------------------------------------

METACHARACTERS = [
    "'; drop table memories; --",
    "' or '1'='1",
    '" or ""="',
    "%",
    "_",
    "%_%",
    "\\",
    "\\'",
    "$1",
    "$$",
    "::text",
    "'::text || current_user || '",
    "); select pg_sleep(5); --",
    "*",
    "!",
    "&",
    "|",
    "<->",
    ":*",
    "or",
    "-",
    '"',
]


async def test_sql_metacharacters_are_stored_and_echoed_literally(client, pg, family):
    adult, teen = family.adult, family.by_role("teen")
    for text in METACHARACTERS:
        created = await client.post(
            f"{API}/memories",
            json={"title": text, "description": text, "location": text, "tags": [text]},
            headers=adult.headers,
        )
        assert created.status_code == 201, (text, created.text)
        memory = created.json()
        assert (memory["title"], memory["description"], memory["location"], memory["tags"]) == (
            text,
            text,
            text,
            [text],
        )
        row = await pg.fetchrow(
            "select title, description, location, tags from public.memories where id = $1",
            uuid.UUID(memory["id"]),
        )
        assert tuple(row) == (text, text, text, [text])
        updated = await client.put(
            f"{API}/memories/{memory['id']}",
            json={"title": text + " (edited)", "status": "published"},
            headers=adult.headers,
        )
        assert updated.status_code == 200 and updated.json()["title"] == text + " (edited)"
        comment = await client.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": text},
            headers=teen.headers,
        )
        assert comment.status_code == 201 and comment.json()["content"] == text
    me = await client.patch(
        f"{API}/auth/me",
        json={"display_name": "'; drop table user_profiles; --"},
        headers=teen.headers,
    )
    assert me.json()["display_name"] == "'; drop table user_profiles; --"
    # Every table is still there, and holds what it held.
    for table in ("memories", "user_profiles", "memory_comments"):
        assert await pg.fetchval(f"select count(*) > 0 from public.{table}")


@pytest.fixture
async def searchable(client, adult) -> dict[str, str]:
    """A family with plain memories and one whose texts are all metacharacters."""
    plain = {
        "picnic": await samples.create_memory(
            client, adult, title="Picnic in the park", tags=["summer"], status="published"
        ),
        "birthday": await samples.create_memory(
            client, adult, title="Grandma's birthday", tags=["family"], status="published"
        ),
    }
    odd = await samples.create_memory(
        client,
        adult,
        title="100% fun_time \\ $1 ::text",
        tags=["%", "_"],
        status="published",
    )
    return {**{name: memory["id"] for name, memory in plain.items()}, "odd": odd["id"]}


@pytest.mark.parametrize("query", METACHARACTERS)
async def test_sql_metacharacters_in_search_query_match_nothing_unintended(
    client, adult, searchable, query
):
    started = time.perf_counter()
    response = await client.get(
        f"{API}/feed", params={"search_query": query}, headers=adult.headers
    )
    assert response.status_code == 200, response.text
    assert time.perf_counter() - started < 4.0  # no pg_sleep(5), no runaway query
    found = {item["id"] for item in response.json()["items"]}
    # Wildcards, quotes and operators are not a way to list everything.
    assert searchable["picnic"] not in found and searchable["birthday"] not in found, query
    assert response.json()["total_count"] == len(found)


@pytest.mark.parametrize(("tag", "expected"), [("%", {"odd"}), ("_", {"odd"}), ("%_", set())])
async def test_sql_wildcards_in_the_tags_filter_match_only_literally(
    client, adult, searchable, tag, expected
):
    response = await client.get(f"{API}/feed", params={"tags": tag}, headers=adult.headers)
    assert response.status_code == 200, response.text
    ids = {
        name
        for name, memory_id in searchable.items()
        if memory_id in {item["id"] for item in response.json()["items"]}
    }
    assert ids == expected


async def test_a_plain_search_still_finds_what_it_should(client, adult, searchable):
    """Control: the search works, so 'matched nothing' above means something."""
    response = await client.get(
        f"{API}/feed", params={"search_query": "picnics"}, headers=adult.headers
    )
    assert [item["id"] for item in response.json()["items"]] == [searchable["picnic"]]
