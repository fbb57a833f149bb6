# ruff: noqa: E501 (the mutations quote the source lines they change, whole)
"""Mutation check: plant each bug of a curated list in a copy of the repository, run the tests
aimed at it, and report whether they caught it.

    python tests/mutations.py              # every mutation (slow: a test session each)
    python tests/mutations.py -k memories  # those whose name contains "memories" (repeatable)
    python tests/mutations.py --list       # names only
    python tests/mutations.py --check      # each applies exactly once; runs nothing

Not part of the test suite (pytest collects test_*.py only) and not in CI: each mutation
starts its own test session (its own PostgreSQL), so the whole list takes a while. Run it
when a rule changes, and record the result in docs/security.md.

Off-the-shelf mutators cannot mutate SQL policies, where most of this project's rules live,
hence a curated list: the permission table, every row level security policy, the server-owned
columns, token and signed-URL checks, removal, counters, limits, readiness and metrics. Each
mutation is a text replacement that must match exactly once (so a refactor that moves the
text makes the script fail loudly rather than test nothing). A mutation marked `equivalent`
cannot change behaviour (another layer refuses first); it is run anyway and reported apart.

Outcome per mutation: caught (the tests failed), survived (they passed: a hole in the tests),
error (the tests could not run: collection error, timeout). Before the mutations, the targeted
tests run once on the unchanged copy; they must pass, or every "caught" would mean nothing.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = "supabase/migrations"
FOUNDATION = f"{MIGRATIONS}/20250101000000_foundation.sql"
MEMORIES = f"{MIGRATIONS}/20250102000000_memories.sql"
REACTIONS_COMMENTS = f"{MIGRATIONS}/20250103000000_reactions_comments.sql"
FEED = f"{MIGRATIONS}/20250103100000_feed.sql"
ANALYTICS = f"{MIGRATIONS}/20250104000000_analytics.sql"
COLUMNS = f"{MIGRATIONS}/20250201000000_column_privileges.sql"
RBAC = "app/models/rbac.py"

RLS_TESTS = ("tests/test_rls_policies.py", "tests/test_rls.py")
ROLE_TESTS = ("tests/test_permissions_family.py", "tests/test_memories_permissions.py")
DIRECT_DB_TESTS = ("tests/attacks/test_direct_db.py",)
TOKEN_TESTS = ("tests/attacks/test_tokens.py", "tests/test_auth.py")
STORAGE_TESTS = ("tests/test_storage.py", "tests/attacks/test_uploads.py")
COUNTER_TESTS = (
    "tests/test_reactions.py",
    "tests/test_comments.py",
    "tests/test_feed_integrity.py",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    find: str
    replace: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why it cannot change behaviour, if it cannot


def _role(permission: str, before: str, after: str, tests: tuple[str, ...]) -> Mutation:
    return Mutation(
        f"rbac: {permission} {{{after}}}",
        RBAC,
        f"Permission.{permission}: frozenset({{{before}}}),",
        f"Permission.{permission}: frozenset({{{after}}}),",
        tests,
    )


def _policy(name: str, path: str, find: str, replace: str, equivalent: str = "") -> Mutation:
    return Mutation(f"policy: {name}", path, find, replace, RLS_TESTS, equivalent)


_VISIBLE = "exists (select 1 from public.memories m where m.id = {table}.memory_id)"

MUTATIONS: list[Mutation] = [
    # --- the permission table (app/models/rbac.py) -------------------------------------------
    _role("UPDATE_FAMILY", "_A, _G", "_A, _T, _G", ROLE_TESTS),
    _role("INVITE_MEMBERS", "_A, _G", "_A, _T, _G", ROLE_TESTS),
    _role("PROVISION_CHILD", "_A", "_A, _G", ROLE_TESTS),
    _role("CREATE_PET", "_A, _G", "_A, _T, _G", ROLE_TESTS),
    _role("REMOVE_MEMBER", "_A", "_A, _G", ROLE_TESTS),
    _role("EDIT_ANY_MEMORY", "_A, _G", "_A, _C, _G", ROLE_TESTS),
    _role("DELETE_OWN_MEMORY", "_A, _T, _G", "_A, _T, _C, _G", ROLE_TESTS),
    _role("DELETE_ANY_MEMORY", "_A", "_A, _T", ROLE_TESTS),
    _role("DELETE_OWN_COMMENT", "_A, _T, _G", "_A, _T, _C, _G", ("tests/test_comments.py",)),
    _role("DELETE_ANY_COMMENT", "_A, _G", "_A, _T, _G", ("tests/test_comments.py",)),
    _role("VIEW_ANALYTICS", "_A, _G", "_A, _C, _G", (*ROLE_TESTS, "tests/test_analytics.py")),
    Mutation(
        "rbac: a grandparent may invite a child",
        RBAC,
        "_G: frozenset({_A, _T, _G}),",
        "_G: frozenset({_A, _T, _C, _G}),",
        ROLE_TESTS,
    ),
    # --- families, members, pets, invitations -------------------------------------------------
    _policy(
        "family_units_select sees every family",
        FOUNDATION,
        "using (id = (select app.current_family_id()));",
        "using (true);",
    ),
    _policy(
        "family_units_update without its role check",
        FOUNDATION,
        "  id = (select app.current_family_id())\n"
        "  and (select app.current_member_role()) in ('adult', 'grandparent')\n);",
        "  id = (select app.current_family_id())\n);",
    ),
    _policy(
        "family_units_update without its family check",
        FOUNDATION,
        "for update to authenticated\nusing (\n  id = (select app.current_family_id())\n",
        "for update to authenticated\nusing (\n  true\n",
    ),
    _policy(
        "user_profiles_select sees every family",
        FOUNDATION,
        "public.user_profiles for select to authenticated\n"
        "using (family_unit_id = (select app.current_family_id()));",
        "public.user_profiles for select to authenticated\nusing (true);",
    ),
    _policy(
        "user_profiles_update_own updates anyone's",
        FOUNDATION,
        "using (id = (select auth.uid()) and removed_at is null);",
        "using (removed_at is null);",
    ),
    _policy(
        "user_profiles_update_own after removal",
        FOUNDATION,
        "using (id = (select auth.uid()) and removed_at is null);",
        "using (id = (select auth.uid()));",
    ),
    _policy(
        "user_profiles_provision_child any role",
        FOUNDATION,
        "  and role = 'child'\n  and (select app.current_member_role()) = 'adult'\n",
        "  and (select app.current_member_role()) = 'adult'\n",
    ),
    _policy(
        "user_profiles_provision_child by anyone",
        FOUNDATION,
        "  and role = 'child'\n  and (select app.current_member_role()) = 'adult'\n",
        "  and role = 'child'\n",
    ),
    _policy(
        "user_profiles_provision_child into any family",
        FOUNDATION,
        "with check (\n  family_unit_id = (select app.current_family_id())\n  and role = 'child'",
        "with check (\n  true\n  and role = 'child'",
    ),
    _policy(
        "pet_profiles_select sees every family",
        FOUNDATION,
        "public.pet_profiles for select to authenticated\n"
        "using (family_unit_id = (select app.current_family_id()));",
        "public.pet_profiles for select to authenticated\nusing (true);",
    ),
    _policy(
        "pet_profiles_insert without its family check",
        FOUNDATION,
        "for insert to authenticated\nwith check (\n"
        "  family_unit_id = (select app.current_family_id())\n"
        "  and (select app.current_member_role()) in ('adult', 'grandparent')",
        "for insert to authenticated\nwith check (\n"
        "  true\n  and (select app.current_member_role()) in ('adult', 'grandparent')",
    ),
    _policy(
        "pet_profiles_insert without its role check",
        FOUNDATION,
        "for insert to authenticated\nwith check (\n"
        "  family_unit_id = (select app.current_family_id())\n"
        "  and (select app.current_member_role()) in ('adult', 'grandparent')",
        "for insert to authenticated\nwith check (\n"
        "  family_unit_id = (select app.current_family_id())",
    ),
    _policy(
        "pet_profiles_delete without its role check",
        FOUNDATION,
        "  and (select app.current_member_role()) = 'adult'\n);\n\ncreate policy invitations_select",
        ");\n\ncreate policy invitations_select",
    ),
    _policy(
        "pet_profiles_delete without its family check",
        FOUNDATION,
        "for delete to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())",
        "for delete to authenticated\nusing (\n  true",
    ),
    _policy(
        "invitations_select without its role check",
        FOUNDATION,
        "  and (select app.current_member_role()) in ('adult', 'grandparent')\n);\n\n"
        "-- Adults may invite",
        ");\n\n-- Adults may invite",
    ),
    _policy(
        "invitations_insert without its family check",
        FOUNDATION,
        "  family_unit_id = (select app.current_family_id())\n  and invited_by = (select auth.uid())",
        "  true\n  and invited_by = (select auth.uid())",
    ),
    _policy(
        "invitations_insert in anyone's name",
        FOUNDATION,
        "  and invited_by = (select auth.uid())\n",
        "",
    ),
    _policy(
        "invitations_insert lets a grandparent invite a child",
        FOUNDATION,
        "and role in ('adult', 'teen', 'grandparent'))",
        "and role in ('adult', 'teen', 'child', 'grandparent'))",
    ),
    _policy(
        "invitations_insert of any status",
        FOUNDATION,
        "  and status = 'pending'\n",
        "",
        equivalent="status is not in the insert column grant (20250201000000): the grant refuses "
        "first, and the column's default is 'pending'",
    ),
    _policy(
        "invitations_revoke without its role check",
        FOUNDATION,
        "  and (select app.current_member_role()) in ('adult', 'grandparent')\n)\n"
        "with check (status in ('revoked', 'expired'));",
        ")\nwith check (status in ('revoked', 'expired'));",
    ),
    _policy(
        "invitations_revoke to any status",
        FOUNDATION,
        "with check (status in ('revoked', 'expired'));",
        "with check (true);",
    ),
    _policy(
        "auth_sessions_own sees everyone's",
        FOUNDATION,
        "app.auth_sessions for select to authenticated\nusing (user_id = (select auth.uid()));",
        "app.auth_sessions for select to authenticated\nusing (true);",
    ),
    _policy(
        "refresh_tokens_own sees everyone's",
        FOUNDATION,
        "using (session_id in (select id from app.auth_sessions where user_id = (select auth.uid())));",
        "using (true);",
    ),
    _policy(
        "auth_sessions_revoke_own revokes anyone's",
        FOUNDATION,
        "app.auth_sessions for update to authenticated\nusing (user_id = (select auth.uid()));",
        "app.auth_sessions for update to authenticated\nusing (true);",
    ),
    Mutation(
        "helper: current_family_id ignores removal",
        FOUNDATION,
        "  select family_unit_id from public.user_profiles\n"
        "  where id = auth.uid() and removed_at is null\n",
        "  select family_unit_id from public.user_profiles\n  where id = auth.uid()\n",
        RLS_TESTS,
    ),
    Mutation(
        "removal: the last adult can be removed",
        FOUNDATION,
        "  ) <= 1 then\n    return 'last_adult';",
        "  ) <= 0 then\n    return 'last_adult';",
        ("tests/test_permissions_family.py",),
    ),
    Mutation(
        "removal: the removed member's logins stay open",
        FOUNDATION,
        "  update app.auth_sessions set revoked_at = now(), revoked_reason = 'removed from family'\n"
        "  where user_id = target and revoked_at is null;\n",
        "",
        (*TOKEN_TESTS, "tests/test_permissions_family.py"),
    ),
    # --- memories and media ----------------------------------------------------------------------
    _policy(
        "memories_select without its family check",
        MEMORIES,
        "create policy memories_select on public.memories for select to authenticated\nusing (\n"
        "  family_unit_id = (select app.current_family_id())\n",
        "create policy memories_select on public.memories for select to authenticated\nusing (\n"
        "  true\n",
    ),
    _policy(
        "memories_select shows others' drafts",
        MEMORIES,
        "  family_unit_id = (select app.current_family_id())\n"
        "  and (status <> 'draft' or user_id = (select auth.uid()))\n);\n\n"
        "create policy memories_insert",
        "  family_unit_id = (select app.current_family_id())\n);\n\ncreate policy memories_insert",
    ),
    _policy(
        "memories_insert without its family check",
        MEMORIES,
        "  family_unit_id = (select app.current_family_id())\n  and user_id = (select auth.uid())\n",
        "  true\n  and user_id = (select auth.uid())\n",
    ),
    _policy(
        "memories_insert in anyone's name",
        MEMORIES,
        "  family_unit_id = (select app.current_family_id())\n  and user_id = (select auth.uid())\n",
        "  family_unit_id = (select app.current_family_id())\n",
    ),
    _policy(
        "memories_update without its family check",
        MEMORIES,
        "for update to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n",
        "for update to authenticated\nusing (\n  true\n",
    ),
    _policy(
        "memories_update of others' drafts",
        MEMORIES,
        "for update to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n"
        "  and (status <> 'draft' or user_id = (select auth.uid()))\n",
        "for update to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n",
    ),
    _policy(
        "memories_update of anyone's by any role",
        MEMORIES,
        "  and (user_id = (select auth.uid())\n"
        "       or (select app.current_member_role()) in ('adult', 'grandparent'))\n)\n"
        "with check (family_unit_id = (select app.current_family_id()));",
        ")\nwith check (family_unit_id = (select app.current_family_id()));",
    ),
    _policy(
        "memories_update moves memories to any family",
        MEMORIES,
        "with check (family_unit_id = (select app.current_family_id()));",
        "with check (true);",
        equivalent="family_unit_id is not in the update column grant: the grant refuses first",
    ),
    _policy(
        "memories_delete without its family check",
        MEMORIES,
        "for delete to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n",
        "for delete to authenticated\nusing (\n  true\n",
    ),
    _policy(
        "memories_delete of others' drafts",
        MEMORIES,
        "for delete to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n"
        "  and (status <> 'draft' or user_id = (select auth.uid()))\n",
        "for delete to authenticated\nusing (\n  family_unit_id = (select app.current_family_id())\n",
    ),
    _policy(
        "memories_delete lets a child delete their own",
        MEMORIES,
        "      and (select app.current_member_role()) in ('adult', 'teen', 'grandparent'))",
        "      and (select app.current_member_role()) in ('adult', 'teen', 'child', 'grandparent'))",
    ),
    _policy(
        "memories_delete lets a child delete anyone's",
        MEMORIES,
        "    or (select app.current_member_role()) = 'adult'\n  )\n);",
        "    or (select app.current_member_role()) in ('adult', 'child')\n  )\n);",
    ),
    _policy(
        "memory_media_select without its memory",
        MEMORIES,
        "using (exists (select 1 from public.memories m where m.id = memory_media.memory_id));",
        "using (true);",
    ),
    _policy(
        "memory_media_insert without its family check",
        MEMORIES,
        "with check (\n  family_unit_id = (select app.current_family_id())\n  and exists (\n"
        "    select 1 from public.memories m\n    where m.id = memory_media.memory_id\n",
        "with check (\n  true\n  and exists (\n"
        "    select 1 from public.memories m\n    where m.id = memory_media.memory_id\n",
    ),
    _policy(
        "memory_media_insert by anyone who sees the memory",
        MEMORIES,
        "      and m.family_unit_id = (select app.current_family_id())\n"
        "      and (m.user_id = (select auth.uid())\n"
        "           or (select app.current_member_role()) in ('adult', 'grandparent'))\n",
        "      and m.family_unit_id = (select app.current_family_id())\n",
    ),
    _policy(
        "memory_media_delete by anyone who sees the memory",
        MEMORIES,
        "    where m.id = memory_media.memory_id\n"
        "      and (m.user_id = (select auth.uid())\n"
        "           or (select app.current_member_role()) in ('adult', 'grandparent'))\n  )\n);",
        "    where m.id = memory_media.memory_id\n  )\n);",
    ),
    # --- reactions and comments ------------------------------------------------------------------
    _policy(
        "memory_reactions_select without its memory",
        REACTIONS_COMMENTS,
        "for select to authenticated\nusing (" + _VISIBLE.format(table="memory_reactions") + ");",
        "for select to authenticated\nusing (true);",
    ),
    _policy(
        "memory_reactions_insert without its family check",
        REACTIONS_COMMENTS,
        "  and family_unit_id = (select app.current_family_id())\n"
        "  and " + _VISIBLE.format(table="memory_reactions"),
        "  and " + _VISIBLE.format(table="memory_reactions"),
    ),
    _policy(
        "memory_reactions_insert in anyone's name",
        REACTIONS_COMMENTS,
        "memory_reactions for insert to authenticated\nwith check (\n"
        "  user_id = (select auth.uid())\n",
        "memory_reactions for insert to authenticated\nwith check (\n  true\n",
    ),
    _policy(
        "memory_reactions_insert on invisible memories",
        REACTIONS_COMMENTS,
        "  and family_unit_id = (select app.current_family_id())\n"
        "  and " + _VISIBLE.format(table="memory_reactions"),
        "  and family_unit_id = (select app.current_family_id())",
    ),
    _policy(
        "memory_reactions_delete of anyone's",
        REACTIONS_COMMENTS,
        "memory_reactions for delete to authenticated\nusing (\n  user_id = (select auth.uid())\n",
        "memory_reactions for delete to authenticated\nusing (\n  true\n",
    ),
    _policy(
        "memory_reactions_delete on invisible memories",
        REACTIONS_COMMENTS,
        "  user_id = (select auth.uid())\n  and "
        + _VISIBLE.format(table="memory_reactions")
        + "\n);\n\ncreate policy memory_comments_select",
        "  user_id = (select auth.uid())\n);\n\ncreate policy memory_comments_select",
    ),
    _policy(
        "memory_comments_select without its memory",
        REACTIONS_COMMENTS,
        "for select to authenticated\nusing (" + _VISIBLE.format(table="memory_comments") + ");",
        "for select to authenticated\nusing (true);",
    ),
    _policy(
        "memory_comments_insert without its family check",
        REACTIONS_COMMENTS,
        "  and family_unit_id = (select app.current_family_id())\n"
        "  and " + _VISIBLE.format(table="memory_comments"),
        "  and " + _VISIBLE.format(table="memory_comments"),
    ),
    _policy(
        "memory_comments_insert in anyone's name",
        REACTIONS_COMMENTS,
        "memory_comments for insert to authenticated\nwith check (\n"
        "  user_id = (select auth.uid())\n",
        "memory_comments for insert to authenticated\nwith check (\n  true\n",
    ),
    _policy(
        "memory_comments_insert on invisible memories",
        REACTIONS_COMMENTS,
        "  and family_unit_id = (select app.current_family_id())\n"
        "  and " + _VISIBLE.format(table="memory_comments"),
        "  and family_unit_id = (select app.current_family_id())",
    ),
    _policy(
        "memory_comments_update of anyone's by any role",
        REACTIONS_COMMENTS,
        "  and (user_id = (select auth.uid())\n"
        "       or (select app.current_member_role()) in ('adult', 'grandparent'))\n);",
        ");",
    ),
    _policy(
        "memory_comments_update on invisible memories",
        REACTIONS_COMMENTS,
        "for update to authenticated\nusing (\n  "
        + _VISIBLE.format(table="memory_comments")
        + "\n  and",
        "for update to authenticated\nusing (\n  true\n  and",
    ),
    Mutation(
        "guard: a child may delete their own comment",
        REACTIONS_COMMENTS,
        "if not ((old.user_id = actor and actor_role in ('adult', 'teen', 'grandparent'))",
        "if not ((old.user_id = actor and actor_role in ('adult', 'teen', 'child', 'grandparent'))",
        (*RLS_TESTS, "tests/test_comments.py"),
    ),
    # --- counters ----------------------------------------------------------------------------------
    Mutation(
        "counter: removing a reaction leaves reaction_count",
        FEED,
        "    set reaction_count = reaction_count - 1,",
        "    set reaction_count = reaction_count,",
        COUNTER_TESTS,
    ),
    Mutation(
        "counter: deleting a comment leaves comment_count",
        REACTIONS_COMMENTS,
        "update public.memories set comment_count = comment_count - 1 where id = new.memory_id;",
        "update public.memories set comment_count = comment_count where id = new.memory_id;",
        COUNTER_TESTS,
    ),
    Mutation(
        "counter: a reply leaves reply_count",
        REACTIONS_COMMENTS,
        "update public.memory_comments set reply_count = reply_count + 1",
        "update public.memory_comments set reply_count = reply_count",
        COUNTER_TESTS,
    ),
    Mutation(
        "counter: unpublishing leaves the family's published count",
        FEED,
        "update app.family_memory_counts set published = published - 1",
        "update app.family_memory_counts set published = published",
        ("tests/test_feed.py", "tests/test_feed_integrity.py"),
    ),
    _policy(
        "family_memory_counts_select sees every family",
        FEED,
        "to authenticated using (family_unit_id = (select app.current_family_id()));",
        "to authenticated using (true);",
    ),
    _policy(
        "memory_changes_select sees every family",
        f"{MIGRATIONS}/20250205000000_stable_scrolling.sql",
        "using (family_unit_id = (select app.current_family_id()));",
        "using (true);",
    ),
    # --- analytics -------------------------------------------------------------------------------
    _policy(
        "analytics_events_select without its role check",
        ANALYTICS,
        "  and (select app.current_member_role()) in ('adult', 'grandparent')\n);\n\n"
        "create policy analytics_metrics_select",
        ");\n\ncreate policy analytics_metrics_select",
    ),
    _policy(
        "analytics_metrics_select without its family check",
        ANALYTICS,
        "on public.analytics_metrics for select to authenticated\nusing (\n"
        "  family_unit_id = (select app.current_family_id())\n",
        "on public.analytics_metrics for select to authenticated\nusing (\n  true\n",
    ),
    Mutation(
        "analytics: the summary window one day longer",
        "app/services/analytics_service.py",
        "  and day > (now() at time zone 'UTC')::date - $1::int\n",
        "  and day >= (now() at time zone 'UTC')::date - $1::int\n",
        ("tests/test_analytics.py",),
    ),
    # --- what a member may write directly (20250201000000) ---------------------------------------
    Mutation(
        "columns: memories insertable whole again",
        COLUMNS,
        "grant insert (family_unit_id, user_id, title, description, memory_date, location, tags, "
        "status)\n  on public.memories to authenticated;",
        "grant insert on public.memories to authenticated;",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: media insertable whole again",
        COLUMNS,
        "grant insert (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, "
        "mime_type,\n              file_size)\n  on public.memory_media to authenticated;",
        "grant insert on public.memory_media to authenticated;",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: comments insertable whole again",
        COLUMNS,
        "grant insert (memory_id, family_unit_id, user_id, parent_comment_id, content)\n"
        "  on public.memory_comments to authenticated;",
        "grant insert on public.memory_comments to authenticated;",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: a new grant nobody reviewed",
        COLUMNS,
        "grant insert (memory_id, family_unit_id, user_id, emoji) on public.memory_reactions",
        "grant update (emoji) on public.memory_reactions to authenticated;\n"
        "grant insert (memory_id, family_unit_id, user_id, emoji) on public.memory_reactions",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: anon keeps Supabase's default grants",
        COLUMNS,
        "revoke all on all tables in schema public from anon;\n",
        "",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: modified_by as the member wrote it",
        COLUMNS,
        "        new.modified_by := auth.uid();\n",
        "",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: a comment's deletion time as the member wrote it",
        COLUMNS,
        "        new.deleted_at := coalesce(old.deleted_at, now());\n",
        "        new.deleted_at := new.deleted_at;\n",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: a revoked login can be revived",
        COLUMNS,
        "        new.revoked_at := old.revoked_at;\n",
        "",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: a login's last use as the member wrote it",
        COLUMNS,
        "        new := jsonb_populate_record(new, jsonb_build_object('last_used_at', now()));\n",
        "",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "columns: a media row's size as the member claimed it",
        COLUMNS,
        "  new.file_size := object_size;\n",
        "",
        DIRECT_DB_TESTS,
    ),
    Mutation(
        "coverage: a new policy with no test",
        COLUMNS,
        "-- 2. Server-owned values",
        "create policy memories_untested on public.memories for select to authenticated\n"
        "using (false);\n\n-- 2. Server-owned values",
        ("tests/test_rls_policies.py",),
    ),
    # --- tokens ----------------------------------------------------------------------------------
    Mutation(
        "token: access tokens accepted for a day after they expire",
        "app/adapters/tokens.py",
        'options={"require_iat": True, "require_exp": True},',
        'options={"require_iat": True, "require_exp": True, "leeway": 86400},',
        TOKEN_TESTS,
    ),
    Mutation(
        "token: refresh and invite tokens accepted as access tokens",
        "app/adapters/tokens.py",
        '    if claims.get("type") != ACCESS_TYPE:\n',
        "    if False:\n",
        TOKEN_TESTS,
    ),
    Mutation(
        "token: access tokens of a logged-out session accepted",
        "app/services/session_service.py",
        "where s.id = $1 and s.user_id = p.id and s.revoked_at is null))",
        "where s.id = $1 and s.user_id = p.id))",
        TOKEN_TESTS,
    ),
    Mutation(
        "token: a reused refresh token is not noticed",
        "app/services/session_service.py",
        '            if row["rotated_at"] is not None:\n',
        "            if False:\n",
        TOKEN_TESTS,
    ),
    Mutation(
        "token: expired refresh tokens accepted",
        "app/services/session_service.py",
        '            elif row["expires_at"] > datetime.now(UTC):\n',
        "            elif True:\n",
        TOKEN_TESTS,
    ),
    # --- signed URLs -----------------------------------------------------------------------------
    Mutation(
        "signed URL: downloads without a valid signature",
        "app/adapters/storage/local.py",
        "        if not valid or remaining < 0:\n",
        "        if remaining < 0:\n",
        (*STORAGE_TESTS, "tests/attacks/test_bola.py"),
    ),
    Mutation(
        "signed URL: expired downloads",
        "app/adapters/storage/local.py",
        "        if not valid or remaining < 0:\n",
        "        if not valid:\n",
        STORAGE_TESTS,
    ),
    Mutation(
        "signed URL: uploads without a valid signature",
        "app/adapters/storage/local.py",
        "            if not valid or int(expires) < time.time():\n",
        "            if int(expires) < time.time():\n",
        STORAGE_TESTS,
    ),
    Mutation(
        "signed URL: expired uploads",
        "app/adapters/storage/local.py",
        "            if not valid or int(expires) < time.time():\n",
        "            if not valid:\n",
        STORAGE_TESTS,
    ),
    # --- limits ----------------------------------------------------------------------------------
    Mutation(
        "limit: one request more than the allowance",
        "app/adapters/rate_limit.py",
        "if await self.store.increment(key, limit.per_seconds) > limit.requests:",
        "if await self.store.increment(key, limit.per_seconds) > limit.requests + 1:",
        ("tests/test_rate_limits.py",),
    ),
    Mutation(
        "limit: failed logins per account not held",
        "app/adapters/rate_limit.py",
        "FAILED_LOGINS_PER_ACCOUNT = Limit(10, 900)",
        "FAILED_LOGINS_PER_ACCOUNT = Limit(11, 900)",
        ("tests/test_rate_limits.py",),
    ),
    Mutation(
        "limit: Retry-After ignores where the window ends",
        "app/adapters/rate_limit.py",
        "retry_after = (window + 1) * limit.per_seconds - int(now)",
        "retry_after = limit.per_seconds",
        ("tests/test_rate_limits.py",),
    ),
    Mutation(
        "limit: files twice the size cap registered",
        "app/services/memory_service.py",
        "    if stored.size > settings.max_file_bytes:\n",
        "    if stored.size > settings.max_file_bytes * 2:\n",
        (*STORAGE_TESTS, "tests/test_memories.py"),
    ),
    Mutation(
        "limit: a memory's total size not capped",
        "app/services/memory_service.py",
        "    if used + stored.size > settings.max_memory_bytes:\n",
        "    if stored.size > settings.max_memory_bytes:\n",
        (*STORAGE_TESTS, "tests/test_memories.py"),
    ),
    Mutation(
        "limit: a body declared over the cap is read",
        "app/middleware.py",
        "if declared is not None and declared > self.max_body_bytes:",
        "if declared is not None and declared > self.max_body_bytes * 2:",
        ("tests/attacks/test_input.py",),
    ),
    Mutation(
        "limit: a streamed body over the cap is read",
        "app/middleware.py",
        "if seen > self.max_body_bytes and not body_rejected:",
        "if seen > self.max_body_bytes * 2 and not body_rejected:",
        ("tests/attacks/test_input.py",),
    ),
    # --- operations ------------------------------------------------------------------------------
    Mutation(
        "readiness: pending migrations ignored",
        "app/api/ops.py",
        "    if pending:\n",
        "    if False:\n",
        ("tests/test_ops.py",),
    ),
    Mutation(
        "metrics: the token check switched off",
        "app/api/ops.py",
        "    if expected is not None:\n",
        "    if False:\n",
        ("tests/test_ops.py",),
    ),
]


# --- running -----------------------------------------------------------------------------------

_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", "node_modules",
)  # fmt: skip


def apply(mutation: Mutation, tree: Path) -> str:
    """Write the mutated file into `tree`; returns the original text to put back."""
    path = tree / mutation.path
    original = path.read_text()
    count = original.count(mutation.find)
    if count != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: its text occurs {count} times in {mutation.path}"
            " (must be exactly once; update the list)"
        )
    path.write_text(original.replace(mutation.find, mutation.replace))
    return original


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """caught / survived / error, and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    # A session of its own, so a run that hangs can be stopped with everything it started
    # (its built-in PostgreSQL too): SIGTERM first, so that server shuts down cleanly.
    process = subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        return "error (timeout)", time.monotonic() - started
    elapsed = time.monotonic() - started
    # pytest: 0 all passed, 1 some failed; anything else is not a test verdict.
    outcome = {0: "survived", 1: "caught"}.get(process.returncode)
    if outcome is None:
        tail = output.strip().splitlines()[-3:]
        return f"error (pytest exit {process.returncode}: {' | '.join(tail)})", elapsed
    return outcome, elapsed


def check_imports_from(tree: Path) -> None:
    """The copy's own `app` must be the one the tests import, not the installed checkout."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    found = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the copy imports app from {found}, not from {tree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-k", dest="match", action="append", help="only names containing this (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="print the names and stop")
    parser.add_argument("--check", action="store_true", help="apply each to a copy, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = parser.parse_args()

    wanted = [text.lower() for text in args.match or [""]]
    chosen = [m for m in MUTATIONS if any(text in m.name.lower() for text in wanted)]
    if args.list:
        for mutation in chosen:
            print(mutation.name)
        return 0
    names = [m.name for m in MUTATIONS]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SystemExit(f"duplicate mutation names: {sorted(duplicates)}")

    with tempfile.TemporaryDirectory(prefix="tl-mutations-") as temp:
        tree = Path(temp) / "repo"
        # symlinks=True: app/db/migrations links to supabase/migrations; the copy's link must
        # point into the copy, so the app reads the mutated file.
        shutil.copytree(ROOT, tree, ignore=_NOT_COPIED, symlinks=True)
        if args.check:
            for mutation in chosen:
                (tree / mutation.path).write_text(apply(mutation, tree))
            print(f"{len(chosen)} mutations apply exactly once")
            return 0
        check_imports_from(tree)
        if not args.no_baseline:
            targeted = tuple(sorted({test for m in chosen for test in m.tests}))
            outcome, seconds = run_tests(tree, targeted, args.timeout * 3)
            verdict = "passed" if outcome == "survived" else outcome
            print(
                f"baseline (no mutation, {len(targeted)} test files): {verdict} [{seconds:.0f} s]"
            )
            if outcome != "survived":
                print("the targeted tests must pass on the unchanged code first")
                return 2
        results: dict[str, list[str]] = {
            "caught": [],
            "survived": [],
            "equivalent": [],
            "error": [],
        }
        for index, mutation in enumerate(chosen, 1):
            original = apply(mutation, tree)
            try:
                outcome, seconds = run_tests(tree, mutation.tests, args.timeout)
            finally:
                (tree / mutation.path).write_text(original)
            label = outcome
            if outcome == "survived" and mutation.equivalent:
                label = f"survived, equivalent: {mutation.equivalent}"
                results["equivalent"].append(mutation.name)
            elif outcome.startswith("error"):
                results["error"].append(mutation.name)
            else:
                results[outcome].append(mutation.name)
            print(f"[{index}/{len(chosen)}] {mutation.name}: {label} [{seconds:.0f} s]", flush=True)

    print(
        f"\n{len(chosen)} mutations: {len(results['caught'])} caught, "
        f"{len(results['survived'])} survived, {len(results['equivalent'])} equivalent, "
        f"{len(results['error'])} errors"
    )
    for kind in ("survived", "error"):
        for name in results[kind]:
            print(f"  {kind}: {name}")
    return 0 if not results["survived"] and not results["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
