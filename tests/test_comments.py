"""Comments: threads, the depth limit, soft delete, edit/delete permissions, visibility."""

import uuid

import pytest

from tests.helpers.feed import API, comment, counters, make_memory


def url(memory_id: str, comment_id: str | None = None) -> str:
    base = f"{API}/feed/memories/{memory_id}/comments"
    return f"{base}/{comment_id}" if comment_id else base


async def threads(client, member, memory_id: str, **params) -> list[dict]:
    response = await client.get(url(memory_id), params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    result: list[dict] = response.json()
    return result


# Creating -------------------------------------------------------------------------------------


async def test_comment_returns_the_full_comment(client, factory, pg):
    family = await factory.family(["adult", "child"])
    child = family.by_role("child")
    memory_id = await make_memory(pg, family.adult)

    response = await client.post(
        url(memory_id), json={"content": "  I loved it  "}, headers=child.headers
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["content"] == "I loved it"
    assert created["memory_id"] == memory_id and created["user_id"] == child.id
    assert created["author"]["id"] == child.id and created["author"]["role"] == "child"
    assert created["parent_comment_id"] is None and created["deleted_at"] is None
    assert created["reply_count"] == 0 and created["replies"] == []
    assert (await counters(pg, memory_id))["comment_count"] == 1


@pytest.mark.parametrize("body", [{"content": ""}, {"content": "   "}, {"content": "x" * 5001}, {}])
async def test_content_must_be_1_to_5000_characters(client, factory, pg, body):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    response = await client.post(url(memory_id), json=body, headers=family.adult.headers)
    assert response.status_code == 422
    assert (await counters(pg, memory_id))["comment_count"] == 0
    await comment(client, family.adult, memory_id, "x" * 5000)


async def test_replies_go_three_levels_deep_and_no_further(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    parent = await comment(client, family.adult, memory_id, "level 0")
    for level in (1, 2, 3):
        parent = await comment(
            client, family.by_role("teen"), memory_id, f"level {level}", parent["id"]
        )

    too_deep = await client.post(
        url(memory_id),
        json={"content": "level 4", "parent_comment_id": parent["id"]},
        headers=family.adult.headers,
    )

    assert too_deep.status_code == 400
    assert "3 levels" in too_deep.json()["detail"]
    assert (await counters(pg, memory_id))["comment_count"] == 4


async def test_parent_must_be_a_comment_on_the_same_memory(client, factory, pg):
    family = await factory.family(["adult"])
    other = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    elsewhere = await make_memory(pg, family.adult)
    theirs = await make_memory(pg, other.adult)
    on_elsewhere = await comment(client, family.adult, elsewhere)
    on_theirs = await comment(client, other.adult, theirs)

    for parent in (on_elsewhere["id"], on_theirs["id"], str(uuid.uuid4())):
        response = await client.post(
            url(memory_id),
            json={"content": "reply", "parent_comment_id": parent},
            headers=family.adult.headers,
        )
        assert response.status_code == 400, response.text
    assert (await counters(pg, memory_id))["comment_count"] == 0


async def test_no_reply_to_a_deleted_comment(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    parent = await comment(client, family.adult, memory_id)
    await client.delete(url(memory_id, parent["id"]), headers=family.adult.headers)

    response = await client.post(
        url(memory_id),
        json={"content": "reply", "parent_comment_id": parent["id"]},
        headers=family.adult.headers,
    )
    assert response.status_code == 400


# Reading --------------------------------------------------------------------------------------


async def test_threads_are_nested_oldest_first_with_reply_counts(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    memory_id = await make_memory(pg, family.adult)
    first = await comment(client, family.adult, memory_id, "first")
    second = await comment(client, teen, memory_id, "second")
    reply_a = await comment(client, teen, memory_id, "reply a", first["id"])
    reply_b = await comment(client, family.adult, memory_id, "reply b", first["id"])
    deeper = await comment(client, family.adult, memory_id, "deeper", reply_a["id"])

    result = await threads(client, teen, memory_id)

    assert [c["id"] for c in result] == [first["id"], second["id"]]
    assert result[0]["reply_count"] == 2 and result[1]["reply_count"] == 0
    assert [c["id"] for c in result[0]["replies"]] == [reply_a["id"], reply_b["id"]]
    assert result[0]["replies"][0]["replies"][0]["id"] == deeper["id"]
    assert result[0]["replies"][0]["replies"][0]["parent_comment_id"] == reply_a["id"]
    assert result[1]["replies"] == []

    flat = await threads(client, teen, memory_id, include_replies="false")
    assert [c["id"] for c in flat] == [first["id"], second["id"]]
    assert all(c["replies"] == [] for c in flat) and flat[0]["reply_count"] == 2


async def test_limit_counts_top_level_comments(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    made = [await comment(client, family.adult, memory_id, f"c{i}") for i in range(4)]
    await comment(client, family.adult, memory_id, "reply", made[0]["id"])

    result = await threads(client, family.adult, memory_id, limit=2)

    assert [c["id"] for c in result] == [made[0]["id"], made[1]["id"]]
    assert len(result[0]["replies"]) == 1
    for bad in (0, 101):
        response = await client.get(
            url(memory_id), params={"limit": bad}, headers=family.adult.headers
        )
        assert response.status_code == 422
    quiet = await make_memory(pg, family.adult)
    assert await threads(client, family.adult, quiet) == []


# Editing --------------------------------------------------------------------------------------


async def test_author_edits_own_comment(client, factory, pg):
    family = await factory.family(["adult", "child"])
    child = family.by_role("child")
    memory_id = await make_memory(pg, family.adult)
    created = await comment(client, child, memory_id, "first try")

    response = await client.put(
        url(memory_id, created["id"]), json={"content": "second try"}, headers=child.headers
    )

    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["content"] == "second try" and edited["id"] == created["id"]
    assert edited["updated_at"] > created["updated_at"]
    assert (await threads(client, family.adult, memory_id))[0]["content"] == "second try"


async def test_only_the_author_edits_even_an_adult_gets_403(client, factory, pg):
    family = await factory.family(["adult", "teen", "grandparent"])
    memory_id = await make_memory(pg, family.adult)
    created = await comment(client, family.by_role("teen"), memory_id, "mine")

    for member in (family.adult, family.by_role("grandparent")):
        response = await client.put(
            url(memory_id, created["id"]), json={"content": "changed"}, headers=member.headers
        )
        assert response.status_code == 403
    assert (await threads(client, family.adult, memory_id))[0]["content"] == "mine"


async def test_edit_validates_and_refuses_deleted_or_missing(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    created = await comment(client, family.adult, memory_id)

    empty = await client.put(
        url(memory_id, created["id"]), json={"content": ""}, headers=family.adult.headers
    )
    assert empty.status_code == 422
    missing = await client.put(
        url(memory_id, str(uuid.uuid4())), json={"content": "x"}, headers=family.adult.headers
    )
    assert missing.status_code == 404
    await client.delete(url(memory_id, created["id"]), headers=family.adult.headers)
    deleted = await client.put(
        url(memory_id, created["id"]), json={"content": "back"}, headers=family.adult.headers
    )
    assert deleted.status_code == 409


# Deleting -------------------------------------------------------------------------------------


async def test_delete_is_soft_and_keeps_the_thread(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    teen = family.by_role("teen")
    memory_id = await make_memory(pg, family.adult)
    parent = await comment(client, teen, memory_id, "private thought")
    reply = await comment(client, family.adult, memory_id, "answer", parent["id"])
    assert (await counters(pg, memory_id))["comment_count"] == 2

    response = await client.delete(url(memory_id, parent["id"]), headers=teen.headers)

    assert response.status_code == 204
    [thread] = await threads(client, family.adult, memory_id)
    assert thread["id"] == parent["id"]
    assert thread["content"] == "[deleted]" and thread["deleted_at"] is not None
    assert thread["reply_count"] == 1 and thread["replies"][0]["id"] == reply["id"]
    stored = await counters(pg, memory_id)
    assert stored["comment_count"] == stored["comments"] == 1
    # The text itself is gone from the database, not just hidden.
    content = await pg.fetchval(
        "select content from public.memory_comments where id = $1", uuid.UUID(parent["id"])
    )
    assert content == "[deleted]"
    # Deleting again changes nothing.
    again = await client.delete(url(memory_id, parent["id"]), headers=teen.headers)
    assert again.status_code == 204
    assert (await counters(pg, memory_id))["comment_count"] == 1


async def test_delete_missing_comment_is_404(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    response = await client.delete(url(memory_id, str(uuid.uuid4())), headers=family.adult.headers)
    assert response.status_code == 404


# The contract's permission table, transcribed (not read from rbac.PERMISSIONS):
#   | React, comment, edit own comment | yes | yes | yes | yes |
#   | Delete own comment               | yes | yes | no  | yes |
#   | Delete any comment in family     | yes | no  | no  | yes |
ROLES = ["adult", "teen", "child", "grandparent"]
TABLE = {
    "react": {"adult": True, "teen": True, "child": True, "grandparent": True},
    "comment": {"adult": True, "teen": True, "child": True, "grandparent": True},
    "edit own comment": {"adult": True, "teen": True, "child": True, "grandparent": True},
    "delete own comment": {"adult": True, "teen": True, "child": False, "grandparent": True},
    "delete any comment": {"adult": True, "teen": False, "child": False, "grandparent": True},
}
CASES = [(operation, role) for operation in TABLE for role in ROLES]


@pytest.mark.parametrize(("operation", "role"), CASES, ids=[f"{o}-{r}" for o, r in CASES])
async def test_permission_table(client, factory, pg, operation, role):
    family = await factory.family(ROLES)
    actor = family.by_role(role)
    # Someone else's comment: the adult's, or the teen's when the adult acts.
    other = family.by_role("teen") if role == "adult" else family.adult
    memory_id = await make_memory(pg, other)
    allowed = TABLE[operation][role]

    if operation == "react":
        response = await client.post(
            f"{API}/feed/memories/{memory_id}/reactions",
            json={"emoji": "👍"},
            headers=actor.headers,
        )
        expected = 201
    elif operation == "comment":
        response = await client.post(url(memory_id), json={"content": "hi"}, headers=actor.headers)
        expected = 201
    elif operation == "edit own comment":
        own = await comment(client, actor, memory_id)
        response = await client.put(
            url(memory_id, own["id"]), json={"content": "edited"}, headers=actor.headers
        )
        expected = 200
    else:
        author = actor if operation == "delete own comment" else other
        target = await comment(client, author, memory_id)
        response = await client.delete(url(memory_id, target["id"]), headers=actor.headers)
        expected = 204

    assert response.status_code == (expected if allowed else 403), response.text
    if not allowed:
        assert "role" in response.json()["detail"]
        assert (await counters(pg, memory_id))["comment_count"] == 1


# Visibility -----------------------------------------------------------------------------------


async def test_memories_the_caller_cannot_see_are_404_and_unchanged(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    other = await factory.family(["adult"])
    theirs = await make_memory(pg, other.adult)
    teen_draft = await make_memory(pg, family.by_role("teen"), status="draft")
    their_comment = await comment(client, other.adult, theirs, "ours")

    for memory_id in (theirs, teen_draft, str(uuid.uuid4())):
        post = await client.post(
            url(memory_id), json={"content": "x"}, headers=family.adult.headers
        )
        listed = await client.get(url(memory_id), headers=family.adult.headers)
        assert post.status_code == 404, post.text
        assert listed.status_code == 404
    put = await client.put(
        url(theirs, their_comment["id"]), json={"content": "hacked"}, headers=family.adult.headers
    )
    delete = await client.delete(url(theirs, their_comment["id"]), headers=family.adult.headers)
    assert put.status_code == 404 and delete.status_code == 404
    assert (await threads(client, other.adult, theirs))[0]["content"] == "ours"
    assert (await counters(pg, theirs))["comment_count"] == 1
    assert (await counters(pg, teen_draft))["comment_count"] == 0
