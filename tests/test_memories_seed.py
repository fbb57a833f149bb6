"""`timeless seed-demo`: a demo family whose media went through the real pipeline."""

from app.seed import DEMO_EMAILS, DEMO_PASSWORD, seed_demo
from tests.helpers.media_samples import API


async def test_seed_demo_creates_a_family_and_runs_again_without_harm(
    client, factory, settings, capsys
):
    dsn = settings.database_url.get_secret_value()

    first = await seed_demo(dsn, settings)

    assert first.created
    out = capsys.readouterr().out
    assert DEMO_EMAILS["adult"] in out and DEMO_PASSWORD in out
    assert first.child_login is not None and first.child_login[0] in out

    tokens = await factory.login(DEMO_EMAILS["adult"], DEMO_PASSWORD)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    family = (await client.get(f"{API}/families/me", headers=headers)).json()
    assert sorted(m["role"] for m in family["members"]) == [
        "adult",
        "child",
        "grandparent",
        "pet",
        "teen",
    ]
    memories = (await client.get(f"{API}/memories", params={"limit": 100}, headers=headers)).json()
    assert {m["status"] for m in memories} == {"draft", "published", "archived"}
    media = [item for memory in memories for item in memory["media"]]
    assert {item["mime_type"] for item in media} >= {"image/jpeg", "image/png", "video/mp4"}
    assert all(item["processing_status"] == "completed" for item in media), media
    video = next(item for item in media if item["mime_type"] == "video/mp4")
    assert video["duration"] > 1.5
    child_username, child_password = first.child_login
    await factory.login(child_username, child_password)

    second = await seed_demo(dsn, settings)

    assert not second.created
    assert DEMO_EMAILS["adult"] in capsys.readouterr().out
    again = await client.get(f"{API}/memories", params={"limit": 100}, headers=headers)
    assert len(again.json()) == len(memories)


# The URLs it prints (review item 16). After the test above: the demo family exists by now.

WILDCARD = "0.0.0.0"  # noqa: S104 (a HOST setting, never bound here)


async def test_seed_demo_prints_the_address_it_is_given(settings, capsys):
    dsn = settings.database_url.get_secret_value()

    await seed_demo(dsn, settings, base_url="http://192.0.2.5:9000/")

    out = capsys.readouterr().out
    assert "POST http://192.0.2.5:9000/api/v1/auth/login" in out
    assert "http://192.0.2.5:9000/docs" in out
    assert "127.0.0.1:8000" not in out and "testserver" not in out


async def test_seed_demo_otherwise_prints_the_servers_address_from_the_settings(settings, capsys):
    dsn = settings.database_url.get_secret_value()
    served = settings.model_copy(
        update={
            "host": WILDCARD,
            "port": 9123,
            "public_base_url": "",
            "frontend_url": "http://192.0.2.5:3000",
        }
    )

    await seed_demo(dsn, served)

    out = capsys.readouterr().out
    # Not http://0.0.0.0:9123, which no browser can open.
    assert "POST http://127.0.0.1:9123/api/v1/auth/login" in out
    assert "http://192.0.2.5:3000" in out and "localhost:5173" not in out
    assert WILDCARD not in out


def test_timeless_seed_demo_takes_base_url(monkeypatch, migrated_database_url):
    import logging
    import signal

    from app import cli
    from app.config import get_settings

    called: dict[str, object] = {}

    async def fake_seed_demo(dsn: str, **kwargs: object) -> None:
        called.update(dsn=dsn, **kwargs)

    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setattr("app.seed.seed_demo", fake_seed_demo)
    monkeypatch.setattr(cli, "_migrate", lambda dsn: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_sigterm = signal.getsignal(signal.SIGTERM)
    get_settings.cache_clear()  # read DATABASE_URL as set here
    try:
        cli.main(["seed-demo", "--base-url", "https://demo.example.org"])
    finally:
        # main() sets up the service's logging and SIGTERM handling; give pytest its own back.
        root.handlers[:], root.level = handlers, level
        signal.signal(signal.SIGTERM, on_sigterm)
        get_settings.cache_clear()
    assert called == {"dsn": migrated_database_url, "base_url": "https://demo.example.org"}
