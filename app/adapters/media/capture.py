"""When, with what and where a photo or video was taken, read from its own metadata.

Photos: EXIF DateTimeOriginal with OffsetTimeOriginal (EXIF 2.31; iPhones and recent Android
phones write it), Make and Model, and the GPS block. Videos: QuickTime/MP4 metadata as FFmpeg
reads it: Apple's `com.apple.quicktime.creationdate` (local time with its offset), else
`creation_time` (UTC by the QuickTime spec), the make/model keys, and the ISO 6709 location.

Metadata is whatever the writer put there, often mangled by editors and messengers: every
reader here returns "unknown" rather than raising, and values are checked for sanity (dates
from 1826, when the first photograph was taken, to a day from now; coordinates on Earth).
"""

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from PIL import ExifTags, Image

from app.adapters.media.common import Capture

_EARLIEST_YEAR: Final = 1826
_MAX_TEXT: Final = 100

# EXIF tags (Pillow names some of them; the offsets are newer than its enum in some versions).
_DATE_TIME: Final = 0x0132
_DATE_TIME_ORIGINAL: Final = 0x9003
_DATE_TIME_DIGITIZED: Final = 0x9004
_OFFSET_TIME: Final = 0x9010
_OFFSET_TIME_ORIGINAL: Final = 0x9011
_OFFSET_TIME_DIGITIZED: Final = 0x9012

_EXIF_DATE: Final = re.compile(r"^\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET: Final = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")
# ISO 6709 as phones write it: +52.5200+013.4050+034.000/ (altitude optional).
_ISO6709: Final = re.compile(r"^([+-]\d{1,2}(?:\.\d+)?)([+-]\d{1,3}(?:\.\d+)?)")


# Photos ------------------------------------------------------------------------------------


def from_exif(im: Image.Image) -> Capture:
    """Capture facts from a still image's EXIF; an unreadable block is simply no facts."""
    try:
        exif = im.getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:
        return Capture()
    taken_at = None
    for date_tag, offset_tag, source in (
        (_DATE_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, sub),
        (_DATE_TIME_DIGITIZED, _OFFSET_TIME_DIGITIZED, sub),
        (_DATE_TIME, _OFFSET_TIME, exif),
    ):
        taken_at = _exif_datetime(
            source.get(date_tag), source.get(offset_tag) or sub.get(offset_tag)
        )
        if taken_at is not None:
            break
    latitude, longitude = _exif_gps(exif)
    return Capture(
        taken_at=taken_at,
        camera_make=_text(exif.get(ExifTags.Base.Make)),
        camera_model=_text(exif.get(ExifTags.Base.Model)),
        latitude=latitude,
        longitude=longitude,
    )


def _exif_datetime(value: object, offset: object) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    match = _EXIF_DATE.match(text)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        local = datetime(year, month, day, hour, minute, second)
    except ValueError:  # "2024:02:30 ..." and the all-zero date cameras write when unset
        return None
    zone = _offset(offset)
    taken = local.replace(tzinfo=zone) if zone is not None else local
    return taken if _plausible(taken) else None


def _offset(value: object) -> timezone | None:
    text = _text(value)
    match = _OFFSET.match(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    # Real offsets run from -12:00 to +14:00.
    if delta > timedelta(hours=14) or int(minutes) >= 60:
        return None
    return timezone(-delta if sign == "-" else delta)


def _exif_gps(exif: Image.Exif) -> tuple[float | None, float | None]:
    try:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        latitude = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef))
        longitude = _degrees(
            gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef)
        )
    except Exception:
        return None, None
    return _position(latitude, longitude)


def _degrees(dms: object, ref: object) -> float | None:
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    try:
        degrees, minutes, seconds = (float(part) for part in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if _text(ref) in ("S", "W"):
        value = -value
    return value


def _position(latitude: float | None, longitude: float | None) -> tuple[float | None, float | None]:
    if latitude is None or longitude is None:
        return None, None
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        return None, None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None, None
    # 0, 0 is what many cameras write when they had no fix; nobody photographs that buoy.
    if latitude == 0 and longitude == 0:
        return None, None
    return round(latitude, 6), round(longitude, 6)


# Videos ------------------------------------------------------------------------------------


def from_video_metadata(tags: Mapping[str, str]) -> Capture:
    """Capture facts from a video container's (and its first stream's) metadata tags."""
    lowered = {key.lower(): value for key, value in tags.items()}
    taken_at = _iso_datetime(lowered.get("com.apple.quicktime.creationdate"))
    if taken_at is None:
        taken_at = _iso_datetime(lowered.get("creation_time"), assume_utc=True)
    latitude, longitude = None, None
    location = lowered.get("com.apple.quicktime.location.iso6709") or lowered.get("location")
    match = _ISO6709.match(location.strip()) if isinstance(location, str) else None
    if match is not None:
        latitude, longitude = _position(float(match[1]), float(match[2]))
    return Capture(
        taken_at=taken_at,
        camera_make=_text(lowered.get("com.apple.quicktime.make") or lowered.get("make")),
        camera_model=_text(lowered.get("com.apple.quicktime.model") or lowered.get("model")),
        latitude=latitude,
        longitude=longitude,
    )


def _iso_datetime(value: object, *, assume_utc: bool = False) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    # Apple writes +0200; fromisoformat (3.11) wants +02:00.
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text.replace("Z", "+00:00"))
    try:
        taken = datetime.fromisoformat(text)
    except ValueError:
        return None
    if taken.tzinfo is None and assume_utc:
        taken = taken.replace(tzinfo=UTC)
    # Many encoders write the epoch (1904 or 1970) when the clock was unknown.
    if taken.year in (1904, 1970) and taken.month == 1 and taken.day == 1:
        return None
    return taken if _plausible(taken) else None


# Shared ------------------------------------------------------------------------------------


def _plausible(taken: datetime) -> bool:
    now = datetime.now(UTC)
    reference = taken if taken.tzinfo is not None else taken.replace(tzinfo=UTC)
    return taken.year >= _EARLIEST_YEAR and reference <= now + timedelta(days=1)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()
    return cleaned[:_MAX_TEXT] or None
