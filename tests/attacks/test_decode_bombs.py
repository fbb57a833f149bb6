"""Decoded-size bombs: small files that would take hundreds of MiB once decoded.

Pixels alone do not bound a decode: 16-bit samples, many frames, a progressive JPEG's
coefficients and decoders that hold several copies all multiply it. `MAX_DECODED_IMAGE_BYTES`
bounds what one picture may cost, at upload (413, nothing kept) and in processing (failed,
with the reason), before anything is decoded. Each test measures this process's peak memory
(from /proc) around the attack, so a decode that slipped through would show.

One bomb of each accepted format: a 16-bit PNG, a progressive JPEG, a GIF of many frames, a
WebP (38 bytes), a HEIC. Run: `pytest tests/attacks/test_decode_bombs.py`.
"""

import json
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from app.adapters.media import MediaLimits, MediaRejected, process_file
from app.adapters.media.images import decode_cost
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import media_samples as samples
from tests.helpers.decode_bombs import Bomb, make_all, png_16_bit_grey
from tests.helpers.factories import Factory, Member
from tests.helpers.memory import MIB, peak_growth

# Small, so that each bomb is several times over it while a decode of it stays cheap.
BUDGET = 64 * MIB
# What a request or a refused job may add to this process besides a decode (buffers, pools).
NOISE = 24 * MIB


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> list[Bomb]:
    return make_all(tmp_path_factory.mktemp("bombs"))


def _ids(bomb: Bomb) -> str:
    return bomb.name


@pytest.fixture(scope="module")
async def budget_app(migrated_database_url: str, data_dir: Path) -> AsyncIterator[FastAPI]:
    settings = make_settings(migrated_database_url, data_dir, max_decoded_image_bytes=BUDGET)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def budget_client(budget_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=budget_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def owner(budget_client: httpx.AsyncClient) -> Member:
    return await Factory(budget_client).register("adult")


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("index", range(5), ids=["png", "jpeg", "gif", "webp", "heic"])
async def test_a_bomb_of_each_format_is_refused_at_upload(
    budget_client: httpx.AsyncClient, owner: Member, bombs: list[Bomb], settings, index: int
) -> None:
    bomb = bombs[index]
    data = bomb.file.read_bytes()
    memory = await samples.create_memory(budget_client, owner)
    ticket = await samples.upload_url(budget_client, owner, memory["id"], bomb.mime)
    assert ticket.status_code == 200, ticket.text
    before = files_under(settings.storage_root)

    with peak_growth() as growth:
        sent = await samples.send_bytes(budget_client, ticket.json(), data)

    assert sent.status_code == 413, sent.text
    assert "too much memory" in sent.json()["detail"]
    assert files_under(settings.storage_root) == before
    assert growth.bytes < NOISE, f"{bomb.name} ({len(data)} bytes): {growth}"


@pytest.mark.parametrize("index", range(5), ids=["png", "jpeg", "gif", "webp", "heic"])
async def test_a_bomb_already_in_storage_fails_processing_undecoded(
    budget_client: httpx.AsyncClient, owner: Member, bombs: list[Bomb], settings, index: int
) -> None:
    # As if it had arrived another way (an older version, a restored backup): the processor
    # checks again before decoding anything.
    bomb = bombs[index]
    memory = await samples.create_memory(budget_client, owner)
    ticket = (await samples.upload_url(budget_client, owner, memory["id"], bomb.mime)).json()
    target = settings.storage_root / "memories" / ticket["storage_path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bomb.file.read_bytes())

    with peak_growth() as growth:
        registered = await samples.register(
            budget_client, owner, memory["id"], ticket, mime_type=bomb.mime
        )
        assert registered.status_code == 201, registered.text
        done = await samples.wait_for_media(budget_client, owner, memory["id"], ticket["media_id"])

    assert done["processing_status"] == "failed"
    assert "too much memory" in done["metadata"]["error"]
    assert growth.bytes < NOISE, f"{bomb.name}: {growth}"


# The decode runs in a process of its own, so nothing else this test process does at the
# same time (another test's app, its threads, the garbage collector) counts as its memory.
_DECODE_AND_MEASURE = """
import json, sys
from pathlib import Path
from PIL import Image
from app.adapters.media import MediaLimits, process_file
from tests.helpers.memory import peak_growth

file, mime, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
with Image.open(file) as image:  # the format's plugin loaded before measuring
    image.size
with peak_growth() as growth:
    result = process_file(file, mime, out, MediaLimits(max_decoded_bytes=2**40))
print(json.dumps({"bytes": growth.bytes, "text": str(growth), "width": result.info.width}))
"""


@pytest.mark.parametrize("index", range(5), ids=["png", "jpeg", "gif", "webp", "heic"])
def test_a_decode_stays_within_its_estimate(bombs: list[Bomb], tmp_path: Path, index: int) -> None:
    """What the budget compares is honest: a real decode never takes more than its estimate.

    Fails if a library upgrade (or a change to the thumbnail code) makes decoding a format
    hold more copies than `app.adapters.media.images` accounts for.
    """
    bomb = bombs[index]
    with Image.open(bomb.file) as image:
        cost = decode_cost(image)
    assert cost.over(BUDGET), f"{bomb.name} is no bomb: {cost.describe()}"

    command = [sys.executable, "-c", _DECODE_AND_MEASURE, str(bomb.file), bomb.mime, str(tmp_path)]
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    growth = json.loads(run.stdout.strip().splitlines()[-1])

    assert growth["width"] == cost.width and (tmp_path / "thumbnail.jpg").stat().st_size > 0
    assert growth["bytes"] <= cost.peak_bytes + NOISE, (
        f"{bomb.name}: {cost.describe()}; " + (growth["text"])
    )


def test_the_budget_is_checked_before_decoding(tmp_path: Path) -> None:
    source = tmp_path / "grey16.png"
    source.write_bytes(png_16_bit_grey(4000, 4000))  # 32 MB of 16-bit samples

    with pytest.raises(MediaRejected, match="too much memory"):
        process_file(source, "image/png", tmp_path, MediaLimits(max_decoded_bytes=16 * MIB))
    process_file(source, "image/png", tmp_path, MediaLimits(max_decoded_bytes=64 * MIB))


# The reviewer's picture ------------------------------------------------------------------------


async def test_a_190_kb_16_bit_png_at_the_pixel_cap_no_longer_costs_a_gigabyte(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """10000×10000 16-bit grey, exactly at the 100 MP cap: 1 054 MiB of server memory before.

    It is 191 MiB of samples once decoded, within the default budget, so it is accepted and
    processed; but the thumbnail is made a band at a time, without the 32-bit copies that
    took the memory to 1 GB.
    """
    data = png_16_bit_grey(10_000, 10_000)
    assert len(data) < 200_000
    adult = await factory.register("adult")
    memory = await samples.create_memory(client, adult)

    with warnings.catch_warnings(), peak_growth() as growth:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        media = await samples.upload(client, adult, memory["id"], data, "image/png")
        done: dict[str, Any] = await samples.wait_for_media(
            client, adult, memory["id"], media["id"], seconds=120
        )

    assert done["processing_status"] == "completed", done
    assert (done["width"], done["height"]) == (10_000, 10_000)
    assert growth.bytes < 300 * MIB, str(growth)
