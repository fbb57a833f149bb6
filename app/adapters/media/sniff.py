"""What a file really is, from its first bytes (magic numbers), never from what the client says."""

from typing import Final

SNIFF_BYTES: Final = 64

_HEIC_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"heif"})
# AVIF shares the mif1/msf1 structural brands with HEIF; its own brands say which it is.
# `avis` is an AVIF image sequence (animated); Pillow decodes its first frame like a GIF's.
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_QUICKTIME_BRANDS: Final = frozenset({b"qt  "})
_MP4_BRANDS: Final = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"mp71",
        b"avc1",
        b"dash",
        b"M4V ",
        b"M4VH",
        b"M4VP",
        b"MSNV",
        b"mmp4",
        b"XAVC",
    }
)


def sniff_mime(head: bytes) -> str | None:
    """Identify an allowed media type from the first bytes of a file, or return ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:15] == b"VP8":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head.startswith(b"\x1a\x45\xdf\xa3") and _ebml_doctype(head) == b"webm":
        return "video/webm"
    return None


def _sniff_ftyp(head: bytes) -> str | None:
    box_size = int.from_bytes(head[:4], "big")
    # 16 = size + "ftyp" + major brand + minor version; smaller (or 64-bit "1") is malformed.
    if box_size < 16 or len(head) < 12:
        return None
    major = head[8:12]
    compatible_end = min(box_size, len(head))
    compatible = {head[i : i + 4] for i in range(16, compatible_end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "image/avif"
    if major in _HEIC_BRANDS:
        return "image/heic"
    if major in _HEIF_BRANDS:
        if compatible & _HEIC_BRANDS:
            return "image/heic"
        if compatible & _AVIF_BRANDS:
            return "image/avif"
        return "image/heif"
    if major in _QUICKTIME_BRANDS:
        return "video/quicktime"
    if major in _MP4_BRANDS:
        return "video/mp4"
    return None


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """Decode an EBML variable-length integer; raises IndexError/ValueError on bad input."""
    first = data[pos]
    if first == 0:
        raise ValueError("EBML vint longer than 8 bytes")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise IndexError("EBML vint runs past the sniffed bytes")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml_doctype(head: bytes) -> bytes | None:
    try:
        header_size, pos = _read_vint(head, 4, keep_marker=False)
        end = min(len(head), pos + header_size)
        while pos < end:
            element_id, pos = _read_vint(head, pos, keep_marker=True)
            size, pos = _read_vint(head, pos, keep_marker=False)
            if element_id == 0x4282:
                value = head[pos : pos + size]
                return value if len(value) == size else None
            pos += size
    except (IndexError, ValueError):
        return None
    return None


def mime_matches(declared: str, sniffed: str | None) -> bool:
    """Whether the client's declared type is consistent with what the bytes actually are."""
    if sniffed is None:
        return False
    declared = declared.split(";", 1)[0].strip().lower()
    if declared == sniffed:
        return True
    # Encoders pick between these brands inconsistently (iOS writes heic under mif1, phones write
    # MP4 under the qt brand and vice versa), so clients cannot be expected to know which one.
    lenient = ({"image/heic", "image/heif"}, {"video/mp4", "video/quicktime"})
    return any(declared in group and sniffed in group for group in lenient)
