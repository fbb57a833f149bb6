"""A BagIt bag (RFC 8493) written straight into a zip file, one file at a time.

Nothing is held whole: each payload file is written into the zip as it is read, and its
SHA-256 is computed from the same chunks on the way through. The manifest lines wait in a
spooled temporary file (in memory up to 1 MiB, on disk past that: a few dozen bytes a file),
and the tag files (`bagit.txt`, `bag-info.txt`, `manifest-sha256.txt`,
`tagmanifest-sha256.txt`) are written last, when the payload's size and count are known.
Memory stays flat whatever the number or size of the files; the zip itself is the only
copy on disk.

The zip holds one folder, the bag (RFC 8493 §4.2). Photos and videos go in uncompressed
(`ZIP_STORED`: they are compressed already, and deflating them would only cost time);
text is deflated. ZIP64 is used when an entry or the archive needs it.

This module knows nothing of memories: `app.services.archive_writer` decides what goes in.
Every method is blocking file I/O; async callers run them in a thread.
"""

import hashlib
import re
import tempfile
import time
import zipfile
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import IO, BinaryIO

BAGIT_VERSION = "1.0"
CHUNK_BYTES = 1024 * 1024
_MANIFEST = "manifest-sha256.txt"
_TAG_MANIFEST = "tagmanifest-sha256.txt"
# Relative, "/"-separated, no empty, "." or ".." segment: a name that stays inside the bag.
_SAFE_NAME = re.compile(r"(?!\.\.?(?:/|$))[^/\x00]+(?:/(?!\.\.?(?:/|$))[^/\x00]+)*")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SPOOL_IN_MEMORY_BYTES = 1024 * 1024


class PayloadFile:
    """One file being written into `data/`: `write` its bytes, then `close` (its SHA-256).

    The SHA-256 of a chunk is computed in the bag's hashing thread while this thread writes
    the same chunk into the zip (with its CRC-32): both release the GIL on large buffers, so
    on two cores the checksum costs almost no time beside the copy (see bench/archive.py).
    """

    def __init__(self, bag: "BagZipWriter", name: str, handle: IO[bytes]) -> None:
        self._bag = bag
        self._name = name
        self._handle = handle
        self._sha = hashlib.sha256()
        self._hashing: Future[None] | None = None
        self.size = 0
        self.digest = ""

    def write(self, data: bytes) -> None:
        if self._hashing is not None:
            self._hashing.result()  # in order: one chunk at a time into the digest
        self._hashing = self._bag._hasher.submit(self._sha.update, data)
        self._handle.write(data)
        self.size += len(data)

    def close(self) -> str:
        """Finish the file and record it in the manifest; returns its SHA-256 (hex)."""
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None
        self._handle.close()
        self.digest = self._sha.hexdigest()
        self._bag._payload_written(self._name, self.digest, self.size)
        return self.digest


@dataclass(frozen=True)
class BagTotals:
    payload_bytes: int
    payload_files: int


class BagZipWriter:
    """Write a bag named `bag_name` into the open, writable binary file `out`."""

    def __init__(self, out: BinaryIO, bag_name: str, *, when: float | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", bag_name) or bag_name in (".", ".."):
            raise ValueError(f"not a safe bag name: {bag_name!r}")
        self.bag_name = bag_name
        self._zip = zipfile.ZipFile(out, "w", allowZip64=True)
        self._when = when if when is not None else time.time()
        # Closed by finish() or abort().
        self._manifest = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        self._open: PayloadFile | None = None
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="bag-sha256")
        self.payload_bytes = 0
        self.payload_files = 0

    # Payload -----------------------------------------------------------------------------

    def open_payload(
        self, name: str, *, size: int | None = None, compress: bool = False
    ) -> PayloadFile:
        """Start the file `data/<name>`. `size`, when known, lets ZIP64 be used only if needed.

        One file at a time: close it before opening the next (the zip format writes files
        one after the other).
        """
        if self._open is not None:
            raise RuntimeError("close the previous payload file first")
        path = f"data/{self._checked(name)}"
        # An unknown size may be anything: such an entry carries ZIP64 sizes to be safe.
        handle = self._zip.open(
            self._info(path, size if size is not None else 0, compress),
            "w",
            force_zip64=size is None and not compress,
        )
        self._open = PayloadFile(self, path, handle)
        return self._open

    def write_payload(self, name: str, data: bytes, *, compress: bool = True) -> str:
        """Write a whole (small) file into `data/`; returns its SHA-256."""
        payload = self.open_payload(name, size=len(data), compress=compress)
        payload.write(data)
        return payload.close()

    def _payload_written(self, path: str, digest: str, size: int) -> None:
        self._open = None
        self._manifest.write(f"{digest}  {_manifest_path(path)}\n".encode())
        self.payload_bytes += size
        self.payload_files += 1

    # The end -----------------------------------------------------------------------------

    def finish(self, info: Mapping[str, str]) -> BagTotals:
        """Write the tag files (with `info` in bag-info.txt) and close the zip.

        Adds `Bagging-Date`, `Payload-Oxum` and `Bag-Size` to `info`. Values are made single
        lines (a line break in a family's name would otherwise start a new label).
        """
        if self._open is not None:
            raise RuntimeError("a payload file is still open")
        bag_info = dict(info)
        bag_info.setdefault("Bagging-Date", date.fromtimestamp(self._when).isoformat())
        bag_info["Payload-Oxum"] = f"{self.payload_bytes}.{self.payload_files}"
        bag_info["Bag-Size"] = human_size(self.payload_bytes)
        tag_digests = [
            ("bagit.txt", self._write_tag("bagit.txt", _bagit_txt())),
            ("bag-info.txt", self._write_tag("bag-info.txt", _bag_info_txt(bag_info))),
            (_MANIFEST, self._write_manifest()),
        ]
        lines = "".join(f"{digest}  {name}\n" for name, digest in tag_digests)
        self._write_tag(_TAG_MANIFEST, lines.encode())
        self._zip.close()
        self._manifest.close()
        self._hasher.shutdown()
        return BagTotals(self.payload_bytes, self.payload_files)

    def abort(self) -> None:
        """Give up: release what is held (the caller removes the unfinished file)."""
        self._manifest.close()
        self._hasher.shutdown(wait=True, cancel_futures=True)
        try:
            if self._open is not None:
                self._open._handle.close()
            self._zip.close()
        except Exception:  # noqa: S110 (the file is being thrown away anyway)
            pass

    def _write_tag(self, name: str, data: bytes) -> str:
        with self._zip.open(self._info(name, len(data), compress=True), "w") as handle:
            handle.write(data)
        return hashlib.sha256(data).hexdigest()

    def _write_manifest(self) -> str:
        sha = hashlib.sha256()
        self._manifest.seek(0)
        with self._zip.open(self._info(_MANIFEST, 0, compress=True), "w") as handle:
            while chunk := self._manifest.read(CHUNK_BYTES):
                sha.update(chunk)
                handle.write(chunk)
        return sha.hexdigest()

    # Plumbing ----------------------------------------------------------------------------

    def _checked(self, name: str) -> str:
        if not _SAFE_NAME.fullmatch(name) or "\\" in name:
            raise ValueError(f"not a safe file name inside the bag: {name!r}")
        # zipfile keeps every entry for the central directory anyway: ask it, keep no copy.
        if f"{self.bag_name}/data/{name}" in self._zip.NameToInfo:
            raise ValueError(f"two files named {name!r}")
        return name

    def _info(self, path: str, size: int, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(f"{self.bag_name}/{path}", time.localtime(self._when)[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.file_size = size
        info.external_attr = 0o644 << 16  # rw-r--r-- when unzipped
        return info


def _bagit_txt() -> bytes:
    return f"BagIt-Version: {BAGIT_VERSION}\nTag-File-Character-Encoding: UTF-8\n".encode()


def _bag_info_txt(info: Mapping[str, str]) -> bytes:
    lines = []
    for label, value in info.items():
        if not _LABEL.fullmatch(label):
            raise ValueError(f"not a bag-info label: {label!r}")
        lines.append(f"{label}: {' '.join(str(value).split())}\n")
    return "".join(lines).encode()


def _manifest_path(path: str) -> str:
    # RFC 8493 §2.1.3: percent-encode CR, LF and "%" in manifest file paths.
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
