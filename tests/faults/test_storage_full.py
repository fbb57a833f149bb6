"""The storage volume is full (issue #7, part 4).

An upload that does not fit must fail cleanly: 507 with a `detail`, no object, no partial
temporary file (and its space given back), no media row; once there is room again the
same flow works without a restart.

Two ways to fill the disk:

- for real: a 2 MiB tmpfs mounted as the storage folder of a real uvicorn (needs the
  right to mount; skipped with the reason otherwise);
- always: in-process, the storage backend's write call raises ENOSPC part-way through
  the file, after some bytes were written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.adapters.storage import local as storage_backend
from tests.faults.server import ApiServer, EmbeddedPostgres
from tests.helpers.factories import Factory, Member
from tests.helpers.media_samples import create_memory, jpeg, register, upload_url

pytestmark = pytest.mark.faults

KiB, MiB = 1024, 1024 * 1024
BUCKET = "memories"


def _photo(size: int) -> bytes:
    """A real JPEG (so every check passes) padded with random bytes to `size`."""
    head = jpeg((64, 64), gps=False)
    return head + os.urandom(size - len(head))


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


async def _media_rows(conn: asyncpg.Connection | asyncpg.Pool, memory_id: str) -> int:
    count = await conn.fetchval(
        "select count(*) from public.memory_media where memory_id = $1::uuid", memory_id
    )
    return int(count)


async def _put(client: httpx.AsyncClient, ticket: dict[str, Any], data: bytes) -> httpx.Response:
    return await client.put(ticket["upload_url"], content=data, headers=ticket["headers"])


async def _post_form(
    client: httpx.AsyncClient, ticket: dict[str, Any], data: bytes
) -> httpx.Response:
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    return await client.post(ticket["upload_url"], files=files)


async def _new_ticket(
    client: httpx.AsyncClient, member: Member, memory_id: str, size: int
) -> dict[str, Any]:
    response = await upload_url(client, member, memory_id, "image/jpeg", file_size=size)
    assert response.status_code == 200, response.text
    ticket: dict[str, Any] = response.json()
    return ticket


def _assert_refused_cleanly(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "full" in detail.lower()


# A real full disk ----------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); in-process test only")
    try:
        yield mountpoint
    finally:
        unmounted = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, timeout=10, check=False
        )
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], timeout=10, check=False)


@pytest.fixture
def full_disk_server(postgres: EmbeddedPostgres, fault_dir: Path) -> Iterator[ApiServer]:
    data_dir = fault_dir / "full-disk"
    with _tmpfs(data_dir / "storage", "2m"), ApiServer(postgres.dsn, data_dir) as server:
        yield server


async def test_upload_to_a_full_volume_fails_with_507_and_leaves_nothing(
    full_disk_server: ApiServer, pg_conn: asyncpg.Connection
) -> None:
    storage = full_disk_server.data_dir / "storage"
    bucket = storage / BUCKET
    photo = _photo(1 * MiB)
    async with httpx.AsyncClient(base_url=full_disk_server.url, timeout=30) as client:
        adult = await Factory(client).register("adult")
        memory = await create_memory(client, adult, title="Too big for the disk")

        # Leave 256 KiB: the photo starts to stream in, then the disk is full.
        (bucket / storage_backend.INCOMING_DIR).mkdir(parents=True, exist_ok=True)
        filler = storage / "filler.bin"
        filler.write_bytes(b"\0" * (_free_bytes(storage) - 256 * KiB))
        free_before = _free_bytes(storage)
        assert free_before < len(photo)

        for send in (_put, _post_form):
            ticket = await _new_ticket(client, adult, memory["id"], len(photo))
            _assert_refused_cleanly(await send(client, ticket, photo))
            assert not (bucket / ticket["storage_path"]).exists()
            assert _files(bucket) == set(), "a partial or temporary file was left behind"
            # The space is really given back (no unlinked file still held open).
            assert _free_bytes(storage) == free_before
            refused = await register(
                client, adult, memory["id"], ticket, mime_type="image/jpeg", file_size=len(photo)
            )
            assert refused.status_code == 400, refused.text
        assert await _media_rows(pg_conn, memory["id"]) == 0

        # Room again: the same flow works, with no restart.
        filler.unlink()
        ticket = await _new_ticket(client, adult, memory["id"], len(photo))
        stored = await _put(client, ticket, photo)
        assert stored.status_code == 201, stored.text
        assert (bucket / ticket["storage_path"]).read_bytes() == photo
        media = await register(
            client, adult, memory["id"], ticket, mime_type="image/jpeg", file_size=len(photo)
        )
        assert media.status_code == 201, media.text
        assert await _media_rows(pg_conn, memory["id"]) == 1
    assert full_disk_server.alive()


# ENOSPC injected at the storage backend's write call (in-process) ----------------------------


class _DiskFullAfter:
    """An anyio file whose writes fail with ENOSPC once `room` bytes have been written."""

    def __init__(self, real: Any, room: int):
        self._real = real
        self._room = room
        self.wrapped = real.wrapped

    async def write(self, data: bytes) -> int:
        if len(data) > self._room:
            await self._real.write(bytes(data[: self._room]))  # a partial write, as the kernel
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return int(await self._real.write(data))

    async def flush(self) -> None:
        await self._real.flush()

    async def __aenter__(self) -> _DiskFullAfter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._real.aclose()


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """From now on, each file the storage backend writes hits ENOSPC after `room` bytes."""
    real_open: Any = storage_backend.anyio.open_file

    async def open_file(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = await real_open(file, mode, *args, **kwargs)
        return _DiskFullAfter(handle, room) if "w" in mode else handle

    monkeypatch.setattr(storage_backend, "anyio", SimpleNamespace(open_file=open_file))


async def test_enospc_while_writing_an_upload_is_a_clean_507(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    pg: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = app.state.context.storage
    assert isinstance(storage, storage_backend.LocalStorageBackend)
    incoming = storage.root / BUCKET / storage_backend.INCOMING_DIR
    adult = await factory.register("adult")
    memory = await create_memory(client, adult, title="Disk fills mid-upload")
    photo = _photo(2 * MiB)  # two 1 MiB buffers: the first write fails part-way
    leftovers = _files(incoming)

    with monkeypatch.context() as patch:
        _disk_full_after(patch, 300 * KiB)
        for send in (_put, _post_form):
            ticket = await _new_ticket(client, adult, memory["id"], len(photo))
            _assert_refused_cleanly(await send(client, ticket, photo))
            assert not storage.local_file(ticket["storage_path"]).exists()
            assert _files(incoming) == leftovers, "the temporary file was not removed"
    assert await _media_rows(pg, memory["id"]) == 0

    ticket = await _new_ticket(client, adult, memory["id"], len(photo))
    assert (await _put(client, ticket, photo)).status_code == 201
