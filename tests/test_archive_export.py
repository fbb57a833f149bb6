"""The family archive's export (docs/archive.md): the API, the job, the bag, the page, the CLI.

One family with everything a family has (photos, a video, a HEIC, tags, reactions, threads
with a deleted comment, a pet, a former member, a draft, text that looks like markup) is
exported through the real API and background job once per module; the zip is downloaded
through its signed URL, unzipped, and checked by an independent BagIt validator (the
`bagit` package), by reading memories.json, and in headless Chromium over file:// with the
network off. Other tests make their own families.
"""

import asyncio
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import bagit
import httpx
import pytest
from fastapi import FastAPI

from app.context import AppContext
from app.services import archive_writer
from app.services.archive_exporter import ArchiveExporter
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD, Factory, Member
from tests.helpers.feed import comment, react
from tests.helpers.memory import MIB, peak_growth

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags this machine's Chromium needs (docs: no sandbox as root, no background traffic
# that a closed network refuses), and no network at all: every host resolves to nothing and
# every connection goes to a proxy that is not there.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]
HOSTILE_TITLE = '<script>alert("x")</script> Été à la mer & "friends"'


def context_of(app: FastAPI) -> AppContext:
    context: AppContext = app.state.context
    return context


async def start_export(client: httpx.AsyncClient, member: Member, **body: Any) -> httpx.Response:
    return await client.post(f"{API}/families/me/exports", json=body, headers=member.headers)


async def export_job(client: httpx.AsyncClient, member: Member, export_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/families/me/exports/{export_id}", headers=member.headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def run_exports(app: FastAPI) -> None:
    """What the background job does when woken (tests run it by hand: no poll interval)."""
    while await context_of(app).exporter.run_next():
        pass


async def export_and_download(
    client: httpx.AsyncClient, app: FastAPI, member: Member, dest: Path, **body: Any
) -> tuple[dict[str, Any], Path]:
    """POST an export, run the job, download the zip and unzip it; (job, bag folder)."""
    started = await start_export(client, member, **body)
    assert started.status_code == 202, started.text
    await run_exports(app)
    job = await export_job(client, member, started.json()["id"])
    assert job["status"] == "completed", job
    download = await client.get(job["download_url"])
    assert download.status_code == 200, download.text
    zip_path = dest / "export.zip"
    zip_path.write_bytes(download.content)
    with zipfile.ZipFile(zip_path) as archive:
        roots = {name.split("/", 1)[0] for name in archive.namelist()}
        assert len(roots) == 1, roots  # one folder: the bag
        archive.extractall(dest)
    return job, dest / roots.pop()


# The family and its export ---------------------------------------------------------------


@dataclass
class Exported:
    family: list[Member]
    job: dict[str, Any]
    bag: Path
    data: dict[str, Any]
    uploads: dict[str, bytes]  # media id → the bytes uploaded
    titles: list[str]
    draft_title: str
    other_family_title: str
    zip_bytes: int
    zip_path: Path


async def _memory(
    client: httpx.AsyncClient, member: Member, title: str, **body: Any
) -> dict[str, Any]:
    body.setdefault("status", "published")
    return await samples.create_memory(client, member, title=title, **body)


@pytest.fixture(scope="module")
async def exported(
    client: httpx.AsyncClient,
    factory: Factory,
    app: FastAPI,
    pg: asyncpg.Pool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Exported:
    adult = await factory.register("adult", display_name="Ada")
    grandpa = await factory.join(adult, "grandparent")
    teen = await factory.join(adult, "teen")
    leaver = await factory.join(adult, "adult")
    response = await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=adult.headers
    )
    assert response.status_code == 201, response.text

    uploads: dict[str, bytes] = {}
    lake = await _memory(
        client,
        adult,
        "Summer at the lake",
        description="Our first swim.\nThe water was cold!",
        memory_date="2019-07-14",
        location="Lake Geneva",
        tags=["summer", "lake"],
    )
    for data, mime, name in (
        (samples.jpeg((640, 480), orientation=1), "image/jpeg", "IMG_1234.JPG"),
        (samples.png_with_alpha(), "image/png", "drawing.png"),
        (samples.mp4(frames=15), "video/mp4", "swim.mp4"),
        (samples.heic(), "image/heic", "IMG_0001.HEIC"),
    ):
        media = await samples.upload(client, adult, lake["id"], data, mime, file_name=name)
        uploads[media["id"]] = data
    hostile = await _memory(
        client, grandpa, HOSTILE_TITLE, description="<img src=x onerror=alert(1)>", tags=["<b>"]
    )
    beach = samples.jpeg((300, 200))
    media = await samples.upload(client, grandpa, hostile["id"], beach, "image/jpeg", "beach.jpg")
    uploads[media["id"]] = beach
    christmas = await _memory(client, teen, "Christmas at Grandpa's", memory_date="2021-12-25")
    archived = await client.put(
        f"{API}/memories/{christmas['id']}", json={"status": "archived"}, headers=teen.headers
    )
    assert archived.status_code == 200, archived.text
    await _memory(client, leaver, "Ada's birthday", memory_date="2021-03-02")
    draft = await _memory(client, adult, "A secret draft", status="draft")
    assert draft["status"] == "draft"

    await react(client, grandpa, lake["id"], "❤️")
    await react(client, teen, lake["id"], "❤️")
    await react(client, adult, lake["id"], "😂")
    top = await comment(client, grandpa, lake["id"], "What a day! <3")
    reply = await comment(client, adult, lake["id"], "It was cold, Dad.", parent=top["id"])
    await comment(client, teen, lake["id"], "I remember!", parent=reply["id"])
    gone = await comment(client, teen, lake["id"], "Something I regret")
    await comment(client, adult, lake["id"], "Reply to a deleted comment", parent=gone["id"])
    deleted = await client.delete(
        f"{API}/feed/memories/{lake['id']}/comments/{gone['id']}", headers=teen.headers
    )
    assert deleted.status_code == 204, deleted.text
    await comment(client, adult, christmas["id"], "Best Christmas ever")

    left = await client.post(f"{API}/families/me/leave", headers=leaver.headers)
    assert left.status_code == 204, left.text

    other = await factory.register("adult")
    other_memory = await _memory(client, other, "Another family's holiday")
    await samples.upload(
        client, other, other_memory["id"], samples.jpeg((200, 100)), "image/jpeg", "x.jpg"
    )

    dest = tmp_path_factory.mktemp("export")
    job, bag = await export_and_download(client, app, adult, dest)
    data = json.loads((bag / "data" / "memories.json").read_text())
    return Exported(
        family=[adult, grandpa, teen],
        job=job,
        bag=bag,
        data=data,
        uploads=uploads,
        titles=["Summer at the lake", HOSTILE_TITLE, "Ada's birthday", "Christmas at Grandpa's"],
        draft_title=draft["title"],
        other_family_title="Another family's holiday",
        zip_bytes=(dest / "export.zip").stat().st_size,
        zip_path=dest / "export.zip",
    )


# The bag ------------------------------------------------------------------------------------


def test_the_export_is_a_valid_bag(exported: Exported) -> None:
    bag = bagit.Bag(str(exported.bag))
    bag.validate()  # every file there, with its size and SHA-256, and the tag files too
    assert bag.version_info == (1, 0)
    info = bag.info
    assert info["Source-Organization"] == "Timeless Love"
    assert info["Timeless-Archive-Format-Version"] == "1"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", info["Bagging-Date"])
    payload = [p for p in (exported.bag / "data").rglob("*") if p.is_file()]
    octets = sum(p.stat().st_size for p in payload)
    assert info["Payload-Oxum"] == f"{octets}.{len(payload)}"
    assert {"bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt"} <= {
        p.name for p in exported.bag.iterdir()
    }
    # The manifest is also what `sha256sum -c` reads (docs/archive.md).
    checked = subprocess.run(
        ["sha256sum", "--quiet", "-c", "manifest-sha256.txt"],
        cwd=exported.bag,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_one_changed_byte_fails_the_bag(exported: Exported, tmp_path: Path) -> None:
    copy = tmp_path / exported.bag.name
    shutil.copytree(exported.bag, copy)
    photo = next((copy / "data" / "media").rglob("*.jpg"))
    data = bytearray(photo.read_bytes())
    data[len(data) // 2] ^= 0x01
    photo.write_bytes(bytes(data))

    with pytest.raises(bagit.BagValidationError) as failure:
        bagit.Bag(str(copy)).validate()
    assert photo.name in str(failure.value)


def test_memories_json_holds_the_family_and_only_it(exported: Exported) -> None:
    data = exported.data
    assert data["format"] == "timeless-archive"
    assert data["format_version"] == 1
    titles = [memory["title"] for memory in data["memories"]]
    # By date, oldest first; the draft and the other family's memory are not there.
    assert sorted(titles) == sorted(exported.titles)
    assert titles[0] == "Summer at the lake"
    assert titles.index("Ada's birthday") < titles.index("Christmas at Grandpa's")
    assert exported.draft_title not in titles
    assert exported.other_family_title not in json.dumps(data, ensure_ascii=False)
    members = {member["display_name"]: member for member in data["members"]}
    assert members["Ada"]["role"] == "adult"
    assert [m["former_member"] for m in data["members"]].count(True) == 1
    assert [pet["display_name"] for pet in data["pets"]] == ["Rex"]
    # No addresses, but a salted hash of each, so an import can recognise a member by email.
    salt = data["member_email_salt"]
    assert len(salt) == 32
    hashes = {m["email_sha256"] for m in data["members"] if not m["former_member"]}
    assert hashes == {
        archive_writer.member_email_hash(salt, str(member.email)) for member in exported.family
    }
    assert [m["email_sha256"] for m in data["members"] if m["former_member"]] == [None]

    lake = next(m for m in data["memories"] if m["title"] == "Summer at the lake")
    assert lake["memory_date"] == "2019-07-14"
    assert lake["tags"] == ["summer", "lake"]
    assert lake["author"] == members["Ada"]["id"]
    assert [r["emoji"] for r in lake["reactions"]] == ["❤️", "❤️", "😂"]
    # Threads as in the app; a deleted comment keeps its place, not its words.
    first, second = lake["comments"]
    assert first["content"] == "What a day! <3"
    assert first["replies"][0]["content"] == "It was cold, Dad."
    assert first["replies"][0]["replies"][0]["content"] == "I remember!"
    assert second["deleted"] is True and second["content"] is None
    assert second["replies"][0]["content"] == "Reply to a deleted comment"
    christmas = next(m for m in data["memories"] if m["title"] == "Christmas at Grandpa's")
    assert christmas["status"] == "archived"


def test_every_original_is_in_the_bag_byte_for_byte(exported: Exported) -> None:
    media = [item for memory in exported.data["memories"] for item in memory["media"]]
    assert {item["id"] for item in media} == set(exported.uploads)
    for item in media:
        file = exported.bag / "data" / item["file"]
        data = file.read_bytes()
        assert data == exported.uploads[item["id"]], item["file"]
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["size"] == len(data)
        assert re.fullmatch(
            r"media/\d{4}/\d{4}-\d\d-\d\d_[a-z0-9-]+_[0-9a-f]{8}/\d\d_[a-z0-9-]+\.[a-z0-9]+",
            item["file"],
        )
    lake = next(m for m in exported.data["memories"] if m["title"] == "Summer at the lake")
    assert [item["file"].rsplit("/", 1)[1] for item in lake["media"]] == [
        "01_img-1234.jpg",
        "02_drawing.png",
        "03_swim.mp4",
        "04_img-0001.heic",
    ]
    assert lake["media"][0]["file"].startswith("media/2019/2019-07-14_summer-at-the-lake_")


def test_nothing_secret_or_internal_is_exported(exported: Exported, pg: asyncpg.Pool) -> None:
    text = "\n".join(
        p.read_text(errors="replace")
        for p in exported.bag.rglob("*")
        if p.suffix in (".json", ".html", ".txt")
    )
    for member in exported.family:
        assert member.access_token not in text
        assert member.refresh_token not in text
        assert member.email is not None and member.email not in text
    assert "$argon2" not in text
    assert exported.family[0].family_id not in text  # the family's id means nothing outside
    assert "storage_path" not in text and "processing_status" not in text


# The job and the API ------------------------------------------------------------------------


def test_a_completed_job_says_what_it_made(exported: Exported) -> None:
    job = exported.job
    assert job["status"] == "completed"
    assert job["include"] == ["originals"]
    assert job["size_bytes"] == exported.zip_bytes
    assert (
        job["progress"]["files_done"] == job["progress"]["files_total"] == len(exported.uploads) + 3
    )
    assert job["progress"]["bytes_done"] == sum(map(len, exported.uploads.values())) + sum(
        (exported.bag / "data" / name).stat().st_size
        for name in ("README.txt", "memories.json", "index.html")
    )
    expires = datetime.fromisoformat(job["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert job["error"] is None


async def test_progress_and_the_result_are_announced_to_those_who_may_export(
    exported: Exported, pg: asyncpg.Pool
) -> None:
    rows = await pg.fetch(
        "select type, data, roles from app.live_events "
        "where family_unit_id = $1 and type like 'export.%' order by id",
        uuid.UUID(exported.family[0].family_id),
    )
    types = [row["type"] for row in rows]
    assert "export.progress" in types
    assert types[-1] == "export.ready"
    ready = rows[-1]["data"]
    assert ready["export_id"] == exported.job["id"]
    assert ready["status"] == "completed"
    assert ready["progress"] == exported.job["progress"]
    # Teens and children get no export events, as they get no export.
    assert all(sorted(row["roles"]) == ["adult", "grandparent"] for row in rows)


async def test_a_post_answers_202_queued_and_the_exporter_is_woken(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    adult = await factory.register("adult")
    context = context_of(app)
    woken = asyncio.Event()
    original_wake = context.exporter.wake
    context.exporter.wake = woken.set  # type: ignore[method-assign]
    try:
        response = await start_export(client, adult)
    finally:
        context.exporter.wake = original_wake  # type: ignore[method-assign]
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert uuid.UUID(body["id"]) and body["created_at"]
    assert body["download_url"] is None
    assert woken.is_set()
    listed = await client.get(f"{API}/families/me/exports", headers=adult.headers)
    assert [job["id"] for job in listed.json()] == [body["id"]]
    await run_exports(app)


# The page ------------------------------------------------------------------------------------

# Appended to a copy of index.html (the page itself has no script): load every image now,
# not lazily, and once the page has loaded write each image's naturalWidth into the DOM.
_CHECK_SCRIPT = """<script>
for (const img of document.images) img.loading = "eager";
window.addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-natural-width", img.naturalWidth);
  document.body.setAttribute("data-checked", "yes");
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)"
)
def test_index_html_shows_every_memory_offline_in_a_browser(
    exported: Exported, tmp_path: Path
) -> None:
    data = exported.bag / "data"
    page = (data / "index.html").read_text()
    # Nothing outside the folder: no address a browser would fetch over the network.
    assert not re.search(r"""(src|href|poster)=["']?(https?:)?//""", page)
    assert "<script" not in page
    check = data / "check.html"
    check.write_text(page.replace("</body>", _CHECK_SCRIPT + "</body>"))
    try:
        shown = chromium(
            "--virtual-time-budget=15000", "--dump-dom", check.as_uri(), profile=tmp_path / "p1"
        )
    finally:
        check.unlink()
    dom = shown.stdout
    assert 'data-checked="yes"' in dom, shown.stderr[-2000:]
    for title in exported.titles:
        assert html_escape(title) in dom, title
    assert exported.draft_title not in dom
    # Text from the family is text, never markup: the only script is the check's, and every
    # image is one of the family's files.
    tags = _Tags()
    tags.feed(dom)
    assert tags.count("script") == 1
    assert all(src.startswith("media/") for src in tags.attribute_values("img", "src"))
    assert not any(name.startswith("on") for name in tags.attribute_names)
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    photos = [
        item
        for memory in exported.data["memories"]
        for item in memory["media"]
        if item["mime_type"] in ("image/jpeg", "image/png")
    ]
    assert len(widths) == len(photos) == 3
    assert all(width > 0 for width in widths), widths
    # A picture of the page as a phone shows it, kept for people to look at.
    ARTIFACTS.mkdir(exist_ok=True)
    for name, size in (("archive-index-phone.png", "412,2600"), ("archive-index.png", "1280,2000")):
        shot = tmp_path / name
        chromium(
            "--hide-scrollbars",
            f"--window-size={size}",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            (data / "index.html").as_uri(),
            profile=tmp_path / "p2",
        )
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, ARTIFACTS / name)
    print(f"screenshots: {ARTIFACTS}")


def html_escape(text: str) -> str:
    return html.escape(text, quote=False)


class _Tags(HTMLParser):
    """The elements and attributes of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str | None]]] = []
        self.attribute_names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, dict(attrs)))
        self.attribute_names.update(name for name, _ in attrs)

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.seen if name == tag)

    def attribute_values(self, tag: str, attribute: str) -> list[str]:
        return [attrs.get(attribute) or "" for name, attrs in self.seen if name == tag]


# Who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["teen", "child"])
async def test_teens_and_children_may_not_export(
    client: httpx.AsyncClient, factory: Factory, role: str
) -> None:
    family = await factory.family(["adult", role])
    member = family.by_role(role)
    started = await start_export(client, family.adult)
    export_id = started.json()["id"]

    assert (await start_export(client, member)).status_code == 403
    listed = await client.get(f"{API}/families/me/exports", headers=member.headers)
    assert listed.status_code == 403
    one = await client.get(f"{API}/families/me/exports/{export_id}", headers=member.headers)
    assert one.status_code == 403


async def test_a_grandparent_may_export(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, tmp_path: Path
) -> None:
    family = await factory.family(["adult", "grandparent"])
    job, bag = await export_and_download(client, app, family.by_role("grandparent"), tmp_path)
    bagit.Bag(str(bag)).validate()
    # Another member with the right may see it too: it is the family's.
    assert (await export_job(client, family.adult, job["id"]))["status"] == "completed"


async def test_another_familys_export_does_not_exist(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool
) -> None:
    ours = await factory.register("adult")
    theirs = await factory.register("adult")
    started = await start_export(client, ours)
    await run_exports(app)
    export_id = started.json()["id"]

    for guess in (export_id, str(uuid.uuid4())):
        seen = await client.get(f"{API}/families/me/exports/{guess}", headers=theirs.headers)
        assert seen.status_code == 404, seen.text
        assert seen.json()["code"] == "not_found"
    listed = await client.get(f"{API}/families/me/exports", headers=theirs.headers)
    assert listed.json() == []
    # The database says the same to the other family's member, whatever the API does.
    async with pg.acquire() as conn, conn.transaction():
        await conn.execute(
            "select set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": theirs.id}),
        )
        assert await conn.fetchval("select count(*) from public.archive_exports") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "update public.archive_exports set status = 'failed' where id = $1",
                uuid.UUID(export_id),
            )


async def test_the_download_url_serves_only_that_zip(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, tmp_path: Path
) -> None:
    adult = await factory.register("adult")
    job, _bag = await export_and_download(client, app, adult, tmp_path)
    url = httpx.URL(job["download_url"])
    served = await client.get(url)
    assert served.headers["content-type"] == "application/zip"
    assert served.headers["content-disposition"].startswith('attachment; filename="timeless-')
    tampered = url.copy_set_param("signature", "A" * 43)
    assert (await client.get(tampered)).status_code == 403
    # The archives bucket serves exports only: no other path, even signed.
    other = str(url.path).replace(".zip", ".jpg")
    assert (await client.get(url.copy_with(path=other))).status_code in (400, 403)


# One at a time, and what is asked -------------------------------------------------------------


async def test_one_export_at_a_time(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    adult = await factory.register("adult")
    first = await start_export(client, adult)
    second = await start_export(client, adult)
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "export_in_progress"
    assert second.json()["export_id"] == first.json()["id"]
    await run_exports(app)
    third = await start_export(client, adult)
    assert third.status_code == 202, third.text
    await run_exports(app)
    # A family keeps its latest export: the first one (and its file) went.
    listed = (await client.get(f"{API}/families/me/exports", headers=adult.headers)).json()
    assert [job["id"] for job in listed] == [third.json()["id"]]


@pytest.mark.parametrize(
    "body", [{"include": []}, {"include": ["thumbnails"]}, {"include": ["originals", "originals"]}]
)
async def test_what_to_include_is_checked(
    client: httpx.AsyncClient, factory: Factory, body: dict[str, Any]
) -> None:
    adult = await factory.register("adult")
    response = await start_export(client, adult, **body)
    assert response.status_code == 422, response.text
    listed = await client.get(f"{API}/families/me/exports", headers=adult.headers)
    assert listed.json() == []


async def test_previews_go_in_when_asked_and_made(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, tmp_path: Path
) -> None:
    adult = await factory.register("adult")
    memory = await _memory(client, adult, "With a preview", memory_date="2020-05-01")
    original = samples.heic()
    media = await samples.upload(client, adult, memory["id"], original, "image/heic", "a.heic")
    processed = await samples.wait_for_media(client, adult, memory["id"], media["id"])
    assert processed["processing_status"] == "completed", processed
    preview = processed["variants"]["preview"]
    stored = context_of(app).local_storage
    assert stored is not None
    preview_bytes = stored.local_file(
        media["storage_path"].rsplit(".", 1)[0] + "_preview.jpg"
    ).read_bytes()

    job, bag = await export_and_download(
        client, app, adult, tmp_path, include=["originals", "previews"]
    )

    bagit.Bag(str(bag)).validate()
    [record] = json.loads((bag / "data" / "memories.json").read_text())["memories"]
    [item] = record["media"]
    assert item["preview"]["file"].endswith("01_a.preview.jpg")
    assert (item["preview"]["width"], item["preview"]["height"]) == (
        preview["width"],
        preview["height"],
    )
    assert (bag / "data" / item["preview"]["file"]).read_bytes() == preview_bytes
    assert (bag / "data" / item["file"]).read_bytes() == original
    assert item["sha256"] == hashlib.sha256(original).hexdigest()
    page = (bag / "data" / "index.html").read_text()
    assert f'src="{item["preview"]["file"]}"' in page  # a HEIC is shown by its preview
    assert job["progress"]["files_total"] == 2 + 3
    # Previews alone: a light archive, its originals named but not in it.
    (tmp_path / "light").mkdir()
    _job, light = await export_and_download(
        client, app, adult, tmp_path / "light", include=["previews"]
    )
    [record] = json.loads((light / "data" / "memories.json").read_text())["memories"]
    assert record["media"][0]["file"] is None and record["media"][0]["preview"] is not None
    assert not list((light / "data" / "media").rglob("*.heic"))


# The job: crashes, take-overs, errors, stops ----------------------------------------------------


class _Storage:
    """The app's storage, with `read_chunks` replaced by a test's own."""

    def __init__(self, inner: Any, read_chunks: Any) -> None:
        self._inner = inner
        self.read_chunks = read_chunks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def exporter_with(app: FastAPI, read_chunks: Any) -> ArchiveExporter:
    context = context_of(app)
    storage = _Storage(context.storage, read_chunks)
    return ArchiveExporter(context.database, storage, context.archives, context.settings)  # type: ignore[arg-type]


async def _family_with_photo(client: httpx.AsyncClient, factory: Factory, app: FastAPI) -> Member:
    # Exports other tests left queued go first, so the next claim is this test's own.
    await run_exports(app)
    adult = await factory.register("adult")
    memory = await _memory(client, adult, "A photo")
    await samples.upload(client, adult, memory["id"], samples.jpeg((100, 80)), "image/jpeg")
    return adult


async def _job_row(pg: asyncpg.Pool, export_id: str) -> asyncpg.Record:
    row = await pg.fetchrow(
        "select * from public.archive_exports where id = $1", uuid.UUID(export_id)
    )
    assert row is not None
    return row


async def test_an_export_whose_process_died_is_taken_over(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    adult = await _family_with_photo(client, factory, app)
    export_id = (await start_export(client, adult)).json()["id"]
    # What a process that died mid-way leaves: running, under a claim that has run out.
    await pg.execute(
        "update public.archive_exports set status = 'running', attempts = 1, files_done = 1, "
        "claimed_until = now() - interval '1 second' where id = $1",
        uuid.UUID(export_id),
    )

    await run_exports(app)

    job = await export_job(client, adult, export_id)
    assert job["status"] == "completed", job
    assert (await _job_row(pg, export_id))["attempts"] == 2
    download = await client.get(job["download_url"])
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert archive.testzip() is None


async def test_a_run_that_lost_its_claim_records_nothing(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool
) -> None:
    adult = await _family_with_photo(client, factory, app)
    export_id = (await start_export(client, adult)).json()["id"]
    storage = context_of(app).storage

    async def taken_over(path: str) -> AsyncIterator[bytes]:
        # Another process claims the export while this one copies its first file.
        await pg.execute(
            "update public.archive_exports set attempts = attempts + 1 where id = $1",
            uuid.UUID(export_id),
        )
        async for chunk in storage.read_chunks(path):
            yield chunk

    assert await exporter_with(app, taken_over).run_next()

    row = await _job_row(pg, export_id)
    assert (row["status"], row["attempts"], row["storage_path"]) == ("running", 2, None)
    folder = context_of(app).settings.storage_root / "archives" / adult.family_id
    assert not any(folder.rglob("*.zip")) if folder.exists() else True
    await pg.execute(
        "update public.archive_exports set claimed_until = now() - interval '1 second' "
        "where id = $1",
        uuid.UUID(export_id),
    )
    await run_exports(app)  # the "other process" never finished either: taken over again
    assert (await export_job(client, adult, export_id))["status"] == "completed"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("service_unavailable", "The file storage could not be reached"),
        # No pooled connection came free in time: said as such, not blamed on the storage.
        ("database_busy", "The database was too busy to answer"),
    ],
)
async def test_storage_or_database_trouble_is_retried_then_reported(
    client: httpx.AsyncClient,
    factory: Factory,
    app: FastAPI,
    pg: asyncpg.Pool,
    code: str,
    reason: str,
) -> None:
    from app.errors import ServiceUnavailable

    adult = await _family_with_photo(client, factory, app)
    export_id = (await start_export(client, adult)).json()["id"]

    async def unreachable(path: str) -> AsyncIterator[bytes]:
        raise ServiceUnavailable("unavailable", code=code)
        yield b""

    exporter = exporter_with(app, unreachable)
    max_attempts = context_of(app).settings.archive_max_attempts
    for attempt in range(1, max_attempts + 1):
        assert await exporter.run_next()
        row = await _job_row(pg, export_id)
        assert row["attempts"] == attempt
        if attempt < max_attempts:
            # Back in the queue, after a pause that grows with each attempt.
            assert row["status"] == "queued"
            assert row["claimed_until"] > datetime.now(UTC)
            await pg.execute(
                "update public.archive_exports set claimed_until = null where id = $1",
                uuid.UUID(export_id),
            )
    job = await export_job(client, adult, export_id)
    assert job["status"] == "failed"
    assert job["error"] == reason
    assert job["download_url"] is None
    # A failed export does not block the next one.
    assert (await start_export(client, adult)).status_code == 202
    await run_exports(app)


async def test_an_export_whose_every_attempt_died_fails_with_a_reason(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool
) -> None:
    adult = await factory.register("adult")
    export_id = (await start_export(client, adult)).json()["id"]
    attempts = context_of(app).settings.archive_max_attempts
    await pg.execute(
        "update public.archive_exports set status = 'running', attempts = $2, "
        "claimed_until = now() - interval '1 second' where id = $1",
        uuid.UUID(export_id),
        attempts,
    )

    await run_exports(app)

    job = await export_job(client, adult, export_id)
    assert job["status"] == "failed"
    assert job["error"] == f"The export did not finish after {attempts} attempts"


async def test_a_stopping_server_hands_its_export_back(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool
) -> None:
    adult = await _family_with_photo(client, factory, app)
    export_id = (await start_export(client, adult)).json()["id"]
    copying = asyncio.Event()

    async def stuck(path: str) -> AsyncIterator[bytes]:
        copying.set()
        await asyncio.Event().wait()  # a slow disk, until the server stops
        yield b""

    run = asyncio.create_task(exporter_with(app, stuck).run_next())
    await asyncio.wait_for(copying.wait(), timeout=30)
    assert (await _job_row(pg, export_id))["status"] == "running"
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    row = await _job_row(pg, export_id)
    # Queued again at once, and the interrupted run is not counted against it.
    assert (row["status"], row["attempts"], row["claimed_until"]) == ("queued", 0, None)
    incoming = context_of(app).settings.storage_root / "archives" / ".incoming"
    assert not any(incoming.glob("*.part")) if incoming.exists() else True
    await run_exports(app)
    assert (await export_job(client, adult, export_id))["status"] == "completed"


# Expiry and missing files -----------------------------------------------------------------------


async def test_exports_are_removed_when_they_expire(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    adult = await factory.register("adult")
    job, _bag = await export_and_download(client, app, adult, tmp_path)
    context = context_of(app)
    zip_file = context.local_archives.local_file(  # type: ignore[union-attr]
        (await _job_row(pg, job["id"]))["storage_path"]
    )
    assert zip_file.is_file()
    # A file no job names, as a crash between storing and recording would leave, a day old.
    orphan = zip_file.parent.parent / f"{uuid.uuid4()}" / "timeless-x-2020-01-01.zip"
    orphan.parent.mkdir()
    orphan.write_bytes(b"PK")
    day_ago = datetime.now().timestamp() - 25 * 3600
    os.utime(orphan, (day_ago, day_ago))

    assert await context.exporter.sweep() >= 1
    assert zip_file.is_file() and not orphan.exists()  # not expired yet: kept

    await pg.execute(
        "update public.archive_exports set expires_at = now() - interval '1 second' where id = $1",
        uuid.UUID(job["id"]),
    )
    await context.exporter.sweep()

    assert not zip_file.exists()
    gone = await client.get(f"{API}/families/me/exports/{job['id']}", headers=adult.headers)
    assert gone.status_code == 404
    assert (await client.get(job["download_url"])).status_code == 404


async def test_a_file_missing_from_storage_is_named_not_fatal(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI, tmp_path: Path
) -> None:
    adult = await factory.register("adult")
    memory = await _memory(client, adult, "Two photos")
    kept = await samples.upload(
        client, adult, memory["id"], samples.jpeg((120, 90)), "image/jpeg", "kept.jpg"
    )
    lost = await samples.upload(
        client, adult, memory["id"], samples.jpeg((90, 120)), "image/jpeg", "lost.jpg"
    )
    context_of(app).local_storage.local_file(lost["storage_path"]).unlink()  # type: ignore[union-attr]

    _job, bag = await export_and_download(client, app, adult, tmp_path)

    bagit.Bag(str(bag)).validate()
    [record] = json.loads((bag / "data" / "memories.json").read_text())["memories"]
    by_id = {item["id"]: item for item in record["media"]}
    assert by_id[kept["id"]]["file"] is not None
    assert by_id[lost["id"]]["file"] is None
    assert by_id[lost["id"]]["sha256"] is None
    assert by_id[lost["id"]]["missing"] == archive_writer.MISSING
    assert archive_writer.MISSING in (bag / "data" / "index.html").read_text()


# The command line -------------------------------------------------------------------------------


def _cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "DATA_DIR": str(settings.data_dir),
        "JWT_SECRET_KEY": settings.jwt_secret,
        "LOG_LEVEL": "INFO",
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_timeless_export_writes_the_same_bag_for_operators(
    exported: Exported, app: FastAPI, tmp_path: Path
) -> None:
    settings = context_of(app).settings
    out = tmp_path / "family.zip"
    family = exported.family[0].family_id

    done = await asyncio.to_thread(_cli, settings, "export", "--family", family, "--out", str(out))

    assert done.returncode == 0, done.stderr
    assert not out.with_name("family.zip.part").exists()
    with zipfile.ZipFile(out) as archive:
        archive.extractall(tmp_path / "unzipped")
    [bag] = (tmp_path / "unzipped").iterdir()
    bagit.Bag(str(bag)).validate()
    data = json.loads((bag / "data" / "memories.json").read_text())
    assert [m["title"] for m in data["memories"]] == [m["title"] for m in exported.data["memories"]]
    # The log line says what was written; no bar when standard error is not a terminal.
    assert '"archive written"' in done.stdout
    assert "\r[" not in done.stderr


async def test_timeless_export_refuses_an_unknown_family(app: FastAPI, tmp_path: Path) -> None:
    settings = context_of(app).settings
    out = tmp_path / "nobody.zip"
    done = await asyncio.to_thread(
        _cli, settings, "export", "--family", str(uuid.uuid4()), "--out", str(out)
    )
    assert done.returncode != 0
    assert "there is no family" in done.stderr
    assert not out.exists() and not out.with_name("nobody.zip.part").exists()
    done = await asyncio.to_thread(_cli, settings, "export", "--family", "42", "--out", str(out))
    assert done.returncode != 0 and "is not a family id" in done.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_progress_bar_is_drawn_in_place_on_a_terminal() -> None:
    from app.cli import ProgressBar

    terminal = _Terminal()
    bar = ProgressBar(terminal)
    await bar.report(archive_writer.Progress(files_done=5, files_total=10, bytes_done=2_500_000))
    await bar.report(archive_writer.Progress(files_done=10, files_total=10, bytes_done=5_000_000))
    bar.done()
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[")
    assert "50%" in drawn and "5/10 files" in drawn and "2.5 MB" in drawn
    assert "100%" in drawn and drawn.endswith("\n")
    quiet = io.StringIO()  # not a terminal: nothing at all
    silent = ProgressBar(quiet)
    await silent.report(archive_writer.Progress(files_done=1, files_total=2))
    silent.done()
    assert quiet.getvalue() == ""


# Memory -----------------------------------------------------------------------------------------


async def _many_files(
    pg: asyncpg.Pool, app: FastAPI, member: Member, count: int, size: int
) -> None:
    """`count` stored files of `size` bytes, 20 to a memory, written straight to the store."""
    family = uuid.UUID(member.family_id)
    storage = context_of(app).local_storage
    assert storage is not None
    memory_id = uuid.uuid4()
    for index in range(count):
        if index % 20 == 0:
            memory_id = await pg.fetchval(
                "insert into public.memories (family_unit_id, user_id, title, status, memory_date)"
                " values ($1, $2, $3, 'published', $4) returning id",
                family,
                uuid.UUID(member.id),
                f"Memory {index // 20}",
                date(2000 + index // 1000, 1 + index % 12, 1),
            )
        media_id = uuid.uuid4()
        path = f"{family}/{memory_id}/{media_id}.jpg"
        file = storage.local_file(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"\xff\xd8\xff" + os.urandom(size - 3))
        await pg.execute(
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, "
            "file_name, mime_type, file_size, processing_status) "
            "values ($1, $2, $3, $4, $5, 'image/jpeg', $6, 'completed')",
            media_id,
            memory_id,
            family,
            path,
            f"photo-{index}.jpg",
            size,
        )


async def _export_peak(app: FastAPI, member: Member, out: Path) -> int:
    context = context_of(app)
    with peak_growth() as growth:
        async with archive_writer.family_snapshot(
            context.database, uuid.UUID(member.family_id)
        ) as snapshot:
            with out.open("wb") as file:
                await archive_writer.write_archive(snapshot, context.storage, file)
    return growth.bytes


async def test_memory_stays_flat_whatever_the_number_of_files(
    factory: Factory, app: FastAPI, pg: asyncpg.Pool, tmp_path: Path
) -> None:
    small, large = await factory.register("adult"), await factory.register("adult")
    await _many_files(pg, app, small, 100, 64 * 1024)
    await _many_files(pg, app, large, 2000, 64 * 1024)

    peak_small = await _export_peak(app, small, tmp_path / "small.zip")
    peak_large = await _export_peak(app, large, tmp_path / "large.zip")

    print(
        f"peak growth: 100 files {peak_small / MIB:.1f} MiB, 2000 files {peak_large / MIB:.1f} MiB"
    )
    # Twenty times the files (125 MiB of them) cost no more than a few MiB more: nothing is
    # kept per file but a line in a spooled file. Generous, for a garbage-collected process.
    assert peak_large < peak_small + 24 * MIB
    with zipfile.ZipFile(tmp_path / "large.zip") as archive:
        assert len(archive.namelist()) == 2000 + 3 + 4


# The round trip --------------------------------------------------------------------------------


async def test_an_export_imported_into_a_new_family_brings_back_memories_and_files(
    exported: Exported, client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    """Export -> import into a new family: the same memories (also those with no files), dates,
    files by checksum, comments with their threads, dates and authors, and the reactions of
    those who are members of the new family. Grandpa moves with the family (same email, a new
    account); the others' comments come back under their names, their reactions are reported.

    The module's last test, as grandpa leaves the exported family here."""
    from tests.test_archive_import import family_memories, run_import

    _adult, grandpa, teen = exported.family
    newcomer = await factory.register("adult", display_name="Newcomer")
    left = await client.post(f"{API}/families/me/leave", headers=grandpa.headers)
    assert left.status_code == 204, left.text  # his email is free again
    invite = await factory.invite(newcomer, "grandparent", email=grandpa.email)
    accepted = await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={"email": grandpa.email, "password": PASSWORD, "display_name": "Grandpa Joe"},
    )
    assert accepted.status_code == 201, accepted.text
    moved_grandpa = accepted.json()["user_id"]

    zip_bytes = exported.zip_path.read_bytes()
    job = await run_import(app, client, newcomer, zip_bytes)
    assert job["status"] == "completed", job
    report = job["report"]

    imported = {m["title"]: m for m in await family_memories(client, newcomer)}
    original = {m["title"]: m for m in exported.data["memories"]}
    assert set(imported) == set(original)  # also the memories with no files
    names = {m["id"]: m["display_name"] for m in exported.data["members"]}
    member_here = {str(grandpa.id): moved_grandpa}
    for title, memory in original.items():
        here = imported[title]
        assert here["memory_date"] == memory["memory_date"], title
        # Identical files, by checksum: what the export wrote is what the family now has.
        assert sorted(m["sha256"] for m in here["media"]) == sorted(
            m["sha256"] for m in memory["media"]
        ), title
        comments = await client.get(
            f"{API}/feed/memories/{here['id']}/comments?include_replies=true&limit=100",
            headers=newcomer.headers,
        )
        assert comments.status_code == 200, comments.text
        assert _threads_here(comments.json()) == _threads_there(
            memory["comments"], names, member_here, newcomer.id
        ), title
        reactions = await client.get(
            f"{API}/feed/memories/{here['id']}/reactions", headers=newcomer.headers
        )
        assert sorted(
            (r["user_id"], r["emoji"], _at(r["created_at"])) for r in reactions.json()
        ) == sorted(
            (member_here[r["member"]], r["emoji"], _at(r["created_at"]))
            for r in memory["reactions"]
            if r["member"] in member_here
        ), title

    all_comments = [c for m in original.values() for c in _flat(m["comments"])]
    assert report["comments_imported"] == len(all_comments) == 6
    assert report["comments_skipped_total"] == 0
    assert report["reactions_imported"] == 1  # grandpa's heart; the teen's and Ada's are not
    assert report["reactions_skipped_total"] == 2
    assert sorted(r["name"] for r in report["reactions_skipped"]) == sorted(
        [
            f'❤️ from {names[str(teen.id)]} on "Summer at the lake"',
            '😂 from Ada on "Summer at the lake"',
        ]
    )
    assert all("not a member of this family" in r["reason"] for r in report["reactions_skipped"])

    # The same archive again adds nothing: no memory, file, comment or reaction twice.
    again = await run_import(app, client, newcomer, zip_bytes)
    assert again["status"] == "completed", again
    assert again["report"]["memories_created"] == 0
    assert again["report"]["media_imported"] == 0
    assert again["report"]["comments_imported"] == 0
    assert again["report"]["reactions_imported"] == 0
    assert sorted(m["id"] for m in await family_memories(client, newcomer)) == sorted(
        m["id"] for m in imported.values()
    )
    lake = imported["Summer at the lake"]
    comments = await client.get(
        f"{API}/feed/memories/{lake['id']}/comments?include_replies=true&limit=100",
        headers=newcomer.headers,
    )
    assert len(_flat(comments.json())) == 5


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _flat(threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for t in threads for c in [t, *_flat(t["replies"])]]


def _threads_here(threads: list[dict[str, Any]]) -> list[Any]:
    """What the API answers, as (text, written, author's name, user, deleted, replies)."""
    return [
        (
            c["content"],
            _at(c["created_at"]),
            c["author"]["display_name"],
            c["user_id"],
            c["deleted_at"] is not None,
            c["imported"],
            _threads_here(c["replies"]),
        )
        for c in threads
    ]


def _threads_there(
    threads: list[dict[str, Any]], names: dict[str, str], member_here: dict[str, str], importer: str
) -> list[Any]:
    """The same, expected from memories.json: a member here writes their own words (under
    their name here); anyone else's words are the importer's, under the archive's name."""
    return [
        (
            "[deleted]" if c["deleted"] else c["content"],
            _at(c["created_at"]),
            "Grandpa Joe" if c["author"] in member_here else names[c["author"]],
            member_here.get(c["author"], importer),
            c["deleted"],
            True,
            _threads_there(c["replies"], names, member_here, importer),
        )
        for c in threads
    ]
