"""Reactions: the emoji set, one of each per member, own-only deletion, visibility, counters."""

import asyncio
import uuid

import pytest

from tests.helpers.feed import API, EMOJI, counters, make_memory, react


def url(memory_id: str, reaction_id: str | None = None) -> str:
    base = f"{API}/feed/memories/{memory_id}/reactions"
    return f"{base}/{reaction_id}" if reaction_id else base


async def test_react_returns_the_reaction_and_counts_it(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)

    response = await client.post(
        url(memory_id), json={"emoji": "🎉"}, headers=family.by_role("teen").headers
    )

    assert response.status_code == 201, response.text
    reaction = response.json()
    assert set(reaction) == {"id", "memory_id", "user_id", "emoji", "created_at", "updated_at"}
    assert reaction["memory_id"] == memory_id
    assert reaction["user_id"] == family.by_role("teen").id
    assert reaction["emoji"] == "🎉"
    stored = await counters(pg, memory_id)
    assert stored["reaction_count"] == 1
    assert stored["reactions_by_emoji"] == {"🎉": 1}


@pytest.mark.parametrize("emoji", EMOJI)
async def test_every_emoji_of_the_set_is_accepted(client, factory, pg, emoji):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    await react(client, family.adult, memory_id, emoji)


@pytest.mark.parametrize("body", [{"emoji": "👎"}, {"emoji": "❤"}, {"emoji": ""}, {}, {"emoji": 1}])
async def test_other_emoji_are_422(client, factory, pg, body):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    response = await client.post(url(memory_id), json=body, headers=family.adult.headers)
    assert response.status_code == 422
    assert (await counters(pg, memory_id))["reactions"] == 0


async def test_same_member_emoji_and_memory_twice_is_409(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    await react(client, family.adult, memory_id, "👍")

    again = await client.post(url(memory_id), json={"emoji": "👍"}, headers=family.adult.headers)

    assert again.status_code == 409
    assert "👍" in again.json()["detail"]
    # Another emoji, or another member with the same one, is fine.
    await react(client, family.adult, memory_id, "❤️")
    await react(client, family.by_role("teen"), memory_id, "👍")
    assert (await counters(pg, memory_id))["reaction_count"] == 3


async def test_two_identical_concurrent_reactions_give_one_201_and_one_409(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)

    responses = await asyncio.gather(
        *[
            client.post(url(memory_id), json={"emoji": "🔥"}, headers=family.adult.headers)
            for _ in range(2)
        ]
    )

    assert sorted(r.status_code for r in responses) == [201, 409]
    stored = await counters(pg, memory_id)
    assert stored["reaction_count"] == stored["reactions"] == 1


async def test_list_reactions_oldest_first(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    memory_id = await make_memory(pg, family.adult)
    first = await react(client, family.by_role("teen"), memory_id, "😂")
    second = await react(client, family.adult, memory_id, "😂")

    response = await client.get(url(memory_id), headers=family.adult.headers)

    assert response.status_code == 200
    assert response.json() == [first, second]
    empty = await make_memory(pg, family.adult)
    assert (await client.get(url(empty), headers=family.adult.headers)).json() == []


async def test_delete_own_reaction(client, factory, pg):
    family = await factory.family(["adult", "child"])
    memory_id = await make_memory(pg, family.adult)
    child = family.by_role("child")
    mine = await react(client, child, memory_id, "😮")
    await react(client, child, memory_id, "😢")

    response = await client.delete(url(memory_id, mine["id"]), headers=child.headers)

    assert response.status_code == 204
    stored = await counters(pg, memory_id)
    assert stored["reaction_count"] == stored["reactions"] == 1
    assert stored["reactions_by_emoji"] == {"😢": 1}
    gone = await client.delete(url(memory_id, mine["id"]), headers=child.headers)
    assert gone.status_code == 404


async def test_someone_elses_reaction_is_403_and_stays(client, factory, pg):
    """Own reactions only, whatever the role: an adult cannot remove a child's reaction."""
    family = await factory.family(["adult", "child"])
    memory_id = await make_memory(pg, family.adult)
    childs = await react(client, family.by_role("child"), memory_id, "💯")

    response = await client.delete(url(memory_id, childs["id"]), headers=family.adult.headers)

    assert response.status_code == 403
    assert (await counters(pg, memory_id))["reaction_count"] == 1


async def test_reaction_id_must_belong_to_the_memory(client, factory, pg):
    family = await factory.family(["adult"])
    memory_id = await make_memory(pg, family.adult)
    elsewhere = await make_memory(pg, family.adult)
    reaction = await react(client, family.adult, memory_id, "👍")

    wrong = await client.delete(url(elsewhere, reaction["id"]), headers=family.adult.headers)
    missing = await client.delete(url(memory_id, str(uuid.uuid4())), headers=family.adult.headers)

    assert wrong.status_code == 404 and missing.status_code == 404
    assert (await counters(pg, memory_id))["reaction_count"] == 1


async def test_memories_the_caller_cannot_see_are_404_and_unchanged(client, factory, pg):
    family = await factory.family(["adult", "teen"])
    other = await factory.family(["adult"])
    theirs = await make_memory(pg, other.adult)
    teen_draft = await make_memory(pg, family.by_role("teen"), status="draft")
    their_reaction = await react(client, other.adult, theirs, "👍")

    for memory_id in (theirs, teen_draft, str(uuid.uuid4())):
        post = await client.post(url(memory_id), json={"emoji": "👍"}, headers=family.adult.headers)
        listed = await client.get(url(memory_id), headers=family.adult.headers)
        assert post.status_code == 404, post.text
        assert listed.status_code == 404
    delete = await client.delete(url(theirs, their_reaction["id"]), headers=family.adult.headers)
    assert delete.status_code == 404
    assert (await counters(pg, theirs))["reaction_count"] == 1
    assert (await counters(pg, teen_draft))["reaction_count"] == 0
    # The author still sees (and may react to) their own draft.
    await react(client, family.by_role("teen"), teen_draft, "🎉")


async def test_archived_memories_can_be_reacted_to(client, factory, pg):
    family = await factory.family(["adult", "grandparent"])
    memory_id = await make_memory(pg, family.adult, status="archived")
    await react(client, family.by_role("grandparent"), memory_id, "❤️")
