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
