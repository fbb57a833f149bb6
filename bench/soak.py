"""Sustained load: a realistic family mix at a fixed rate against a real server (issue #7, part 5).

Usage: python bench/soak.py [--duration 600] [--rate 20] [--families 5] [--sample-every 10]

What runs: the built-in PostgreSQL in a temporary folder, and uvicorn in a subprocess
exactly as `timeless serve` runs it (the `app.main:configure_from_env` factory), with the
production settings that matter for load: argon2id at its default cost, rate limits on
(each simulated member comes from its own address through `X-Forwarded-For`, as behind a
proxy). Families of three (adult, teen, grandparent) are created and seeded first; that
set-up is not measured.

Then, for `--duration` seconds, one user action starts every 1/`--rate` seconds whether or
not the previous ones have finished (an open loop, so a slow server cannot slow the load
down and hide its own latency). Actions, by weight:

    35 read a feed page            10 view a thumbnail from the feed (signed URL, no token)
     8 open a memory                5 read a memory's comments
    17 react / take a reaction back 10 comment (a third are replies)
     8 post a memory with a photo: create → upload-url → PUT the JPEG → register (4 requests)
     5 log in (argon2id)            2 refresh the token pair

Reported: every HTTP request's latency by endpoint (p50/p99), errors (any answer that is
not the expected 2xx, or no answer; target 0), the server's RSS sampled every
`--sample-every` seconds with its min/max and least-squares trend in MiB per minute (whole
run and second half, after warm-up), open file descriptors, whether media processing kept
up, and the server log's error lines. Results go to bench/results/soak-<time>.json and a
Markdown block is printed for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from PIL import ExifTags, Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.migrate import migrate  # noqa: E402
from tests.faults.server import ApiServer, EmbeddedPostgres  # noqa: E402

API = "/api/v1"
MiB = 1024 * 1024
PASSWORD = "soak-password-0123"
EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🎉", "🔥", "💯"]
TAGS = ["birthday", "holiday", "garden", "school", "beach", "grandma", "recipes", "pets"]
ACTIONS = {
    "feed": 35,
    "thumbnail": 10,
    "memory": 8,
    "comments": 5,
    "react": 17,
    "comment": 10,
    "post": 8,
    "login": 5,
    "refresh": 2,
}
MAX_IN_FLIGHT = 200
SERVER_ENV = {
    "ENVIRONMENT": "production",
    "RATE_LIMIT_ENABLED": "true",
    # The load generator plays the proxy: its X-Forwarded-For names each simulated member.
    "TRUSTED_PROXIES": "127.0.0.1",
    "PASSWORD_HASH_TIME_COST": "3",
    "PASSWORD_HASH_MEMORY_KIB": "65536",
    "LOG_LEVEL": "WARNING",
}


# Photos ----------------------------------------------------------------------------------------


def photo(rng: random.Random) -> bytes:
    """A phone-like JPEG (about 1024x768, EXIF orientation), 60-150 KB."""
    size = (1024, 768)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)), fill=colour)  # type: ignore[arg-type]
    image = Image.blend(image, Image.effect_noise(size, 25).convert("RGB"), 0.15)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = rng.choice([1, 6])
    exif[ExifTags.Base.Make] = "SoakPhone"
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


# Who acts --------------------------------------------------------------------------------------


@dataclass
class Member:
    email: str
    ip: str
    family: Family
    access_token: str = ""
    refresh_token: str = ""
    reactions: dict[tuple[str, str], str] = field(default_factory=dict)  # (memory, emoji) → id
    busy: set[tuple[str, str]] = field(default_factory=set)
    token_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}", "X-Forwarded-For": self.ip}

    def take_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]


@dataclass
class Family:
    name: str
    members: list[Member] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    comments: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    thumbnails: list[str] = field(default_factory=list)


# Measuring -------------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    max_lag: float = 0.0

    def error(self, endpoint: str, what: str) -> None:
        self.errors[endpoint] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{endpoint}: {what}")


class Api:
    """Every request goes through `call`, which times it and checks the status."""

    def __init__(self, client: httpx.AsyncClient, stats: Stats):
        self.client = client
        self.stats = stats

    async def call(
        self, endpoint: str, method: str, url: str, *, expect: int, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.error(endpoint, f"{type(exc).__name__}: {exc}")
            return None
        self.stats.latencies[endpoint].append((time.perf_counter() - started) * 1000)
        if response.status_code != expect:
            self.stats.error(endpoint, f"{response.status_code} {response.text[:200]}")
            return None
        return response


# Set-up (not measured) -------------------------------------------------------------------------


async def create_families(client: httpx.AsyncClient, count: int) -> list[Family]:
    families = []
    for index in range(count):
        family = Family(name=f"Soak family {index}")
        adult = Member(f"soak-adult-{index}-{uuid.uuid4().hex[:6]}@example.com", _ip(), family)
        response = await client.post(
            f"{API}/auth/register/adult",
            json={
                "email": adult.email,
                "password": PASSWORD,
                "display_name": f"Adult {index}",
                "family_name": family.name,
            },
            headers={"X-Forwarded-For": adult.ip},
        )
        response.raise_for_status()
        adult.take_tokens(response.json()["tokens"])
        family.members.append(adult)
        for role in ("teen", "grandparent"):
            member = Member(
                f"soak-{role}-{index}-{uuid.uuid4().hex[:6]}@example.com", _ip(), family
            )
            invite = await client.post(
                f"{API}/invites", json={"email": member.email, "role": role}, headers=adult.headers
            )
            invite.raise_for_status()
            accepted = await client.post(
                f"{API}/invites/{invite.json()['token']}/accept",
                json={"email": member.email, "password": PASSWORD, "display_name": role.title()},
                headers={"X-Forwarded-For": member.ip},
            )
            accepted.raise_for_status()
            member.take_tokens(accepted.json()["tokens"])
            family.members.append(member)
        families.append(family)
    return families


def _ip() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def seed(api: Api, families: list[Family], photos: list[bytes], rng: random.Random) -> None:
    """Fifteen memories per family, a third with a photo, so the feed has something to show."""
    for family in families:
        for index in range(15):
            member = family.members[index % len(family.members)]
            await post_memory(api, member, rng, photos if index % 3 == 0 else [])


# Actions ---------------------------------------------------------------------------------------


async def post_memory(api: Api, member: Member, rng: random.Random, photos: list[bytes]) -> None:
    day = date(2020, 1, 1) + timedelta(days=rng.randrange(2000))
    created = await api.call(
        "POST /memories",
        "POST",
        f"{API}/memories",
        expect=201,
        headers=member.headers,
        json={
            "title": f"{rng.choice(['Picnic', 'Birthday', 'First steps', 'Road trip'])} "
            f"{uuid.uuid4().hex[:6]}",
            "description": "A lovely day with everyone together. " * rng.randrange(1, 6),
            "memory_date": day.isoformat(),
            "location": rng.choice(["Lisbon", "the garden", "Grandma's house", None]),
            "tags": rng.sample(TAGS, rng.randrange(0, 4)),
            "status": "published",
        },
    )
    if created is None:
        return
    memory_id = created.json()["id"]
    if photos:
        data = rng.choice(photos)
        ticket = await api.call(
            "POST /storage/upload-url",
            "POST",
            f"{API}/storage/upload-url",
            expect=200,
            headers=member.headers,
            json={
                "memory_id": memory_id,
                "file_name": "IMG_0001.jpg",
                "mime_type": "image/jpeg",
                "file_size": len(data),
            },
        )
        if ticket is None:
            return
        target = ticket.json()
        sent = await api.call(
            "PUT /storage/objects/{bucket}/{path}",
            target["method"],
            target["upload_url"],
            expect=201,
            content=data,
            headers={**target["headers"], "X-Forwarded-For": member.ip},
        )
        if sent is None:
            return
        await api.call(
            "POST /memories/{id}/media",
            "POST",
            f"{API}/memories/{memory_id}/media",
            expect=201,
            headers=member.headers,
            json={
                "storage_path": target["storage_path"],
                "file_name": "IMG_0001.jpg",
                "mime_type": "image/jpeg",
                "file_size": len(data),
            },
        )
    member.family.memories.append(memory_id)


async def read_feed(api: Api, member: Member, rng: random.Random) -> None:
    page = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    response = await api.call(
        "GET /feed",
        "GET",
        f"{API}/feed",
        expect=200,
        headers=member.headers,
        params={"page": page, "page_size": 20},
    )
    if response is None:
        return
    thumbnails = [
        media["thumbnail_url"]
        for item in response.json()["items"]
        for media in item["media"]
        if media.get("thumbnail_url")
    ]
    if thumbnails:
        member.family.thumbnails = thumbnails


async def view_thumbnail(api: Api, member: Member, rng: random.Random) -> None:
    if not member.family.thumbnails:
        await read_feed(api, member, rng)
        return
    await api.call(
        "GET /storage/objects/{bucket}/{path} (thumbnail)",
        "GET",
        rng.choice(member.family.thumbnails),
        expect=200,
        headers={"X-Forwarded-For": member.ip},
    )


async def open_memory(api: Api, member: Member, rng: random.Random) -> None:
    memory_id = rng.choice(member.family.memories)
    await api.call(
        "GET /memories/{id}",
        "GET",
        f"{API}/memories/{memory_id}",
        expect=200,
        headers=member.headers,
    )


async def read_comments(api: Api, member: Member, rng: random.Random) -> None:
    memory_id = rng.choice(member.family.memories)
    await api.call(
        "GET /feed/memories/{id}/comments",
        "GET",
        f"{API}/feed/memories/{memory_id}/comments",
        expect=200,
        headers=member.headers,
    )


async def toggle_reaction(api: Api, member: Member, rng: random.Random) -> None:
    key = (rng.choice(member.family.memories), rng.choice(EMOJI))
    if key in member.busy:
        return await read_feed(api, member, rng)
    member.busy.add(key)
    try:
        memory_id, emoji = key
        reaction_id = member.reactions.get(key)
        if reaction_id is None:
            created = await api.call(
                "POST /feed/memories/{id}/reactions",
                "POST",
                f"{API}/feed/memories/{memory_id}/reactions",
                expect=201,
                headers=member.headers,
                json={"emoji": emoji},
            )
            if created is not None:
                member.reactions[key] = created.json()["id"]
        else:
            deleted = await api.call(
                "DELETE /feed/memories/{id}/reactions/{id}",
                "DELETE",
                f"{API}/feed/memories/{memory_id}/reactions/{reaction_id}",
                expect=204,
                headers=member.headers,
            )
            if deleted is not None:
                del member.reactions[key]
    finally:
        member.busy.discard(key)


async def comment(api: Api, member: Member, rng: random.Random) -> None:
    memory_id = rng.choice(member.family.memories)
    top_level = member.family.comments[memory_id]
    body: dict[str, Any] = {"content": rng.choice(["Lovely!", "I remember this 😊", "Miss you"])}
    reply = bool(top_level) and rng.random() < 1 / 3
    if reply:
        body["parent_comment_id"] = rng.choice(top_level)
    created = await api.call(
        "POST /feed/memories/{id}/comments",
        "POST",
        f"{API}/feed/memories/{memory_id}/comments",
        expect=201,
        headers=member.headers,
        json=body,
    )
    if created is not None and not reply:
        top_level.append(created.json()["id"])


async def login(api: Api, member: Member, rng: random.Random) -> None:
    async with member.token_lock:
        response = await api.call(
            "POST /auth/login",
            "POST",
            f"{API}/auth/login",
            expect=200,
            json={"email": member.email, "password": PASSWORD},
            headers={"X-Forwarded-For": member.ip},
        )
        if response is not None:
            member.take_tokens(response.json())


async def refresh(api: Api, member: Member, rng: random.Random) -> None:
    # One rotation at a time per member: presenting a rotated token again is reuse (401).
    async with member.token_lock:
        response = await api.call(
            "POST /auth/refresh",
            "POST",
            f"{API}/auth/refresh",
            expect=200,
            json={"refresh_token": member.refresh_token},
            headers={"X-Forwarded-For": member.ip},
        )
        if response is not None:
            member.take_tokens(response.json())


# The run ---------------------------------------------------------------------------------------


@dataclass
class RssSample:
    seconds: float
    rss: int
    fds: int


async def sample_server(process: psutil.Process, every: float, out: list[RssSample]) -> None:
    started = time.monotonic()
    while True:
        out.append(
            RssSample(time.monotonic() - started, process.memory_info().rss, process.num_fds())
        )
        await asyncio.sleep(every)


async def run_load(
    api: Api,
    families: list[Family],
    photos: list[bytes],
    *,
    duration: float,
    rate: float,
    rng: random.Random,
) -> None:
    stats = api.stats
    members = [member for family in families for member in family.members]
    names, weights = list(ACTIONS), list(ACTIONS.values())
    handlers = {
        "feed": read_feed,
        "thumbnail": view_thumbnail,
        "memory": open_memory,
        "comments": read_comments,
        "react": toggle_reaction,
        "comment": comment,
        "login": login,
        "refresh": refresh,
    }
    in_flight: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    started = time.monotonic()
    deadline = started + duration
    tick = 0
    while True:
        due = started + tick * interval
        if due >= deadline:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        stats.max_lag = max(stats.max_lag, time.monotonic() - due)
        tick += 1
        if len(in_flight) >= MAX_IN_FLIGHT:
            stats.skipped += 1  # the server is not keeping up; reported, never hidden
            continue
        action = rng.choices(names, weights)[0]
        member = rng.choice(members)
        stats.actions[action] += 1
        if action == "post":
            coroutine = post_memory(api, member, rng, photos)
        else:
            coroutine = handlers[action](api, member, rng)
        task = asyncio.create_task(coroutine)
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=60)


_MEDIA_STATUSES = "select processing_status, count(*) from public.memory_media group by 1"


async def wait_for_media(dsn: str, seconds: float) -> dict[str, int]:
    """Media processing must keep up: nothing pending or processing shortly after the load."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + seconds
        while True:
            counts = {row[0]: row[1] for row in await conn.fetch(_MEDIA_STATUSES)}
            if not (counts.get("pending") or counts.get("processing")):
                return counts
            if time.monotonic() > deadline:
                return counts
            await asyncio.sleep(1)
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def trend_mib_per_minute(samples: list[RssSample]) -> float:
    if len(samples) < 2:
        return 0.0
    xs = [s.seconds / 60 for s in samples]
    ys = [s.rss / MiB for s in samples]
    return statistics.linear_regression(xs, ys).slope


def floor_per_minute(samples: list[RssSample]) -> list[RssSample]:
    """The lowest sample of each minute: RSS without transient buffers.

    Each login's argon2id hash holds 64 MiB for a moment, so a sample taken during one reads
    tens of MiB high; the per-minute floor shows what the process keeps.
    """
    by_minute: dict[int, RssSample] = {}
    for sample in samples:
        minute = int(sample.seconds // 60)
        if minute not in by_minute or sample.rss < by_minute[minute].rss:
            by_minute[minute] = sample
    return [by_minute[minute] for minute in sorted(by_minute)]


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def server_log_errors(server: ApiServer) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line or "ERROR" in line:
                found[line[:120]] += 1
            continue
        if record.get("level") in ("error", "critical"):
            found[str(record.get("message"))] += 1
    return found


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    random.seed(args.seed)
    with EmbeddedPostgres(workdir) as postgres:
        await migrate(postgres.dsn)
        with ApiServer(postgres.dsn, workdir / "data", SERVER_ENV) as server:
            process = psutil.Process(server.pid)
            photos = await asyncio.to_thread(lambda: [photo(rng) for _ in range(8)])
            limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
                stats = Stats()
                api = Api(client, stats)
                print(f"setting up {args.families} families on {server.url} ...", flush=True)
                families = await create_families(client, args.families)
                await seed(api, families, photos, rng)
                setup_errors = sum(stats.errors.values())
                assert setup_errors == 0, f"set-up failed: {stats.error_samples}"
                stats = Stats()
                api = Api(client, stats)
                samples: list[RssSample] = []
                sampler = asyncio.create_task(sample_server(process, args.sample_every, samples))
                print(f"load: {args.rate} actions/s for {args.duration} s ...", flush=True)
                load_average_before = os.getloadavg()
                cpu_before = process.cpu_times()
                load_started = time.monotonic()
                try:
                    await run_load(
                        api, families, photos, duration=args.duration, rate=args.rate, rng=rng
                    )
                finally:
                    elapsed = time.monotonic() - load_started
                    sampler.cancel()
                cpu_after = process.cpu_times()
                server_cpu = (cpu_after.user + cpu_after.system) - (
                    cpu_before.user + cpu_before.system
                )
                samples.append(RssSample(elapsed, process.memory_info().rss, process.num_fds()))
            media = await wait_for_media(postgres.dsn, 120)
            log_errors = server_log_errors(server)
            server_alive = server.alive()
    half = [s for s in samples if s.seconds >= elapsed / 2]
    floor = floor_per_minute(samples)
    requests = sum(len(v) for v in stats.latencies.values()) + sum(stats.errors.values())
    return {
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        },
        "load_average_1m": {
            "before": round(load_average_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "server_cpu_percent_of_one_core": round(100 * server_cpu / elapsed, 1),
        "duration_s": round(elapsed, 1),
        "rate_actions_per_s": args.rate,
        "actions": dict(stats.actions),
        "http_requests": requests,
        "http_requests_per_s": round(requests / elapsed, 1),
        "errors": sum(stats.errors.values()),
        "errors_by_endpoint": dict(stats.errors),
        "error_samples": stats.error_samples,
        "skipped_actions": stats.skipped,
        "max_schedule_lag_ms": round(stats.max_lag * 1000, 1),
        "endpoints": {
            endpoint: {
                "count": len(values),
                "p50_ms": round(percentile(values, 50), 1),
                "p99_ms": round(percentile(values, 99), 1),
                "max_ms": round(max(values), 1),
            }
            for endpoint, values in sorted(stats.latencies.items())
        },
        "rss": {
            "start_mib": round(samples[0].rss / MiB, 1),
            "end_mib": round(samples[-1].rss / MiB, 1),
            "min_mib": round(min(s.rss for s in samples) / MiB, 1),
            "max_mib": round(max(s.rss for s in samples) / MiB, 1),
            "trend_mib_per_min": round(trend_mib_per_minute(samples), 3),
            "trend_second_half_mib_per_min": round(trend_mib_per_minute(half), 3),
            "floor_per_minute_mib": [round(s.rss / MiB, 1) for s in floor],
            "floor_trend_mib_per_min": round(trend_mib_per_minute(floor), 3),
            "samples": [[round(s.seconds, 1), round(s.rss / MiB, 1)] for s in samples],
        },
        "open_fds": {"start": samples[0].fds, "end": samples[-1].fds},
        "media_after_load": media,
        "server_log_errors": dict(log_errors),
        "server_alive_at_end": server_alive,
    }


def markdown(results: dict[str, Any]) -> str:
    rss = results["rss"]
    machine = results["machine"]
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}; server, PostgreSQL and load generator on the same machine.",
        "",
        f"Command: `{results['command']}`",
        "",
        f"- {results['duration_s']} s at {results['rate_actions_per_s']} actions/s: "
        f"{results['http_requests']} HTTP requests ({results['http_requests_per_s']} req/s); "
        f"actions skipped for lack of capacity: {results['skipped_actions']}; "
        f"max scheduling lag {results['max_schedule_lag_ms']} ms",
        f"- **Errors: {results['errors']}** {results['errors_by_endpoint'] or ''}",
        f"- Server process CPU: {results['server_cpu_percent_of_one_core']} % of one core "
        f"(uvicorn only; PostgreSQL and the load generator not included); 1-minute load "
        f"average {results['load_average_1m']['before']} before, "
        f"{results['load_average_1m']['after']} after",
        f"- Server RSS: start {rss['start_mib']} MiB, end {rss['end_mib']} MiB, "
        f"min {rss['min_mib']}, max {rss['max_mib']} MiB; trend {rss['trend_mib_per_min']} "
        f"MiB/min over the run, {rss['trend_second_half_mib_per_min']} MiB/min in the second "
        f"half; per-minute floor {rss['floor_per_minute_mib']} MiB, trend "
        f"{rss['floor_trend_mib_per_min']} MiB/min",
        f"- Open file descriptors: {results['open_fds']['start']} → {results['open_fds']['end']}",
        f"- Media after the load: {results['media_after_load']}; "
        f"server log errors: {sum(results['server_log_errors'].values())}",
        "",
        "| Endpoint | Requests | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for endpoint, row in results["endpoints"].items():
        cells = [f"`{endpoint}`", row["count"], row["p50_ms"], row["p99_ms"], row["max_ms"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--rate", type=float, default=20, help="user actions started per second")
    parser.add_argument("--families", type=int, default=5, help="families of three members")
    parser.add_argument("--sample-every", type=float, default=10, help="RSS sample period (s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    # Short path: PostgreSQL's Unix socket lives in it.
    with tempfile.TemporaryDirectory(prefix="tl-soak-") as tmp:
        results = asyncio.run(soak(args, Path(tmp)))

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(markdown(results))
    print(f"\nwritten to {target.relative_to(ROOT)}")
    if results["errors"] or results["server_log_errors"] or not results["server_alive_at_end"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
