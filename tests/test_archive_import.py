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
from tests.helpers.factories import Factory, Member

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
