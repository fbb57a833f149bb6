"""`timeless seed-demo`: a demo family with real photos and a short video.

Everything goes through the real API in-process (registration, invitations, upload URLs,
signed uploads, media registration), so the media are processed by the real pipeline and
the demo looks exactly like data a family would create. Running it again finds the demo
adult and only prints how to log in.

Refused in production: the demo accounts have a published password.
"""

import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
from PIL import Image, ImageDraw
from pydantic import SecretStr

from app.config import Environment, Settings, get_settings
from app.main import create_app

DEMO_PASSWORD = "timeless-demo-password"
DEMO_EMAILS = {
    "adult": "demo.adult@example.com",
    "teen": "demo.teen@example.com",
    "grandparent": "demo.grandparent@example.com",
}
API = "/api/v1"


@dataclass
class DemoFamily:
    created: bool
    adult_email: str
    password: str
    # Only known on the run that provisions the child (the password is shown once).
    child_login: tuple[str, str] | None = None
    memory_ids: list[str] = field(default_factory=list)


async def seed_demo(
    dsn: str, settings: Settings | None = None, *, base_url: str | None = None
) -> DemoFamily:
    """Create the demo family (once) and print how to sign in.

    `base_url` is where the running server is reached (`timeless seed-demo --base-url`);
    without it, the settings say (PUBLIC_BASE_URL, else HOST:PORT).
    """
    settings = (settings or get_settings()).model_copy(update={"database_url": SecretStr(dsn)})
    if settings.environment is Environment.PRODUCTION:
        raise SystemExit("seed-demo creates accounts with a known password; not in production")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, timeout=60
        ) as client:
            demo = await _seed(client)
    _print_login(demo, (base_url or settings.base_url).rstrip("/"), settings)
    return demo


async def _seed(client: httpx.AsyncClient) -> DemoFamily:
    login = await client.post(
        f"{API}/auth/login", json={"email": DEMO_EMAILS["adult"], "password": DEMO_PASSWORD}
    )
    if login.status_code == 200:
        return DemoFamily(created=False, adult_email=DEMO_EMAILS["adult"], password=DEMO_PASSWORD)

    adult = _ok(
        await client.post(
            f"{API}/auth/register/adult",
            json={
                "email": DEMO_EMAILS["adult"],
                "password": DEMO_PASSWORD,
                "display_name": "Alex Demo",
                "family_name": "The Demo Family",
            },
        )
    )
    adult_auth = _bearer(adult["tokens"]["access_token"])
    teen = await _invite(client, adult_auth, "teen", "Sam Demo")
    grandparent = await _invite(client, adult_auth, "grandparent", "Grandma Rose")
    child = _ok(
        await client.post(
            f"{API}/auth/provision/child", json={"display_name": "Mia Demo"}, headers=adult_auth
        )
    )
    child_auth = _bearer(
        _ok(
            await client.post(
                f"{API}/auth/login",
                json={"email": child["username"], "password": child["password"]},
            )
        )["access_token"]
    )
    _ok(
        await client.post(
            f"{API}/auth/register/pet", json={"display_name": "Biscuit"}, headers=adult_auth
        )
    )

    demo = DemoFamily(
        created=True,
        adult_email=DEMO_EMAILS["adult"],
        password=DEMO_PASSWORD,
        child_login=(child["username"], child["password"]),
    )
    memories: list[tuple[dict[str, str], dict[str, Any], list[tuple[str, bytes, str]]]] = [
        (
            adult_auth,
            {
                "title": "Summer at the lake",
                "description": "The first swim of the year, and Biscuit refused to get wet.",
                "memory_date": "2024-07-14",
                "location": "Lake Constance",
                "tags": ["summer", "lake", "biscuit"],
                "status": "published",
            },
            [
                ("lake.jpg", _scene("Summer at the lake", (80, 160, 230), (40, 110, 170)), "jpeg"),
                ("waves.mp4", _video(), "mp4"),
            ],
        ),
        (
            grandparent,
            {
                "title": "Grandma's apple pie",
                "description": "The recipe, finally written down.",
                "memory_date": "2023-10-02",
                "tags": ["recipes", "autumn"],
                "status": "published",
            },
            [("pie.jpg", _scene("Apple pie", (250, 210, 150), (170, 90, 40)), "jpeg")],
        ),
        (
            teen,
            {
                "title": "First concert",
                "location": "Berlin",
                "tags": ["music"],
                "status": "published",
            },
            [("stage.png", _scene("First concert", (30, 20, 60), (200, 40, 120), "PNG"), "png")],
        ),
        (
            child_auth,
            {
                "title": "My drawing of Biscuit",
                "tags": ["drawing", "biscuit"],
                "status": "published",
            },
            [("biscuit.png", _scene("Biscuit!", (255, 250, 220), (250, 170, 60), "PNG"), "png")],
        ),
        (
            adult_auth,
            {"title": "Birthday surprise (planning)", "description": "Don't tell Sam."},
            [],
        ),
        (
            adult_auth,
            {"title": "The old house", "memory_date": "1998-05-20", "status": "published"},
            [("house.jpg", _scene("The old house", (200, 200, 190), (120, 100, 90)), "jpeg")],
        ),
    ]
    for auth, body, files in memories:
        memory = _ok(await client.post(f"{API}/memories", json=body, headers=auth))
        for file_name, data, kind in files:
            await _upload(client, auth, memory["id"], file_name, data, _MIME[kind])
        demo.memory_ids.append(memory["id"])
    archive = {"status": "archived"}
    _ok(await client.put(f"{API}/memories/{demo.memory_ids[-1]}", json=archive, headers=adult_auth))
    return demo


_MIME = {"jpeg": "image/jpeg", "png": "image/png", "mp4": "video/mp4"}


async def _invite(
    client: httpx.AsyncClient, inviter: dict[str, str], role: str, name: str
) -> dict[str, str]:
    email = DEMO_EMAILS[role]
    invite = _ok(
        await client.post(f"{API}/invites", json={"email": email, "role": role}, headers=inviter)
    )
    joined = _ok(
        await client.post(
            f"{API}/invites/{invite['token']}/accept",
            json={"email": email, "password": DEMO_PASSWORD, "display_name": name},
        )
    )
    return _bearer(joined["tokens"]["access_token"])


async def _upload(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    memory_id: str,
    file_name: str,
    data: bytes,
    mime_type: str,
) -> None:
    """What the web app does: ask for an upload URL, send the bytes there, register the file."""
    ticket = _ok(
        await client.post(
            f"{API}/storage/upload-url",
            json={
                "memory_id": memory_id,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": len(data),
            },
            headers=auth,
        )
    )
    _ok(
        await client.request(
            ticket["method"], ticket["upload_url"], content=data, headers=ticket["headers"]
        )
    )
    media = {
        "storage_path": ticket["storage_path"],
        "file_name": file_name,
        "mime_type": mime_type,
        "file_size": len(data),
    }
    # In-process, the background processing has finished when this returns.
    _ok(await client.post(f"{API}/memories/{memory_id}/media", json=media, headers=auth))


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise SystemExit(
            f"seed-demo: {response.request.method} {response.request.url.path} "
            f"answered {response.status_code}: {response.text}"
        )
    return response.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Generated media -------------------------------------------------------------------------


def _scene(
    title: str,
    sky: tuple[int, int, int],
    ground: tuple[int, int, int],
    image_format: str = "JPEG",
) -> bytes:
    """A 1600x1200 picture: a sky gradient, a sun, rolling hills and a caption."""
    width, height = 1600, 1200
    image = Image.new("RGB", (width, height), sky)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = tuple(min(255, channel + y // 6) for channel in sky)
        draw.line([(0, y), (width, y)], fill=shade)
    draw.ellipse((1150, 120, 1390, 360), fill=(255, 220, 90))
    for index, offset in enumerate((0, 140, 280)):
        colour = tuple(max(0, channel - 25 * index) for channel in ground)
        points = [
            (x, height // 2 + offset + int(60 * math.sin(x / 180 + index)))
            for x in range(0, width + 1, 20)
        ]
        draw.polygon([*points, (width, height), (0, height)], fill=colour)
    draw.rectangle((60, height - 170, 60 + 22 * len(title) + 60, height - 70), fill=(0, 0, 0))
    draw.text((90, height - 140), title, fill=(255, 255, 255), font_size=48)
    out = io.BytesIO()
    image.save(out, image_format, **({"quality": 88} if image_format == "JPEG" else {}))
    return out.getvalue()


def _video(seconds: float = 2.0, fps: int = 24) -> bytes:
    """A short H.264 MP4 (MPEG-4 Part 2 if H.264 is not available): a sun over waves."""
    size = (640, 360)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "waves.mp4"
        with av.open(str(path), mode="w", format="mp4") as output:
            try:
                stream = output.add_stream("libx264", rate=fps)
            except (av.FFmpegError, ValueError):
                stream = output.add_stream("mpeg4", rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for index in range(int(seconds * fps)):
                frame_image = Image.new("RGB", size, (90, 170, 235))
                draw = ImageDraw.Draw(frame_image)
                x = 40 + index * 10
                draw.ellipse((x, 40, x + 80, 120), fill=(255, 215, 80))
                for band in range(4):
                    y = 220 + band * 35
                    points = [
                        (px, y + int(12 * math.sin(px / 40 + index / 3 + band)))
                        for px in range(0, size[0] + 1, 16)
                    ]
                    draw.polygon(
                        [*points, (size[0], size[1]), (0, size[1])], fill=(30, 90 + band * 25, 160)
                    )
                frame = av.VideoFrame.from_image(frame_image)
                frame.pts = index
                for packet in stream.encode(frame):
                    output.mux(packet)
            for packet in stream.encode():
                output.mux(packet)
        return path.read_bytes()


def _print_login(demo: DemoFamily, base_url: str, settings: Settings) -> None:
    state = "Created the demo family" if demo.created else "The demo family already exists"
    print(f"{state}. Sign in with POST {base_url}{settings.api_prefix}/auth/login")
    print(f"  (API docs: {base_url}/docs; web app, FRONTEND_URL: {settings.frontend_url}):")
    print(f"  adult:        {DEMO_EMAILS['adult']} / {demo.password}")
    print(f"  teen:         {DEMO_EMAILS['teen']} / {demo.password}")
    print(f"  grandparent:  {DEMO_EMAILS['grandparent']} / {demo.password}")
    if demo.child_login is not None:
        username, password = demo.child_login
        print(f"  child:        {username} / {password}  (shown only now)")
    else:
        print("  child:        its generated password was shown when the demo was created")
