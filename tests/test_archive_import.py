"""Imports: a Google Photos Takeout (or a folder) becomes the family's memories, exactly once.

The Takeout is built here, as Google lays it out: an album folder with its metadata.json, a
"Photos from 2019" folder of loose photos, JSON sidecars in both spellings Google uses, real
JPEGs with EXIF dates, a video, a malformed sidecar, a photo with no sidecar, a file that is
not a photo, and the same photo twice.
"""

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.config import Settings
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD, Factory, Member

ROOT = Path(__file__).resolve().parents[1]
GOOGLE = "Takeout/Google Photos"
ALBUM = f"{GOOGLE}/Summer at the lake"
LOOSE = f"{GOOGLE}/Photos from 2019"
LAKE_DAY = datetime(2019, 8, 3, 10, 30, tzinfo=UTC)
JUNE_14 = datetime(2019, 6, 14, 9, 0, tzinfo=UTC)


def photo(color: tuple[int, int, int], taken: datetime | None = None) -> bytes:
    """A real JPEG, different per colour, with an EXIF DateTimeOriginal when `taken` is given."""
    image = Image.new("RGB", (64, 48), color)
    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def sidecar(taken: datetime, **extra: Any) -> bytes:
    body = {"title": "IMG.JPG", "photoTakenTime": {"timestamp": str(int(taken.timestamp()))}}
    body.update(extra)
    return json.dumps(body).encode()


def takeout_files() -> dict[str, bytes]:
    loose_photo = photo((10, 200, 10))
    return {
        f"{ALBUM}/metadata.json": json.dumps(
            {"title": "Summer at the lake", "description": "Two weeks in Finland"}
        ).encode(),
        f"{ALBUM}/IMG_0001.JPG": photo((200, 10, 10)),
        f"{ALBUM}/IMG_0001.JPG.json": sidecar(
            LAKE_DAY,
            description="Jumping in",
            geoData={"latitude": 61.4978, "longitude": 23.761, "altitude": 0.0},
        ),
        f"{ALBUM}/IMG_0002.JPG": photo((10, 10, 200)),
        f"{ALBUM}/IMG_0002.JPG.supplemental-metadata.json": sidecar(LAKE_DAY),
        f"{ALBUM}/VID_0003.MP4": samples.mp4(),
        f"{ALBUM}/VID_0003.MP4.json": sidecar(LAKE_DAY),
        f"{LOOSE}/IMG_0100.JPG": loose_photo,
        f"{LOOSE}/IMG_0100.JPG.json": sidecar(JUNE_14, description="Grandma's birthday"),
        # The same bytes again, as Google writes a photo that is in two places.
        f"{LOOSE}/IMG_0100(1).JPG": loose_photo,
        f"{LOOSE}/IMG_0100.JPG(1).json": sidecar(JUNE_14),
        f"{LOOSE}/IMG_0102.JPG": photo((120, 120, 0), datetime(2019, 7, 1, 12, 0)),
        f"{LOOSE}/IMG_0102.JPG.json": b"{not json",
        f"{LOOSE}/IMG_0103.JPG": photo((0, 120, 120), datetime(2019, 6, 14, 18, 0)),
        f"{LOOSE}/clip.avi": b"RIFF....AVI LIST",
    }


def takeout_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def upload_archive(client: httpx.AsyncClient, member: Member, data: bytes) -> str:
    target = await client.post(
        f"{API}/storage/upload-url",
        json={
            "purpose": "import",
            "file_name": "takeout.zip",
            "mime_type": "application/zip",
            "file_size": len(data),
        },
        headers=member.headers,
    )
    assert target.status_code == 200, target.text
    upload = target.json()
    sent = await client.put(upload["upload_url"], content=data, headers=upload["headers"])
    assert sent.status_code == 201, sent.text
    return str(upload["storage_path"])


async def run_import(app: FastAPI, client: httpx.AsyncClient, member: Member, data: bytes) -> Any:
    path = await upload_archive(client, member, data)
    started = await client.post(
        f"{API}/families/me/imports", json={"storage_path": path}, headers=member.headers
    )
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued"
    while await app.state.context.imports.run_next():
        pass
    job = await client.get(
        f"{API}/families/me/imports/{started.json()['id']}", headers=member.headers
    )
    assert job.status_code == 200
    return job.json()


async def family_memories(client: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/memories?limit=100", headers=member.headers)
    assert response.status_code == 200
    return list(response.json())


async def test_a_takeout_becomes_one_memory_per_album_and_per_day(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    adult = (await factory.family(["adult"])).adult
    job = await run_import(app, client, adult, takeout_zip(takeout_files()))

    assert job["status"] == "completed", job
    report = job["report"]
    assert report["memories_created"] == 3
    assert report["media_imported"] == 6
    assert report["duplicates_skipped"] == 1
    skipped = {item["name"]: item["reason"] for item in report["files_skipped"]}
    assert skipped[f"{LOOSE}/clip.avi"] == "not a photo or video"
    assert "sidecar is unreadable" in skipped[f"{LOOSE}/IMG_0102.JPG (sidecar)"]
    assert job["progress"]["files_done"] == job["progress"]["files_total"] == 7

    memories = {m["title"]: m for m in await family_memories(client, adult)}
    assert set(memories) == {
        "Summer at the lake",
        "Photos of 14 June 2019",
        "Photos of 1 July 2019",
    }
    lake = memories["Summer at the lake"]
    assert lake["description"] == "Two weeks in Finland"
    assert lake["memory_date"] == "2019-08-03"
    assert lake["status"] == "published"
    assert lake["location"] is None  # the family does not keep locations
    assert sorted(m["file_name"] for m in lake["media"]) == [
        "IMG_0001.JPG",
        "IMG_0002.JPG",
        "VID_0003.MP4",
    ]
    june = memories["Photos of 14 June 2019"]
    # One from its sidecar's date (whichever of its two copies came first), one (no sidecar)
    # from its EXIF date.
    names = sorted(m["file_name"] for m in june["media"])
    assert names in (["IMG_0100.JPG", "IMG_0103.JPG"], ["IMG_0100(1).JPG", "IMG_0103.JPG"])
    assert june["memory_date"] == "2019-06-14"
    # The malformed sidecar: the photo still came in, dated by its EXIF.
    assert [m["file_name"] for m in memories["Photos of 1 July 2019"]["media"]] == ["IMG_0102.JPG"]
    assert all(m["user_id"] == adult.id for m in memories.values())


async def test_the_import_job_hands_its_media_over_in_batches_not_one_at_a_time(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor runs a batch with every slot it has; one file at a time left one idle."""
    adult = (await factory.family(["adult"])).adult
    batches: list[list[str]] = []

    async def record(media_ids: list[uuid.UUID]) -> None:
        batches.append([str(media_id) for media_id in media_ids])

    monkeypatch.setattr(app.state.context.imports, "_on_media", record)

    job = await run_import(app, client, adult, takeout_zip(takeout_files()))

    assert job["status"] == "completed", job
    media = [m["id"] for memory in await family_memories(client, adult) for m in memory["media"]]
    # Each registered file once, all 6 in one batch (fewer than a batch's 32).
    assert [sorted(batch) for batch in batches] == [sorted(media)]


async def test_running_the_same_import_again_adds_nothing(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    adult = (await factory.family(["adult"])).adult
    archive = takeout_zip(takeout_files())
    await run_import(app, client, adult, archive)
    before = await family_memories(client, adult)

    again = await run_import(app, client, adult, archive)

    assert again["status"] == "completed"
    assert again["report"]["memories_created"] == 0
    assert again["report"]["media_imported"] == 0
    assert again["report"]["duplicates_skipped"] == 7
    after = await family_memories(client, adult)
    assert sorted(m["id"] for m in after) == sorted(m["id"] for m in before)
    assert sum(len(m["media"]) for m in after) == 6


async def test_an_album_photo_added_later_joins_the_album_memory(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    adult = (await factory.family(["adult"])).adult
    files = takeout_files()
    await run_import(app, client, adult, takeout_zip(files))
    files[f"{ALBUM}/IMG_0004.JPG"] = photo((90, 90, 90))
    files[f"{ALBUM}/IMG_0004.JPG.json"] = sidecar(datetime(2019, 8, 1, tzinfo=UTC))

    job = await run_import(app, client, adult, takeout_zip(files))

    assert job["report"]["media_imported"] == 1 and job["report"]["memories_created"] == 0
    lake = next(
        m for m in await family_memories(client, adult) if m["title"] == "Summer at the lake"
    )
    assert len(lake["media"]) == 4
    assert lake["memory_date"] == "2019-08-01"  # the earliest photo's day now


async def test_locations_come_in_only_when_the_family_keeps_them(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, pg: asyncpg.Pool
) -> None:
    adult = (await factory.family(["adult"])).adult
    await pg.execute(
        "update public.family_units set keep_location = true where id = $1",
        uuid.UUID(adult.family_id),
    )
    await run_import(app, client, adult, takeout_zip(takeout_files()))
    lake = next(
        m for m in await family_memories(client, adult) if m["title"] == "Summer at the lake"
    )
    assert lake["location"] == "61.49780, 23.76100"


@pytest.mark.parametrize("role", ["teen", "child"])
async def test_only_adults_and_grandparents_import(
    client: httpx.AsyncClient, factory: Factory, role: str
) -> None:
    family = await factory.family(["adult", role])
    member = family.by_role(role)
    refused = await client.post(
        f"{API}/storage/upload-url",
        json={"purpose": "import", "file_name": "t.zip", "mime_type": "application/zip"},
        headers=member.headers,
    )
    assert refused.status_code == 403
    path = await upload_archive(client, family.adult, takeout_zip(takeout_files()))
    started = await client.post(
        f"{API}/families/me/imports", json={"storage_path": path}, headers=member.headers
    )
    assert started.status_code == 403
    assert (
        await client.get(f"{API}/families/me/imports", headers=member.headers)
    ).status_code == 403


async def test_a_grandparent_may_import(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    family = await factory.family(["adult", "grandparent"])
    job = await run_import(app, client, family.by_role("grandparent"), takeout_zip(takeout_files()))
    assert job["status"] == "completed"


async def test_another_familys_imports_are_invisible_and_unusable(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    ours = (await factory.family(["adult"])).adult
    theirs = (await factory.family(["adult"])).adult
    job = await run_import(app, client, theirs, takeout_zip(takeout_files()))

    peek = await client.get(f"{API}/families/me/imports/{job['id']}", headers=ours.headers)
    guess = await client.get(f"{API}/families/me/imports/{uuid.uuid4()}", headers=ours.headers)
    assert peek.status_code == guess.status_code == 404
    assert peek.json()["detail"] == guess.json()["detail"]
    listed = await client.get(f"{API}/families/me/imports", headers=ours.headers)
    assert job["id"] not in {j["id"] for j in listed.json()}

    # Their upload, named by path, cannot be imported into our family.
    their_upload = await upload_archive(client, theirs, takeout_zip(takeout_files()))
    stolen = await client.post(
        f"{API}/families/me/imports", json={"storage_path": their_upload}, headers=ours.headers
    )
    assert stolen.status_code == 404
    assert await family_memories(client, ours) == []


async def test_bad_archives_are_refused_or_fail_with_a_reason(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    adult = (await factory.family(["adult"])).adult
    target = await client.post(
        f"{API}/storage/upload-url",
        json={"purpose": "import", "file_name": "x.zip", "mime_type": "image/jpeg"},
        headers=adult.headers,
    )
    assert target.status_code == 415
    with_memory = await client.post(
        f"{API}/storage/upload-url",
        json={
            "purpose": "import",
            "memory_id": str(uuid.uuid4()),
            "file_name": "x.zip",
            "mime_type": "application/zip",
        },
        headers=adult.headers,
    )
    assert with_memory.status_code == 422
    # Not a zip at all: refused while it uploads.
    upload = (
        await client.post(
            f"{API}/storage/upload-url",
            json={"purpose": "import", "file_name": "x.zip", "mime_type": "application/zip"},
            headers=adult.headers,
        )
    ).json()
    sent = await client.put(upload["upload_url"], content=b"hello, not a zip at all")
    assert sent.status_code == 415
    # Nothing uploaded at that path: a clear 400.
    missing = await client.post(
        f"{API}/families/me/imports",
        json={"storage_path": upload["storage_path"]},
        headers=adult.headers,
    )
    assert missing.status_code == 400
    # A zip whose central directory is cut off: the job fails and says why.
    broken = takeout_zip(takeout_files())
    job = await run_import(app, client, adult, broken[: len(broken) - 30])
    assert job["status"] == "failed"
    assert job["error"] == "the archive is not a readable zip file"
    assert await family_memories(client, adult) == []


# The operator's command, killed half-way and run again ---------------------------------------


def _cli_env(settings: Settings, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(settings.data_dir),
        "JWT_SECRET_KEY": settings.jwt_secret,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
    }


async def test_an_interrupted_cli_import_resumes_without_duplicates(
    client: httpx.AsyncClient,
    factory: Factory,
    settings: Settings,
    migrated_database_url: str,
    pg: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    adult = (await factory.family(["adult"])).adult
    folder = tmp_path / "Camera roll"
    (folder / "Holidays").mkdir(parents=True)
    for index in range(60):
        where = folder / "Holidays" if index % 2 else folder
        (where / f"IMG_{index:04d}.JPG").write_bytes(
            photo((index * 4 % 256, 50, 100), datetime(2020, 1, 1 + index % 3, 12, 0))
        )
    command = [
        sys.executable, "-m", "app.cli", "import", str(folder),
        "--family", adult.family_id, "--as", adult.id,
    ]  # fmt: skip
    env = _cli_env(settings, migrated_database_url)
    first = await asyncio.to_thread(
        subprocess.Popen, command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    family = uuid.UUID(adult.family_id)
    deadline = time.monotonic() + 60
    imported = 0
    while time.monotonic() < deadline and first.poll() is None:
        imported = await pg.fetchval(
            "select count(*) from public.import_items where family_unit_id = $1", family
        )
        if imported >= 5:
            break
        await asyncio.sleep(0.05)
    assert first.poll() is None, "the import finished before it could be interrupted"
    first.send_signal(signal.SIGKILL)
    first.wait()
    status = await pg.fetchval(
        "select status from public.family_imports where family_unit_id = $1", family
    )
    assert status == "running"  # killed: it never got to say otherwise

    second = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["media_imported"] + report["duplicates_skipped"] == 60
    assert report["duplicates_skipped"] >= 5

    media = await pg.fetch(
        "select m.id, i.sha256 from public.memory_media m "
        "join public.import_items i on i.media_id = m.id where m.family_unit_id = $1",
        family,
    )
    assert len(media) == 60
    assert len({row["sha256"] for row in media}) == 60
    titles = sorted(m["title"] for m in await family_memories(client, adult))
    # The sub-folder is an album; loose photos are grouped by day (three days).
    assert titles == sorted(
        [
            "Holidays",
            "Photos of 1 January 2020",
            "Photos of 2 January 2020",
            "Photos of 3 January 2020",
        ]
    )


# A Timeless export's comments and reactions -----------------------------------------------------

SALT = "0f" * 16


def _node(author: str, content: str | None, when: str, *replies: dict[str, Any], **extra: Any):
    node = {
        "id": str(uuid.uuid4()),
        "author": author,
        "content": content,
        "created_at": when,
        "updated_at": when,
        "deleted": content is None,
        "replies": list(replies),
    }
    node.update(extra)
    return node


def timeless_zip(document: dict[str, Any], files: dict[str, bytes]) -> bytes:
    """A bag as the export writes it (the import reads bagit.txt and data/ only)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "bag/bagit.txt", "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
        )
        archive.writestr("bag/data/memories.json", json.dumps(document, ensure_ascii=False))
        for name, data in files.items():
            archive.writestr(f"bag/data/{name}", data)
    return buffer.getvalue()


def export_document(here: list[Member], moved_email: str) -> dict[str, Any]:
    """Two memories of another family: the lake (a photo, threads, reactions) and one of
    words only. Its members: `here[1]` itself (the same account), Joe (whose email a member
    of this family signs in with) and Flo (nobody here)."""
    from app.services.archive_writer import member_email_hash

    same, joe, flo = here[1].id, str(uuid.uuid4()), str(uuid.uuid4())
    members = [
        {"id": same, "display_name": "Teen there", "email_sha256": None},
        {"id": joe, "display_name": "Joe", "email_sha256": member_email_hash(SALT, moved_email)},
        {"id": flo, "display_name": "Great-aunt Flo", "email_sha256": "ab" * 32},
    ]
    deep = _node(flo, "level 4: too deep", "2020-01-01T10:05:00Z")
    deep = _node(joe, "level 3", "2020-01-01T10:04:00Z", deep)
    deep = _node(flo, "level 2", "2020-01-01T10:03:00Z", deep)
    deep = _node(same, "level 1", "2020-01-01T10:02:00Z", deep)
    lake_comments = [
        _node(joe, "What a day!", "2019-07-14T18:00:00Z",
              _node(flo, "Lovely, dear", "2019-07-14T19:00:00Z",
                    _node(same, "Thanks!", "2019-07-15T08:00:00Z"))),
        _node(flo, None, "2019-07-16T08:00:00Z",
              _node(joe, "Reply to a deleted comment", "2019-07-16T09:00:00Z")),
        _node(joe, "top of a deep thread", "2020-01-01T10:01:00Z", deep),
        _node(flo, "no id", "2020-01-02T10:00:00Z", id=None),
    ]  # fmt: skip
    reactions = [
        {"member": joe, "emoji": "❤️", "created_at": "2019-07-14T18:30:00Z"},
        {"member": same, "emoji": "🎉", "created_at": "2019-07-14T18:31:00Z"},
        {"member": flo, "emoji": "👍", "created_at": "2019-07-14T18:32:00Z"},
        {"member": joe, "emoji": "🤡", "created_at": "2019-07-14T18:33:00Z"},
    ]
    memory = {
        "title": "Summer at the lake",
        "memory_date": "2019-07-14",
        "tags": [],
        "description": None,
        "location": None,
        "status": "published",
        "author": joe,
    }
    return {
        "format": "timeless-archive",
        "format_version": 1,
        "member_email_salt": SALT,
        "members": members,
        "memories": [
            {
                **memory,
                "id": str(uuid.uuid4()),
                "comments": lake_comments,
                "reactions": reactions,
                "media": [{"file": "media/lake.jpg", "file_name": "lake.jpg"}],
            },
            {
                **memory,
                "id": str(uuid.uuid4()),
                "title": "Words only",
                "media": [],
                "comments": [_node(flo, "Remember this?", "2018-05-01T12:00:00Z")],
                "reactions": [
                    {"member": same, "emoji": "😂", "created_at": "2018-05-01T13:00:00Z"}
                ],
            },
        ],
    }


async def _threads(client: httpx.AsyncClient, member: Member, memory_id: str) -> list[Any]:
    response = await client.get(
        f"{API}/feed/memories/{memory_id}/comments?include_replies=true&limit=100",
        headers=member.headers,
    )
    assert response.status_code == 200, response.text

    def shape(threads: list[dict[str, Any]]) -> list[Any]:
        return [
            (
                c["content"],
                c["created_at"][:19],
                c["author"]["display_name"],
                c["user_id"],
                c["imported_author_name"],
                shape(c["replies"]),
            )
            for c in threads
        ]

    return shape(response.json())


async def _joined_with(factory: Factory, client: httpx.AsyncClient, adult: Member) -> Member:
    """Joe, who joined this family with the email the archive knows him by."""
    email = f"joe-{uuid.uuid4().hex[:8]}@example.com"
    invite = await factory.invite(adult, "grandparent", email=email.upper())
    accepted = await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={"email": email, "password": PASSWORD, "display_name": "Grandpa Joe"},
    )
    assert accepted.status_code == 201, accepted.text
    return Member(
        id=accepted.json()["user_id"],
        role="grandparent",
        family_id=adult.family_id,
        access_token=accepted.json()["tokens"]["access_token"],
        refresh_token=accepted.json()["tokens"]["refresh_token"],
        email=email,
    )


async def test_an_exports_comments_and_reactions_come_back_by_who_is_a_member_here(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory
) -> None:
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    joe = await _joined_with(factory, client, adult)
    document = export_document([adult, teen], str(joe.email))
    archive = timeless_zip(document, {"media/lake.jpg": photo((1, 2, 3))})

    job = await run_import(app, client, adult, archive)

    assert job["status"] == "completed", job
    report = job["report"]
    memories = {m["title"]: m for m in await family_memories(client, adult)}
    assert set(memories) == {"Summer at the lake", "Words only"}  # one of words only too
    flo = ("Great-aunt Flo", adult.id, "Great-aunt Flo")  # the importer's, under her name
    by_joe = ("Grandpa Joe", joe.id, None)  # his own, by email
    here = (await client.get(f"{API}/families/me", headers=adult.headers)).json()["members"]
    teen_name = next(m["display_name"] for m in here if m["id"] == teen.id)
    by_teen = (teen_name, teen.id, None)  # the same account
    assert await _threads(client, adult, memories["Summer at the lake"]["id"]) == [
        ("What a day!", "2019-07-14T18:00:00", *by_joe, [
            ("Lovely, dear", "2019-07-14T19:00:00", *flo, [
                ("Thanks!", "2019-07-15T08:00:00", *by_teen, []),
            ]),
        ]),
        ("[deleted]", "2019-07-16T08:00:00", *flo, [
            ("Reply to a deleted comment", "2019-07-16T09:00:00", *by_joe, []),
        ]),
        ("top of a deep thread", "2020-01-01T10:01:00", *by_joe, [
            ("level 1", "2020-01-01T10:02:00", *by_teen, [
                ("level 2", "2020-01-01T10:03:00", *flo, [
                    ("level 3", "2020-01-01T10:04:00", *by_joe, []),
                ]),
            ]),
        ]),
    ]  # fmt: skip
    assert await _threads(client, adult, memories["Words only"]["id"]) == [
        ("Remember this?", "2018-05-01T12:00:00", *flo, []),
    ]
    assert report["comments_imported"] == 10
    assert sorted((s["name"], s["reason"]) for s in report["comments_skipped"]) == [
        ('a comment by Great-aunt Flo on "Summer at the lake"', "it has no id in the export"),
        (
            'a comment by Great-aunt Flo on "Summer at the lake"',
            "replies can be at most 3 levels below a comment",
        ),
    ]

    lake = await client.get(
        f"{API}/feed/memories/{memories['Summer at the lake']['id']}/reactions",
        headers=adult.headers,
    )
    assert [(r["user_id"], r["emoji"], r["created_at"][:19]) for r in lake.json()] == [
        (joe.id, "❤️", "2019-07-14T18:30:00"),
        (teen.id, "🎉", "2019-07-14T18:31:00"),
    ]
    assert report["reactions_imported"] == 3  # and the teen's 😂 on the words-only memory
    assert sorted((s["name"], s["reason"]) for s in report["reactions_skipped"]) == [
        (
            '👍 from Great-aunt Flo on "Summer at the lake"',
            "Great-aunt Flo is not a member of this family (no account or email matches)",
        ),
        ('🤡 from Joe on "Summer at the lake"', "not one of the reactions the app has"),
    ]
    # The importer answers for Flo's words: may edit them; Joe's stay his own.
    first = (
        await client.get(
            f"{API}/feed/memories/{memories['Summer at the lake']['id']}/comments"
            "?include_replies=true",
            headers=adult.headers,
        )
    ).json()[0]
    assert first["imported"] is True
    edited = await client.put(
        f"{API}/feed/memories/{first['memory_id']}/comments/{first['replies'][0]['id']}",
        json={"content": "Lovely, dear!"},
        headers=adult.headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["author"]["display_name"] == "Great-aunt Flo"
    not_his = await client.put(
        f"{API}/feed/memories/{first['memory_id']}/comments/{first['id']}",
        json={"content": "changed"},
        headers=adult.headers,
    )
    assert not_his.status_code == 403


async def test_an_import_that_died_while_replaying_comments_runs_again_without_duplicates(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that stops half-way through a memory's comments (an exception here, as a killed
    process would: its transaction never commits) leaves that memory's comments and
    reactions all or none; the next run brings exactly the rest."""
    from app.services import import_service

    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    joe = await _joined_with(factory, client, adult)
    archive = timeless_zip(
        export_document([adult, teen], str(joe.email)), {"media/lake.jpg": photo((4, 5, 6))}
    )
    real = import_service._Replay._reaction
    calls = 0

    async def dies_on_the_second_memory(self: Any, db: Any, report: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:  # the words-only memory's reaction: after its comment was written
            raise RuntimeError("killed")
        await real(self, db, report, *args)

    monkeypatch.setattr(import_service._Replay, "_reaction", dies_on_the_second_memory)
    first = await run_import(app, client, adult, archive)
    assert first["status"] == "failed", first
    monkeypatch.undo()
    memories = {m["title"]: m for m in await family_memories(client, adult)}
    words = memories["Words only"]["id"]
    assert await _threads(client, adult, words) == []  # its comment went with the crash

    again = await run_import(app, client, adult, archive)

    assert again["status"] == "completed", again
    assert again["report"]["comments_imported"] == 1  # the lake's 9 were in already
    assert again["report"]["reactions_imported"] == 1
    assert len(await _threads(client, adult, words)) == 1
    lake = memories["Summer at the lake"]["id"]
    flat = json.dumps(await _threads(client, adult, lake))
    for text in ("What a day!", "Lovely, dear", "Thanks!", "level 3"):
        assert flat.count(f'"{text}"') == 1, text
    reactions = await client.get(f"{API}/feed/memories/{lake}/reactions", headers=adult.headers)
    assert len(reactions.json()) == 2
