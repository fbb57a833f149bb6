"""Reading what a family brings in: a zip or a folder of photos and videos, with whatever
Google Photos Takeout put beside them (JSON sidecars, album metadata).

This module knows file layouts, not rules: it lists the media files of a source with the album
they sit in and what their sidecar says, and opens each as a stream. Which memory a file
becomes, duplicates and permissions are `app.services.import_service`'s.

Google Takeout's layout: `Takeout/Google Photos/<folder>/<file>` with, beside each file,
`<file>.json` (newer exports: `<file>.supplemental-metadata.json`, cut to 51 characters with
its extension) holding `title`, `description`, `photoTakenTime.timestamp` (Unix seconds, UTC)
and `geoData` (0, 0 when unknown). An album folder has a `metadata.json` with its `title` and
`description`; the `Photos from 2019` folders hold the photos that are in no album.
"""

import contextlib
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

# By extension only, to decide what to read at all; the bytes are sniffed before anything
# is kept, so a misnamed file is refused then.
MEDIA_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic", ".heif", ".avif", ".mp4", ".m4v",
     ".mov", ".webm"}
)  # fmt: skip
# Folders that are structure, not albums.
_STRUCTURAL_FOLDERS = frozenset({"takeout", "google photos", "google foto", "google fotos"})
_YEAR_FOLDER = re.compile(r"^photos from \d{4}$", re.IGNORECASE)
_IGNORED_PARTS = ("__MACOSX",)
# Google cuts a sidecar's name (with ".json") to 51 characters.
_SIDECAR_STEM_LIMIT = 46
_SIDECAR_SUFFIXES = (".supplemental-metadata", "")


@dataclass(frozen=True)
class Sidecar:
    title: str | None = None
    description: str | None = None
    taken_at: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class Album:
    key: str  # the folder's path in the source: unique, stable across runs
    title: str
    description: str | None = None


@dataclass(frozen=True)
class SourceFile:
    name: str  # the path inside the source, for reports
    size: int
    modified_at: datetime | None
    album: Album | None
    sidecar: Sidecar | None
    # Why the sidecar beside the file could not be read (the file is still imported).
    sidecar_problem: str | None
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class TimelessExport:
    """A Timeless export (a BagIt bag): its memories.json, and its files by bag path."""

    document: dict[str, Any]
    open_payload: Callable[[str], IO[bytes]]
    payload_size: Callable[[str], int | None]


class SourceError(Exception):
    """The source cannot be read at all (not a zip, not a folder, unreadable)."""


class Source(contextlib.AbstractContextManager["Source"]):
    """A zip or a folder, listed once; files are opened one at a time."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self._names = sorted(
                str(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file()
            )
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise SourceError("the archive is not a readable zip file") from exc
            self._names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())
        self._names = [n for n in self._names if not _ignored(n)]

    def __exit__(self, *exc_info: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def open_file(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        return (self.path / name).open("rb")

    def _size(self, name: str) -> int | None:
        try:
            if self._zip is not None:
                return self._zip.getinfo(name).file_size
            return (self.path / name).stat().st_size
        except (KeyError, OSError):
            return None

    def _modified_at(self, name: str) -> datetime | None:
        try:
            if self._zip is not None:
                return datetime(*self._zip.getinfo(name).date_time, tzinfo=UTC)
            return datetime.fromtimestamp((self.path / name).stat().st_mtime, UTC)
        except (KeyError, OSError, ValueError):
            return None

    def _bag_base(self) -> str | None:
        """Where the bag's files start: "" for a bag at the top, "<folder>/" for a serialised
        bag (RFC 8493 §4.2: one top-level folder, the bag; what the export writes); else None.
        """
        if "bagit.txt" in self._names:
            return ""
        tops = {name.split("/", 1)[0] for name in self._names}
        if len(tops) == 1 and f"{next(iter(tops))}/bagit.txt" in self._names:
            return f"{next(iter(tops))}/"
        return None

    def timeless_export(self) -> TimelessExport | None:
        """The bag's memories.json when this is a Timeless export, else None."""
        base = self._bag_base()
        if base is None or f"{base}data/memories.json" not in self._names:
            return None
        data = f"{base}data/"
        try:
            with self.open_file(f"{data}memories.json") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise SourceError("the export's data/memories.json cannot be read") from exc
        if not isinstance(document, dict):
            raise SourceError("the export's data/memories.json is not an object")
        return TimelessExport(
            document,
            lambda path: self.open_file(f"{data}{path}"),
            lambda p: self._size(f"{data}{p}"),
        )

    def media_files(self) -> tuple[list[SourceFile], list[tuple[str, str]]]:
        """Every photo or video with its album and sidecar; and the files passed over, why."""
        jsons = {n for n in self._names if n.lower().endswith(".json")}
        albums = self._albums(jsons)
        files: list[SourceFile] = []
        skipped: list[tuple[str, str]] = []
        used_sidecars: set[str] = set()
        for name in self._names:
            if name in jsons:
                continue
            if PurePosixPath(name).suffix.lower() not in MEDIA_EXTENSIONS:
                if not name.lower().endswith((".html", ".txt", "bagit.txt")):
                    skipped.append((name, "not a photo or video"))
                continue
            sidecar_name = _sidecar_for(name, jsons)
            sidecar, problem = (None, None)
            if sidecar_name is not None:
                used_sidecars.add(sidecar_name)
                sidecar, problem = self._read_sidecar(sidecar_name)
            files.append(
                SourceFile(
                    name=name,
                    size=self._size(name) or 0,
                    modified_at=self._modified_at(name),
                    album=albums.get(str(PurePosixPath(name).parent)),
                    sidecar=sidecar,
                    sidecar_problem=problem,
                    open=lambda name=name: self.open_file(name),  # type: ignore[misc]
                )
            )
        return files, skipped

    def _albums(self, jsons: set[str]) -> dict[str, Album]:
        folders = {str(PurePosixPath(n).parent) for n in self._names}
        albums: dict[str, Album] = {}
        for folder in folders:
            if folder == ".":
                continue
            leaf = PurePosixPath(folder).name
            if leaf.lower() in _STRUCTURAL_FOLDERS or _YEAR_FOLDER.match(leaf):
                continue
            title, description = leaf, None
            metadata_name = f"{folder}/metadata.json"
            if metadata_name in jsons:
                data = self._json(metadata_name)
                if isinstance(data, dict):
                    title = _text(data.get("title")) or leaf
                    description = _text(data.get("description"))
            albums[folder] = Album(key=folder, title=title[:255], description=description)
        return albums

    def _read_sidecar(self, name: str) -> tuple[Sidecar | None, str | None]:
        data = self._json(name)
        if not isinstance(data, dict):
            return None, "its JSON sidecar is unreadable; dates come from the file instead"
        return parse_sidecar(data), None

    def _json(self, name: str) -> object:
        try:
            with self.open_file(name) as fh:
                return json.loads(fh.read(1024 * 1024))
        except (OSError, ValueError, UnicodeDecodeError):
            return None


def parse_sidecar(data: dict[str, Any]) -> Sidecar:
    """Takeout's per-file JSON; anything missing or odd is simply unknown."""
    taken_at = None
    for key in ("photoTakenTime", "creationTime"):
        stamp = data.get(key)
        if isinstance(stamp, dict):
            with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
                taken_at = datetime.fromtimestamp(int(str(stamp.get("timestamp"))), UTC)
                break
    latitude = longitude = None
    for key in ("geoData", "geoDataExif"):
        geo = data.get(key)
        if isinstance(geo, dict):
            lat, lon = geo.get("latitude"), geo.get("longitude")
            if not (isinstance(lat, int | float) and isinstance(lon, int | float)):
                continue
            # Takeout writes 0, 0 for "unknown".
            if (lat or lon) and -90 <= lat <= 90 and -180 <= lon <= 180:
                latitude, longitude = float(lat), float(lon)
                break
    return Sidecar(
        title=_text(data.get("title")),
        description=_text(data.get("description")),
        taken_at=taken_at,
        latitude=latitude,
        longitude=longitude,
    )


def _sidecar_for(name: str, jsons: set[str]) -> str | None:
    """Takeout's sidecar for `name`, however Google spelled or cut its name."""
    path = PurePosixPath(name)
    folder = str(path.parent)
    prefix = "" if folder == "." else f"{folder}/"
    for suffix in _SIDECAR_SUFFIXES:
        stem = f"{path.name}{suffix}"
        for candidate in (stem, stem[:_SIDECAR_STEM_LIMIT]):
            if f"{prefix}{candidate}.json" in jsons:
                return f"{prefix}{candidate}.json"
    # A second file of the same name, "IMG_1(1).jpg", has its sidecar at "IMG_1.jpg(1).json".
    numbered = re.fullmatch(r"(?P<stem>.+)(?P<n>\(\d+\))(?P<ext>\.[^.]+)", path.name)
    if numbered:
        for suffix in _SIDECAR_SUFFIXES:
            base = f"{numbered['stem']}{numbered['ext']}{suffix}"
            for candidate in (base, base[: _SIDECAR_STEM_LIMIT - len(numbered["n"])]):
                if f"{prefix}{candidate}{numbered['n']}.json" in jsons:
                    return f"{prefix}{candidate}{numbered['n']}.json"
    # An edited copy ("IMG_1-edited.jpg") shares the original's sidecar.
    edited = re.sub(r"-(edited|bearbeitet|modifié)(?=\.[^.]+$)", "", path.name, flags=re.I)
    if edited != path.name:
        return _sidecar_for(f"{prefix}{edited}", jsons)
    return None


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip().replace("\x00", "")
    return None


def _ignored(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p in _IGNORED_PARTS or p.startswith(".") for p in parts)


def iter_chunks(stream: IO[bytes], size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
