-- Reactions and threaded comments, and the exact per-memory counters the feed scores by.
--
-- Counters move in the same transaction as the change, by triggers, so they can never
-- drift: concurrent changes to one memory serialise on its row. Only memories the
-- caller can see (memories_select) can be reacted to or commented on.

create table public.memory_reactions (
  id uuid primary key default gen_random_uuid(),
  memory_id uuid not null references public.memories (id) on delete cascade,
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  user_id uuid not null references public.user_profiles (id),
  emoji text not null check (emoji in ('👍', '❤️', '😂', '😮', '😢', '🎉', '🔥', '💯')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- One of each emoji per member per memory: two identical concurrent requests give one row.
  unique (memory_id, user_id, emoji)
);
create index memory_reactions_memory_idx on public.memory_reactions (memory_id);
create index memory_reactions_user_idx on public.memory_reactions (user_id);

create table public.memory_comments (
  id uuid primary key default gen_random_uuid(),
  memory_id uuid not null references public.memories (id) on delete cascade,
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  user_id uuid not null references public.user_profiles (id),
  parent_comment_id uuid references public.memory_comments (id) on delete cascade,
  -- 0 for a top-level comment; replies at most three levels below it.
  depth smallint not null default 0 check (depth between 0 and 3),
  content text not null check (char_length(content) between 1 and 5000),
  reply_count integer not null default 0 check (reply_count >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create index memory_comments_memory_idx
  on public.memory_comments (memory_id, created_at, id);
create index memory_comments_parent_idx on public.memory_comments (parent_comment_id);
-- The feed's "top comments": newest top-level, not deleted.
create index memory_comments_top_idx on public.memory_comments (memory_id, created_at desc)
  where parent_comment_id is null and deleted_at is null;

-- A reply takes its depth from its parent, which must be on the same memory.
create function app.set_comment_depth() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  parent record;
begin
  if new.parent_comment_id is null then
    new.depth := 0;
    return new;
  end if;
  select memory_id, depth into parent from public.memory_comments
  where id = new.parent_comment_id;
  if not found or parent.memory_id <> new.memory_id then
    raise exception 'parent comment is not on this memory' using errcode = '23503';
  end if;
  new.depth := parent.depth + 1;  -- the check constraint refuses depth > 3
  return new;
end
$$;

create trigger memory_comments_depth before insert on public.memory_comments
for each row execute function app.set_comment_depth();

-- Counters. Deleted comments do not count towards comment_count (the score ignores them).
create function app.count_reactions() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    update public.memories set reaction_count = reaction_count + 1 where id = new.memory_id;
  else
    update public.memories set reaction_count = reaction_count - 1 where id = old.memory_id;
  end if;
  return null;
end
$$;

create function app.count_comments() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  -- Lock order: always the comment row before the memory row. A soft delete locks its
  -- comment and then the memory; a reply locking the memory before its parent could
  -- deadlock with a concurrent delete of that parent.
  if tg_op = 'INSERT' then
    if new.parent_comment_id is not null then
      update public.memory_comments set reply_count = reply_count + 1
      where id = new.parent_comment_id;
    end if;
    if new.deleted_at is null then
      update public.memories set comment_count = comment_count + 1 where id = new.memory_id;
    end if;
  elsif tg_op = 'UPDATE' then
    if old.deleted_at is null and new.deleted_at is not null then
      update public.memories set comment_count = comment_count - 1 where id = new.memory_id;
    end if;
  end if;
  return null;
end
$$;

create trigger memory_reactions_count after insert or delete on public.memory_reactions
for each row execute function app.count_reactions();
create trigger memory_comments_count after insert or update of deleted_at
on public.memory_comments for each row execute function app.count_comments();

-- Who may change a comment, in the database's own words: the author edits content; a
-- soft delete is the author's (not a child's) or any adult's or grandparent's.
create function app.guard_comment_update() returns trigger
language plpgsql set search_path = '' as $$
declare
  actor uuid := auth.uid();
  actor_role text := app.current_member_role();
begin
  if current_user <> 'authenticated' then
    return new;
  end if;
  if new.memory_id <> old.memory_id or new.user_id <> old.user_id
     or new.parent_comment_id is distinct from old.parent_comment_id then
    raise exception 'comment ownership cannot change' using errcode = '42501';
  end if;
  if old.deleted_at is not null then
    raise exception 'comment is deleted' using errcode = '42501';
  end if;
  if new.deleted_at is not null then
    if not ((old.user_id = actor and actor_role in ('adult', 'teen', 'grandparent'))
            or actor_role in ('adult', 'grandparent')) then
      raise exception 'not allowed to delete this comment' using errcode = '42501';
    end if;
  elsif new.content is distinct from old.content and old.user_id <> actor then
    raise exception 'only the author edits a comment' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger memory_comments_guard before update on public.memory_comments
for each row execute function app.guard_comment_update();

-- Grants and policies ---------------------------------------------------------------------
-- "The memory is visible to the caller" is a correlated exists: one primary-key probe of
-- public.memories (under its own policy) per row. Written as `memory_id in (select id from
-- public.memories)` it became a hashed subplan reading every visible memory of the family
-- on every statement: 100 000 rows for a large family, for a single reaction.

grant select, insert, delete on public.memory_reactions to authenticated;
grant select, insert on public.memory_comments to authenticated;
grant update (content, updated_at, deleted_at) on public.memory_comments to authenticated;
grant all on public.memory_reactions, public.memory_comments to service_role;

alter table public.memory_reactions enable row level security;
alter table public.memory_reactions force row level security;
alter table public.memory_comments enable row level security;
alter table public.memory_comments force row level security;

create policy memory_reactions_select on public.memory_reactions for select to authenticated
using (exists (select 1 from public.memories m where m.id = memory_reactions.memory_id));

create policy memory_reactions_insert on public.memory_reactions for insert to authenticated
with check (
  user_id = (select auth.uid())
  and family_unit_id = (select app.current_family_id())
  and exists (select 1 from public.memories m where m.id = memory_reactions.memory_id)
);

create policy memory_reactions_delete on public.memory_reactions for delete to authenticated
using (
  user_id = (select auth.uid())
  and exists (select 1 from public.memories m where m.id = memory_reactions.memory_id)
);

create policy memory_comments_select on public.memory_comments for select to authenticated
using (exists (select 1 from public.memories m where m.id = memory_comments.memory_id));

create policy memory_comments_insert on public.memory_comments for insert to authenticated
with check (
  user_id = (select auth.uid())
  and family_unit_id = (select app.current_family_id())
  and exists (select 1 from public.memories m where m.id = memory_comments.memory_id)
);

create policy memory_comments_update on public.memory_comments for update to authenticated
using (
  exists (select 1 from public.memories m where m.id = memory_comments.memory_id)
  and (user_id = (select auth.uid())
       or (select app.current_member_role()) in ('adult', 'grandparent'))
);
