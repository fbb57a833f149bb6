"""The built-in storage: files on this server's disk, served through URLs it signs.

`LocalStorageBackend` keeps objects as files under `<storage_root>/<bucket>/<path>` and
serves them itself through URLs signed with an HMAC key derived from the JWT secret.
Each URL is bound to one operation, one object path and an expiry; an upload URL is also
bound to the declared MIME type and the largest size accepted. The signature also covers the
signing epoch of the family the object belongs to (the first segment of its path), read
through `key_epochs` when signing and when verifying: moving a family's epoch on (a member
was removed) voids every link of that family handed out before. Objects are write-once:
an upload streams into a temporary file that becomes visible only when it is complete,
within its limit and accepted by the caller's check, and never replaces an existing file.

Object paths are always relative, `/`-separated, without `.`/`..` or empty segments, and
are resolved and checked to stay inside the bucket folder before any file is touched.
"""

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import quote, urlencode

import anyio

from app.adapters.storage.base import (
    READ_CHUNK_BYTES,
    ObjectStat,
    UploadTarget,
    check_object_path,
)
from app.adapters.storage.signing import DOWNLOAD, UPLOAD, UploadGrant, UrlSigner, expiry
from app.errors import (
    LINK_INVALID,
    Conflict,
    Forbidden,
    InsufficientStorage,
    Invalid,
    NotFound,
    PayloadTooLarge,
)

# Uploads in progress ------------------------------------------------------------------------------

# Uploads are kept in a hidden folder of the bucket until complete; the orphan sweep lists
# them like any other unreferenced object, so an abandoned upload is removed in time too.
INCOMING_DIR = ".incoming"
# Signed download URLs kept for reuse within their expiry window (a few MB at most).
MAX_CACHED_DOWNLOAD_URLS = 20_000
_WRITE_BUFFER_BYTES = 1024 * 1024
# The SHA-256 taken while an upload streamed in travels with the file as an extended
# attribute (link() keeps it, so it is there the moment the object is). On a filesystem
# without user xattrs it is simply unknown, and processing computes it.
_SHA256_XATTR = "user.timeless.sha256"


_INVALID_LINK = "Invalid or expired link"
ALREADY_UPLOADED = "A file was already uploaded with this link; ask for a new upload URL"

# The current signing epoch of each family named (by the first segment of object paths);
# a family left out is at epoch 0.
KeyEpochs = Callable[[Collection[str]], Awaitable[Mapping[str, int]]]


class LocalStorageBackend:
    """Files under `<root>/<bucket>/`, served through signed URLs of this server."""

    def __init__(
        self,
        root: Path,
        *,
        bucket: str,
        public_url: str | Callable[[], str],
        secret: str,
        key_epochs: KeyEpochs | None = None,
    ):
        self.root = root
        self.bucket = bucket
        # A callable when the address depends on the request being served (app.context).
        self._public_url = public_url
        self._bucket_dir = (root / bucket).resolve()
        self._incoming = self._bucket_dir / INCOMING_DIR
        self._signer = UrlSigner(secret)
        self._key_epochs = key_epochs
        # (base URL, expiry, epochs) → path → signed download URL; see signed_download_urls.
        self._download_urls: dict[tuple[str, int, frozenset[tuple[str, int]]], dict[str, str]]
        self._download_urls = {}
        self._cached_urls = 0

    @property
    def public_url(self) -> str:
        """Where the objects are served, as the client being answered reaches this server."""
        url = self._public_url if isinstance(self._public_url, str) else self._public_url()
        return url.rstrip("/")

    # The StorageBackend interface ------------------------------------------------------------

    async def create_upload_url(
        self, path: str, *, mime_type: str, max_bytes: int, expires_in: int
    ) -> UploadTarget:
        check_object_path(path)
        expires = int(time.time()) + expires_in
        epochs = await self._epochs([path])
        signature = self._signer.sign(
            UPLOAD,
            self.bucket,
            path,
            str(expires),
            mime_type,
            str(max_bytes),
            *_epoch_part(epochs, path),
        )
        query = {
            "expires": expires,
            "type": mime_type,
            "max_bytes": max_bytes,
            "signature": signature,
        }
        return UploadTarget(
            url=f"{self._object_url(path)}?{urlencode(query)}",
            method="PUT",
            headers={"Content-Type": mime_type},
            expires_in=expires_in,
        )

    async def stat(self, path: str) -> ObjectStat | None:
        file = self._file(path)
        try:
            st = await asyncio.to_thread(file.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectStat(
            path=path,
            size=st.st_size,
            modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
            etag=etag_for(st),
            sha256=await asyncio.to_thread(_read_sha256, file),
        )

    async def signed_download_urls(
        self, paths: Sequence[str], *, expires_in: int
    ) -> dict[str, str]:
        expires = expiry(expires_in, time.time())
        epochs = await self._epochs(paths)
        base = f"{self.public_url}/{quote(self.bucket)}/"
        # Within one expiry window every URL of an object (at one epoch) is the same URL
        # (signing.expiry), so each is signed once: a feed page signs ~60, again and again.
        # Kept by what a URL depends on besides its path (the address, the window and the
        # epochs of the families named, each URL taking its own family's), then by path: a
        # page already signed costs one look-up per path. Only a checked path is ever kept,
        # so one found needs no check again.
        key = (base, expires, frozenset(epochs.items()))
        known = self._download_urls.get(key)
        if known is None:
            if self._cached_urls >= MAX_CACHED_DOWNLOAD_URLS:
                self._forget_download_urls()  # the next window's URLs are new ones anyway
            known = self._download_urls[key] = {}
        # zip/map: the look-ups run in C, not one Python step per path.
        urls: dict[str, str | None] = dict(zip(paths, map(known.get, paths), strict=True))
        if None in urls.values():
            stamp = str(expires)
            for path, url in urls.items():
                if url is None:
                    check_object_path(path)
                    epoch = _epoch_part(epochs, path)
                    signature = self._signer.sign(DOWNLOAD, self.bucket, path, stamp, *epoch)
                    # Both values are URL-safe as they are (a number; base64url): no encoding.
                    # A checked path is only [A-Za-z0-9._-] and "/": quoting changes nothing.
                    urls[path] = known[path] = f"{base}{path}?expires={stamp}&signature={signature}"
                    self._cached_urls += 1
            if self._cached_urls > MAX_CACHED_DOWNLOAD_URLS:
                self._forget_download_urls()
        return cast(dict[str, str], urls)  # every None was replaced

    async def download_to(self, path: str, dest: Path) -> None:
        source = self._file(path)

        def copy() -> None:
            try:
                # Same disk: a hard link costs nothing and keeps the bytes even if the
                # object is deleted meanwhile. Elsewhere (another filesystem): a copy.
                os.link(source, dest)
            except FileNotFoundError:
                raise NotFound("The stored file is missing") from None
            except OSError:
                shutil.copyfile(source, dest)

        await asyncio.to_thread(copy)

    async def upload_file(self, path: str, src: Path, content_type: str) -> None:
        final = self._file(path)

        def store() -> None:
            tmp = self._new_incoming_file()
            try:
                shutil.copyfile(src, tmp)
                _fsync_file(tmp)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)

        await asyncio.to_thread(store)

    async def read_chunks(self, path: str) -> AsyncIterator[bytes]:
        file = self._file(path)

        def open_and_read() -> tuple[BinaryIO, int, bytes]:
            handle = file.open("rb")
            return handle, os.fstat(handle.fileno()).st_size, handle.read(READ_CHUNK_BYTES)

        try:
            # Opening and the first read in one trip to a thread: most photos are a few chunks.
            handle, left, chunk = await asyncio.to_thread(open_and_read)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound("The stored file is missing") from None
        try:
            while chunk:
                yield chunk
                left -= len(chunk)
                # Objects are write-once: the size read at opening says when the end is
                # reached, without one more trip to a thread to read nothing.
                if left <= 0:
                    break
                chunk = await asyncio.to_thread(handle.read, READ_CHUNK_BYTES)
        finally:
            handle.close()

    @asynccontextmanager
    async def staged_object(self, path: str, content_type: str) -> AsyncIterator[Path]:
        final = self._file(path)
        # In the bucket's own folder, so moving it into place is a rename, not a copy.
        tmp = await asyncio.to_thread(self._new_incoming_file)
        try:
            yield tmp
            await asyncio.to_thread(self._move_into_place, tmp, final)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("Storage is full; the file was not kept") from exc
            raise
        finally:
            # Not in a thread, as in `receive`: a cancelled job must not leave the file behind.
            tmp.unlink(missing_ok=True)

    async def remove(self, paths: Sequence[str]) -> None:
        files = [self._file(path) for path in paths]

        def unlink_all() -> None:
            for file in files:
                file.unlink(missing_ok=True)
                # Drop the memory's and family's folders once empty, so they do not pile up.
                for folder in (file.parent, file.parent.parent):
                    if folder in (self._bucket_dir, self._incoming):
                        break
                    with contextlib.suppress(OSError):
                        folder.rmdir()

        await asyncio.to_thread(unlink_all)

    async def list_objects(self, older_than: datetime) -> AsyncIterator[str]:
        cutoff = older_than.timestamp()
        for folder in await asyncio.to_thread(self._folders):
            for path in await asyncio.to_thread(self._old_files_in, folder, cutoff):
                yield path

    async def configuration_problem(self) -> str | None:
        try:
            await asyncio.to_thread(self._bucket_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            return f"the storage folder {self._bucket_dir} cannot be created ({exc.strerror})"
        return None

    # Built-in only: receiving uploads and serving downloads --------------------------------

    async def verify_upload(self, path: str, params: Mapping[str, str]) -> UploadGrant:
        """The upload a URL allows, or Forbidden (403) if tampered, expired, for another path
        or signed before the family's signing epoch moved on."""
        epoch = _epoch_part(await self._epochs([path]), path)
        try:
            expires, mime_type = params["expires"], params["type"]
            max_bytes, signature = params["max_bytes"], params["signature"]
            valid = self._signer.verify(
                signature, UPLOAD, self.bucket, path, expires, mime_type, max_bytes, *epoch
            )
            if not valid or int(expires) < time.time():
                raise Forbidden(_INVALID_LINK, code=LINK_INVALID)
            return UploadGrant(path=path, mime_type=mime_type, max_bytes=int(max_bytes))
        except (KeyError, ValueError):
            raise Forbidden(_INVALID_LINK, code=LINK_INVALID) from None

    async def verify_download(self, path: str, params: Mapping[str, str]) -> int:
        """Seconds the download URL stays valid, or Forbidden (403)."""
        epoch = _epoch_part(await self._epochs([path]), path)
        try:
            expires, signature = params["expires"], params["signature"]
            valid = self._signer.verify(signature, DOWNLOAD, self.bucket, path, expires, *epoch)
            remaining = int(expires) - int(time.time())
        except (KeyError, ValueError):
            raise Forbidden(_INVALID_LINK, code=LINK_INVALID) from None
        if not valid or remaining < 0:
            raise Forbidden(_INVALID_LINK, code=LINK_INVALID)
        return remaining

    async def receive(
        self,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        inspect: Callable[[Path], None] | None = None,
    ) -> ObjectStat:
        """Stream an upload into place: complete, within `max_bytes`, accepted by `inspect`.

        Memory stays constant (one buffer of 1 MiB). On any failure — too large (413), empty
        (400), refused by `inspect`, disk full (507), client gone — the temporary file is
        removed and nothing is kept. An existing object is never replaced (409). The bytes'
        SHA-256 is taken as they pass (no second read) and kept with the file.
        """
        final = self._file(path)
        tmp = await asyncio.to_thread(self._new_incoming_file)
        digest = hashlib.sha256()
        try:
            size = 0
            async with await anyio.open_file(tmp, "wb") as out:
                buffer = bytearray()
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"The file is larger than {max_bytes} bytes")
                    buffer += chunk
                    if len(buffer) >= _WRITE_BUFFER_BYTES:
                        # Hashed by the write's thread, off the event loop (~2 ms per MiB).
                        await asyncio.to_thread(digest.update, buffer)
                        # Awaited: the write is done before the buffer is reused.
                        await out.write(buffer)
                        buffer.clear()
                digest.update(buffer)
                await out.write(buffer)
                await out.flush()
                # Durable before it becomes visible: a crash never leaves a torn object.
                await asyncio.to_thread(os.fsync, out.wrapped.fileno())
            if size == 0:
                raise Invalid("The file is empty")
            if inspect is not None:
                await asyncio.to_thread(inspect, tmp)
            await asyncio.to_thread(_write_sha256, tmp, digest.hexdigest())
            await asyncio.to_thread(self._publish, tmp, final)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from exc
            raise
        finally:
            # Not in a thread: when a shutdown cancels the upload, the loop may end before a
            # thread would run (an unlink is one quick system call).
            tmp.unlink(missing_ok=True)
        stat = await self.stat(path)
        assert stat is not None
        return stat

    def local_file(self, path: str) -> Path:
        """Where an object's file is (or would be), for serving it."""
        return self._file(path)

    # Internals -----------------------------------------------------------------------------

    async def _epochs(self, paths: Sequence[str]) -> Mapping[str, int]:
        if self._key_epochs is None or not paths:
            return {}
        return await self._key_epochs(set(map(_family_segment, paths)))

    def _forget_download_urls(self) -> None:
        self._download_urls.clear()
        self._cached_urls = 0

    def _object_url(self, path: str) -> str:
        # A checked path is only [A-Za-z0-9._-] and "/": quoting would change nothing.
        return f"{self.public_url}/{quote(self.bucket)}/{check_object_path(path)}"

    def _file(self, path: str) -> Path:
        check_object_path(path)
        file = (self._bucket_dir / path).resolve()
        # Belt and braces after the segment check: symlinks cannot lead out either.
        if not file.is_relative_to(self._bucket_dir) or file == self._bucket_dir:
            raise Invalid("Invalid storage path")
        return file

    def _new_incoming_file(self) -> Path:
        self._incoming.mkdir(parents=True, exist_ok=True)
        return self._incoming / f"{uuid.uuid4().hex}.part"

    def _publish(self, tmp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A link, unlike a rename, fails when the target exists: objects are write-once.
            os.link(tmp, final)
        except FileExistsError:
            raise Conflict(ALREADY_UPLOADED) from None
        except FileNotFoundError:
            # The memory's folder was just removed as empty by a deletion: make it again.
            final.parent.mkdir(parents=True, exist_ok=True)
            os.link(tmp, final)
        _fsync_dir(final.parent)

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        _fsync_file(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def _folders(self) -> list[Path]:
        if not self._bucket_dir.is_dir():
            return []
        return [Path(root) for root, _dirs, _files in os.walk(self._bucket_dir)]

    def _old_files_in(self, folder: Path, cutoff: float) -> list[str]:
        paths = []
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        paths.append(Path(entry.path).relative_to(self._bucket_dir).as_posix())
        return paths


def _family_segment(path: str) -> str:
    return path.split("/", 1)[0]


def _epoch_part(epochs: Mapping[str, int], path: str) -> tuple[str, ...]:
    # Epoch 0 adds nothing, so links signed before epochs existed (and families never
    # rotated) keep their signature; from 1 on, the epoch is one more signed value.
    epoch = epochs.get(_family_segment(path), 0)
    return (f"epoch:{epoch}",) if epoch else ()


def etag_for(st: os.stat_result) -> str:
    # Objects are write-once, so size and modification time identify the content.
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _write_sha256(file: Path, sha256: str) -> None:
    with contextlib.suppress(OSError):  # no user xattrs here: processing computes it
        os.setxattr(file, _SHA256_XATTR, sha256.encode())


def _read_sha256(file: Path) -> str | None:
    try:
        value = os.getxattr(file, _SHA256_XATTR).decode()
    except OSError:
        return None
    return value if len(value) == 64 else None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the new directory entry itself survive a power loss (POSIX only).
    with contextlib.suppress(OSError):
        _fsync_file(path)
