"""Quotas: uploads in progress count, per memory and per family (docs/api.md, "Quotas").

The review's child put 5 × 50 MiB into one memory (all 201): 250 MiB against the 200 MiB cap,
kept 24 h, because only registered files counted. Issuing an upload URL now reserves its
`max_bytes` (or the declared `file_size`) until the file is registered or the reservation
expires; the family's quota (`FAMILY_STORAGE_QUOTA_BYTES`) counts the same way, and
`GET /families/me` shows the usage. The built-in receiver stores nothing beyond a live
reservation.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers import media_samples as samples

MiB = 1024 * 1024
KiB = 1024
FILE, MEMORY, QUOTA = 64 * KiB, 160 * KiB, 200 * KiB


@pytest.fixture(scope="module")
async def small(migrated_database_url, data_dir) -> AsyncIterator[httpx.AsyncClient]:
    """A server with small limits: 64 KiB a file, 160 KiB a memory, 200 KiB a family."""
    settings = make_settings(
        migrated_database_url,
        data_dir,
        max_file_bytes=FILE,
        max_memory_bytes=MEMORY,
        family_storage_quota_bytes=QUOTA,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
def bucket_dir(settings) -> Path:
    return settings.storage_root / "memories"


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def padded_jpeg(total: int) -> bytes:
    head = samples.jpeg((16, 16), gps=False)
    return head + b"\x00" * (total - len(head))


async def storage_of(client: httpx.AsyncClient, member) -> dict:
    response = await client.get(f"{API}/families/me", headers=member.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["storage"])


async def reservations(pg, family_id: str) -> int:
    return await pg.fetchval(
        "select count(*) from app.upload_reservations where family_unit_id = $1"
        " and expires_at > now()",
        uuid.UUID(family_id),
    )


# Per memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False])
async def test_five_50_mib_upload_urls_into_one_memory_cannot_all_be_issued(
    client, factory, declared
):
    family = await factory.family(["adult", "child"])
    child = family.by_role("child")
    memory = await samples.create_memory(client, child)
    size = 50 * MiB if declared else None

    answers = [
        await samples.upload_url(client, child, memory["id"], "image/jpeg", file_size=size)
        for _ in range(5)
    ]

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 413]
    assert answers[4].json()["code"] == "payload_too_large"
    assert "0 bytes left" in answers[4].json()["detail"]
    assert all(a.json()["max_bytes"] == 50 * MiB for a in answers[:4])


async def test_parallel_upload_urls_into_one_memory_get_exactly_its_room(client, factory, pg):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)

    answers = await asyncio.gather(
        *(
            samples.upload_url(client, family.adult, memory["id"], "image/jpeg", file_size=50 * MiB)
            for _ in range(6)
        )
    )

    assert sorted(a.status_code for a in answers) == [200] * 4 + [413] * 2
    assert await reservations(pg, family.id) == 4


async def test_a_declared_size_reserves_only_that_much(client, factory):
    # A client that says how big each file is can send many at once into one memory.
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)

    answers = [
        await samples.upload_url(client, family.adult, memory["id"], "image/jpeg", file_size=MiB)
        for _ in range(20)
    ]

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["max_bytes"] for a in answers} == {MiB}


# Per family ---------------------------------------------------------------------------------


async def test_the_family_quota_counts_uploads_in_progress(small, factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    first = await samples.create_memory(small, adult)
    second = await samples.create_memory(small, teen)
    assert await storage_of(small, teen) == {"used_bytes": 0, "quota_bytes": QUOTA}

    for member, memory in ((adult, first), (adult, first), (teen, second)):
        ticket = await samples.upload_url(small, member, memory["id"], "image/jpeg", file_size=FILE)
        assert ticket.status_code == 200, ticket.text
    over = await samples.upload_url(small, teen, second["id"], "image/jpeg", file_size=FILE)
    rest = await samples.upload_url(small, teen, second["id"], "image/jpeg")

    assert over.status_code == 413
    assert over.json()["code"] == "quota_exceeded"
    assert f"{QUOTA - 3 * FILE} bytes left" in over.json()["detail"]
    assert rest.status_code == 200
    assert rest.json()["max_bytes"] == QUOTA - 3 * FILE
    assert await storage_of(small, teen) == {"used_bytes": QUOTA, "quota_bytes": QUOTA}
    full = await samples.upload_url(small, adult, first["id"], "image/jpeg")
    assert full.status_code == 413
    assert full.json()["code"] == "quota_exceeded"


async def test_an_expired_reservation_gives_its_room_back(small, factory, pg):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(small, family.adult)
    for _ in range(3):
        ticket = await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")
        assert ticket.status_code == 200
    assert (await storage_of(small, family.adult))["used_bytes"] == MEMORY

    await pg.execute(
        "update app.upload_reservations set expires_at = now() - interval '1 second'"
        " where family_unit_id = $1",
        uuid.UUID(family.id),
    )

    assert (await storage_of(small, family.adult))["used_bytes"] == 0
    again = await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")
    assert again.status_code == 200
    assert again.json()["max_bytes"] == FILE


async def test_an_upload_counts_its_real_size_and_registering_keeps_it_counted(small, factory, pg):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(small, family.adult)
    response = await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")
    ticket = response.json()
    assert (await storage_of(small, family.adult))["used_bytes"] == FILE

    data = padded_jpeg(20 * KiB)
    sent = await samples.send_bytes(small, ticket, data)
    assert sent.status_code == 201, sent.text
    assert (await storage_of(small, family.adult))["used_bytes"] == len(data)

    registered = await samples.register(
        small, family.adult, memory["id"], ticket, mime_type="image/jpeg", file_size=len(data)
    )
    assert registered.status_code == 201, registered.text
    assert (await storage_of(small, family.adult))["used_bytes"] == len(data)
    assert await reservations(pg, family.id) == 0


async def test_registration_over_the_quota_is_refused_and_keeps_no_row(
    small, factory, pg, migrated_database_url, data_dir
):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(small, family.adult)
    ticket = (await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")).json()
    data = padded_jpeg(40 * KiB)
    assert (await samples.send_bytes(small, ticket, data)).status_code == 201
    # The operator lowers the quota below what the family already holds.
    lowered = make_settings(
        migrated_database_url,
        data_dir,
        max_file_bytes=FILE,
        max_memory_bytes=MEMORY,
        family_storage_quota_bytes=30 * KiB,
    )
    application = create_app(lowered)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            response = await samples.register(
                c, family.adult, memory["id"], ticket, mime_type="image/jpeg"
            )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "quota_exceeded"
    rows = await pg.fetchval(
        "select count(*) from public.memory_media where id = $1", uuid.UUID(ticket["media_id"])
    )
    assert rows == 0


async def test_no_quota_when_it_is_zero(migrated_database_url, data_dir, factory):
    settings = make_settings(migrated_database_url, data_dir, family_storage_quota_bytes=0)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            family = await factory.family(["adult"])
            for _ in range(3):
                memory = await samples.create_memory(c, family.adult)
                for _ in range(4):
                    ticket = await samples.upload_url(c, family.adult, memory["id"], "image/png")
                    assert ticket.status_code == 200
            assert await storage_of(c, family.adult) == {
                "used_bytes": 12 * 50 * MiB,
                "quota_bytes": 0,
            }


async def test_the_default_quota_is_100_gib(client, factory):
    family = await factory.family(["adult"])
    assert await storage_of(client, family.adult) == {
        "used_bytes": 0,
        "quota_bytes": 100 * 1024 * MiB,
    }


# The built-in receiver ---------------------------------------------------------------------


async def test_the_receiver_stores_nothing_beyond_the_reservation(small, factory, pg, bucket_dir):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(small, family.adult)
    ticket = (await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")).json()
    before = files_under(bucket_dir)
    # The reservation shrinks under the link (the link still says 64 KiB).
    await pg.execute(
        "update app.upload_reservations set max_bytes = $2 where storage_path = $1",
        ticket["storage_path"],
        10 * KiB,
    )

    over = await samples.send_bytes(small, ticket, padded_jpeg(20 * KiB))

    assert over.status_code == 413, over.text
    assert files_under(bucket_dir) == before
    assert (await samples.send_bytes(small, ticket, padded_jpeg(8 * KiB))).status_code == 201


async def test_the_receiver_refuses_an_upload_without_a_live_reservation(
    small, factory, pg, bucket_dir
):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(small, family.adult)
    ticket = (await samples.upload_url(small, family.adult, memory["id"], "image/jpeg")).json()
    before = files_under(bucket_dir)
    await pg.execute(
        "update app.upload_reservations set expires_at = now() - interval '1 second'"
        " where storage_path = $1",
        ticket["storage_path"],
    )

    response = await samples.send_bytes(small, ticket, padded_jpeg(8 * KiB))

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "link_invalid"
    assert files_under(bucket_dir) == before


async def test_members_cannot_touch_reservations_directly(pg, factory, client):
    # No privilege at all for the API roles: every member-side use goes through functions
    # that take the family from the caller's own profile.
    privileges = await pg.fetch(
        "select grantee, privilege_type from information_schema.role_table_grants"
        " where table_schema = 'app' and table_name = 'upload_reservations'"
        " and grantee in ('anon', 'authenticated')"
    )
    assert privileges == []
    forced = await pg.fetchrow(
        "select relrowsecurity, relforcerowsecurity from pg_class"
        " where oid = 'app.upload_reservations'::regclass"
    )
    assert tuple(forced) == (True, True)
