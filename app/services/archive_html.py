"""The archive's `index.html`: the family's memories as one page that needs nothing else.

Plain HTML with its style inside: no script, no web font, no address outside the unzipped
folder, so it opens from a USB stick in any browser, offline, in fifty years. It reads like
an album: the family's name, the years to jump to, then every memory oldest first under its
year and month, with its photos and videos, who shared it, the reactions and the comments
with their replies. One column, large type and generous spacing: made for a phone and for
grandparents. Every piece of family text passes through `_e` (html.escape): a memory's
title can never become markup.

The page is written in pieces (`page_start`, `section_headings`, `memory`, `page_end`) as
`app.services.archive_writer` streams memories in batches; nothing here holds more than one
memory.
"""

import html
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from app.models.media_types import VIDEO_MIME_TYPES

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# What every browser shows in an <img> (HEIC and HEIF are not among them).
BROWSER_IMAGES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"})
# Containers a <video> can usually play; anything else is offered as a file to open.
BROWSER_VIDEOS = frozenset({"video/mp4", "video/webm", "video/quicktime"})

_STYLE = """
:root { color-scheme: light; --paper: #f8f3ea; --card: #fffdf8; --ink: #2f2a25;
  --soft: #6f655b; --line: #e6dccd; --accent: #9c4a2f; --accent-soft: #f3e4d7; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--paper); color: var(--ink);
  font: 1.2rem/1.65 "Iowan Old Style", "Palatino Linotype", Palatino, Georgia, serif; }
a { color: var(--accent); }
.page { max-width: 46rem; margin: 0 auto; padding: 2.5rem 1.1rem 4rem; }
header.top { text-align: center; padding: 1.5rem 0 1rem; }
.kicker { margin: 0; color: var(--soft); letter-spacing: .14em; text-transform: uppercase;
  font-size: .85rem; }
h1 { font-size: clamp(2.2rem, 8vw, 3.4rem); line-height: 1.1; margin: .4rem 0 .6rem;
  font-weight: 600; }
.summary { color: var(--soft); margin: 0 0 1.6rem; }
nav.years { display: flex; flex-wrap: wrap; justify-content: center; gap: .6rem;
  margin: 0 0 1rem; }
nav.years a { display: inline-block; padding: .45rem 1.1rem; border-radius: 999px;
  background: var(--card); border: 1px solid var(--line); text-decoration: none;
  color: var(--ink); min-width: 4.5rem; }
h2.year { font-size: 2.4rem; font-weight: 600; margin: 3.2rem 0 .2rem; text-align: center;
  color: var(--accent); }
h3.month { font-size: 1rem; font-weight: 600; letter-spacing: .16em; text-transform: uppercase;
  color: var(--soft); margin: 2rem 0 1rem; display: flex; align-items: center; gap: 1rem; }
h3.month::before, h3.month::after { content: ""; flex: 1; border-top: 1px solid var(--line); }
article.memory { background: var(--card); border: 1px solid var(--line); border-radius: 18px;
  padding: 1.4rem 1.3rem 1.2rem; margin: 0 0 1.8rem; box-shadow: 0 2px 10px rgba(80,60,40,.06);
  break-inside: avoid; }
.date { margin: 0; color: var(--soft); font-size: 1rem; }
article h4 { font-size: 1.6rem; line-height: 1.25; margin: .2rem 0 .3rem; font-weight: 600; }
.byline { margin: 0 0 .8rem; color: var(--soft); font-size: 1rem; }
.label { font-size: .8rem; border: 1px solid var(--line); border-radius: 6px;
  padding: .05rem .45rem; margin-left: .4rem; vertical-align: middle; }
.story { white-space: pre-line; margin: .6rem 0 1rem; }
.media { display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; margin: 1rem 0; }
.media figure { margin: 0; }
.media figure:first-child, .media figure.only { grid-column: 1 / -1; }
.media img, .media video { display: block; width: 100%; height: auto; border-radius: 12px;
  background: var(--accent-soft); }
.media figure:first-child img { max-height: 80vh; object-fit: contain; }
.media figure:not(:first-child) img, .media figure:not(:first-child) video,
.media figure:not(:first-child) .file { aspect-ratio: 1; object-fit: cover; }
.media video { background: #2f2a25; }
.file { display: flex; align-items: center; justify-content: center; min-height: 8rem;
  border-radius: 12px; background: var(--accent-soft); padding: 1rem; text-align: center;
  overflow-wrap: anywhere; }
.tags { margin: .4rem 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap;
  gap: .4rem; }
.tags li { background: var(--accent-soft); border-radius: 999px; padding: .1rem .8rem;
  font-size: .95rem; }
.reactions { margin: .8rem 0 0; display: flex; flex-wrap: wrap; gap: .5rem; font-size: 1rem; }
.reactions span { border: 1px solid var(--line); border-radius: 999px; padding: .2rem .8rem; }
.comments { margin-top: 1rem; border-top: 1px solid var(--line); padding-top: .6rem; }
.comment { margin: .7rem 0 0; }
.comment .replies { margin-left: 1rem; padding-left: 1rem; border-left: 3px solid var(--line); }
.comment p { margin: 0; }
.comment .text { white-space: pre-line; }
.who { font-weight: 600; }
.when { color: var(--soft); font-size: .9rem; }
.deleted { color: var(--soft); font-style: italic; }
footer.keep { margin-top: 4rem; padding: 1.6rem 1.4rem; background: var(--card);
  border: 1px solid var(--line); border-radius: 18px; font-size: 1.05rem; }
footer.keep h2 { margin-top: 0; font-size: 1.4rem; }
footer.keep li { margin: .4rem 0; }
.empty { text-align: center; color: var(--soft); margin: 3rem 0; }
@media (max-width: 30rem) {
  body { font-size: 1.15rem; }
  .page { padding: 1.5rem .8rem 3rem; }
  article.memory { padding: 1.1rem 1rem 1rem; border-radius: 14px; }
}
@media print {
  body { background: #fff; }
  article.memory { box-shadow: none; }
  nav.years { display: none; }
}
"""


def _e(text: object) -> str:
    """Escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def long_date(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def short_date(moment: datetime) -> str:
    return f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}"


def page_start(
    *,
    family_name: str,
    exported_on: date,
    memory_count: int,
    media_count: int,
    years: Sequence[int],
) -> str:
    if years:
        span = f"from {years[0]}" if len(years) == 1 else f"from {years[0]} to {years[-1]}"
    else:
        span = ""
    counts = f"{plural(memory_count, 'memory', 'memories')}, " + plural(
        media_count, "photo or video", "photos and videos"
    )
    nav = "".join(f'<a href="#y{year}">{year}</a>' for year in years)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="Timeless Love">\n'
        f"<title>{_e(family_name)} · Our memories</title>\n<style>{_STYLE}</style>\n"
        '</head>\n<body>\n<div class="page">\n<header class="top">\n'
        '<p class="kicker">Our memories</p>\n'
        f"<h1>{_e(family_name)}</h1>\n"
        f'<p class="summary">{_e(counts)} {_e(span)}<br>'
        f"Archive made on {_e(long_date(exported_on))}</p>\n"
        + (f'<nav class="years" aria-label="Years">{nav}</nav>\n' if years else "")
        + "</header>\n<main>\n"
        + ("" if memory_count else '<p class="empty">No memories yet.</p>\n')
    )


def section_headings(previous: tuple[int, int] | None, day: date) -> tuple[str, tuple[int, int]]:
    """The year and month headings due before a memory of `day`; and the new position."""
    current = (day.year, day.month)
    out = ""
    if previous is None or previous[0] != day.year:
        out += f'<h2 class="year" id="y{day.year}">{day.year}</h2>\n'
    if previous != current:
        out += f'<h3 class="month">{MONTHS[day.month - 1]} {day.year}</h3>\n'
    return out, current


def memory(record: Mapping[str, Any], day: date, names: Mapping[str, str]) -> str:
    """One memory as an <article>; `record` is its memories.json form, `names` member names."""
    parts = [f'<article class="memory" id="m-{_e(record["id"])}">']
    parts.append(f'<p class="date">{_e(long_date(day))}</p>')
    label = '<span class="label">archived</span>' if record["status"] == "archived" else ""
    parts.append(f"<h4>{_e(record['title'])}{label}</h4>")
    byline = f"Shared by {_name(names, record['author'])}"
    if record.get("location"):
        byline += f" · {record['location']}"
    parts.append(f'<p class="byline">{_e(byline)}</p>')
    if record.get("description"):
        parts.append(f'<p class="story">{_e(record["description"])}</p>')
    media = record["media"]
    if media:
        figures = "".join(_figure(item, record["title"], len(media) == 1) for item in media)
        parts.append(f'<div class="media">{figures}</div>')
    if record["tags"]:
        tags = "".join(f"<li>#{_e(tag)}</li>" for tag in record["tags"])
        parts.append(f'<ul class="tags" aria-label="Tags">{tags}</ul>')
    if record["reactions"]:
        parts.append(_reactions(record["reactions"], names))
    if record["comments"]:
        thread = "".join(_comment(comment, names) for comment in record["comments"])
        parts.append(f'<section class="comments" aria-label="Comments">{thread}</section>')
    parts.append("</article>\n")
    return "".join(parts)


def page_end() -> str:
    return (
        "</main>\n"
        '<footer class="keep">\n<h2>How to keep this archive</h2>\n<ul>\n'
        "<li>This page needs no internet and no special program: keep the whole folder "
        "together and open <b>index.html</b> in any web browser.</li>\n"
        "<li>The photos and videos are in the <b>media</b> folder, just as they were shared, "
        "in folders by year and date.</li>\n"
        "<li>Keep two copies in two places (a computer and a USB drive, or a cloud drive), and "
        "copy them onto new devices every few years. Open it now and then to check.</li>\n"
        "<li>Everything is also written down in <b>memories.json</b>, and checksums in "
        "<b>manifest-sha256.txt</b> (one folder up) show that no file has changed "
        "(see README.txt).</li>\n"
        "</ul>\n</footer>\n</div>\n</body>\n</html>\n"
    )


# Pieces ------------------------------------------------------------------------------------


def _figure(item: Mapping[str, Any], title: str, only: bool) -> str:
    original = item.get("file")
    preview = item.get("preview")
    mime = item["mime_type"]
    dims = preview if preview and preview.get("width") else item
    size = ""
    if dims.get("width") and dims.get("height"):
        size = f' width="{int(dims["width"])}" height="{int(dims["height"])}"'
    if original and mime in BROWSER_VIDEOS:
        poster = f' poster="{_e(preview["file"])}"' if preview else ""
        body = (
            f'<video controls playsinline preload="metadata" src="{_e(original)}"{poster}{size}>'
            f'<a href="{_e(original)}">Open the video</a></video>'
        )
    else:
        # The preview if the archive has one, else the original if browsers show its type.
        shown = preview["file"] if preview else (original if mime in BROWSER_IMAGES else None)
        if shown is not None:
            alt = f"{title}: {item['file_name']}"
            image = f'<img src="{_e(shown)}" alt="{_e(alt)}" loading="lazy" decoding="async"{size}>'
            body = f'<a href="{_e(original)}">{image}</a>' if original else image
        elif original:
            kind = "video" if mime in VIDEO_MIME_TYPES else "photo"
            body = (
                f'<div class="file"><a href="{_e(original)}">Open the {kind} '
                f"{_e(item['file_name'])}</a></div>"
            )
        else:
            reason = item.get("missing") or "not included in this archive"
            body = f'<div class="file">{_e(item["file_name"])}: {_e(reason)}</div>'
    css = ' class="only"' if only else ""
    return f"<figure{css}>{body}</figure>"


def _reactions(reactions: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    by_emoji: dict[str, list[str]] = {}
    for reaction in reactions:
        by_emoji.setdefault(reaction["emoji"], []).append(_name(names, reaction["member"]))
    chips = "".join(
        f'<span title="{_e(", ".join(who))}">{_e(emoji)} {_e(", ".join(who))}</span>'
        for emoji, who in by_emoji.items()
    )
    return f'<div class="reactions" aria-label="Reactions">{chips}</div>'


def _comment(comment: Mapping[str, Any], names: Mapping[str, str]) -> str:
    when = datetime.fromisoformat(comment["created_at"])
    if comment["deleted"]:
        text = '<p class="deleted">This comment was deleted.</p>'
    else:
        text = f'<p class="text">{_e(comment["content"])}</p>'
    replies = "".join(_comment(reply, names) for reply in comment["replies"])
    return (
        f'<div class="comment"><p><span class="who">{_e(_name(names, comment["author"]))}</span>'
        f' <span class="when">· {_e(short_date(when))}</span></p>{text}'
        + (f'<div class="replies">{replies}</div>' if replies else "")
        + "</div>"
    )


def _name(names: Mapping[str, str], member_id: str | None) -> str:
    return names.get(member_id or "", "a family member")


def plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"
