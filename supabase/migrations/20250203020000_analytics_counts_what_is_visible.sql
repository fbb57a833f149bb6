-- The analytics summary counts only what its reader could see: drafts stay out.
--
-- The daily rollup counted every memory, reaction and comment, so an adult's summary went
-- from 6 to 7 when a teen saved a draft that the adult's GET answered 404 for. A draft is
-- visible to its author alone; the family's numbers (read by adults and grandparents) now
-- count a memory, and the reactions and comments on it, from the moment it stops being a
-- draft, still on the day each was created. The rollup stays exact through publishing,
-- deletions and cascades:
--
-- * a memory counts while its status is not 'draft' (insert, and draft → published);
-- * a reaction or comment counts while its memory is not a draft; publishing a draft adds the
--   ones it already had (only its author could add them);
-- * deleting a counted memory takes away its reactions and comments in a BEFORE DELETE
--   trigger, while they still exist; their own delete triggers, run by the cascade, then find
--   the memory gone and leave the counts alone;
-- * a bump for a family that no longer exists (the family is being deleted and its rows
--   cascade) is skipped: the family's rollup rows go with it anyway.

create or replace function app.bump_analytics_metrics(
  family uuid, created timestamptz, member uuid,
  d_memories integer, d_reactions integer, d_comments integer, d_events integer
) returns void
language plpgsql security definer set search_path = '' as $$
begin
  if not exists (select 1 from public.family_units where id = family) then
    return;
  end if;
  insert into public.analytics_metrics as m
    (family_unit_id, day, user_id, memories, reactions, comments, events)
  values (family, (created at time zone 'UTC')::date, member,
          d_memories, d_reactions, d_comments, d_events)
  on conflict (family_unit_id, day, user_id) do update
    set memories = m.memories + excluded.memories,
        reactions = m.reactions + excluded.reactions,
        comments = m.comments + excluded.comments,
        events = m.events + excluded.events;
end
$$;
revoke all on function app.bump_analytics_metrics(uuid, timestamptz, uuid, integer, integer, integer, integer) from public;

-- Whether a memory's reactions and comments count: it exists and is not a draft. A memory
-- that no longer exists is being deleted (its own trigger settled the counts).
create or replace function app.memory_counts_in_analytics(memory uuid) returns boolean
language sql stable security definer set search_path = '' as $$
  select coalesce(
    (select status <> 'draft' from public.memories where id = memory), false)
$$;
revoke all on function app.memory_counts_in_analytics(uuid) from public;

-- A memory's reactions and comments (not deleted), added (+1) or taken away (-1).
create or replace function app.bump_analytics_for_children(memory uuid, direction integer)
returns void
language plpgsql security definer set search_path = '' as $$
declare
  child record;
begin
  for child in
    select family_unit_id, created_at, user_id from public.memory_reactions
    where memory_id = memory
  loop
    perform app.bump_analytics_metrics(
      child.family_unit_id, child.created_at, child.user_id, 0, direction, 0, 0);
  end loop;
  for child in
    select family_unit_id, created_at, user_id from public.memory_comments
    where memory_id = memory and deleted_at is null
  loop
    perform app.bump_analytics_metrics(
      child.family_unit_id, child.created_at, child.user_id, 0, 0, direction, 0);
  end loop;
end
$$;
revoke all on function app.bump_analytics_for_children(uuid, integer) from public;

create or replace function app.rollup_memories() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    if new.status <> 'draft' then
      perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 1, 0, 0, 0);
    end if;
  elsif tg_op = 'UPDATE' then
    if old.status = 'draft' and new.status <> 'draft' then
      perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 1, 0, 0, 0);
      perform app.bump_analytics_for_children(new.id, 1);
    elsif old.status <> 'draft' and new.status = 'draft' then
      perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, -1, 0, 0, 0);
      perform app.bump_analytics_for_children(old.id, -1);
    end if;
  elsif old.status <> 'draft' then  -- DELETE
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, -1, 0, 0, 0);
  end if;
  return null;
end
$$;

-- Before the row goes, while its reactions and comments are still there to be counted.
create or replace function app.rollup_deleted_memory_children() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if old.status <> 'draft' then
    perform app.bump_analytics_for_children(old.id, -1);
  end if;
  return old;
end
$$;

create or replace function app.rollup_reactions() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    if app.memory_counts_in_analytics(new.memory_id) then
      perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 0, 1, 0, 0);
    end if;
  elsif app.memory_counts_in_analytics(old.memory_id) then
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, -1, 0, 0);
  end if;
  return null;
end
$$;

-- A soft-deleted comment no longer counts; a hard delete of one that still counted takes it
-- away (unless its memory is going, which settled it).
create or replace function app.rollup_comments() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    if new.deleted_at is null and app.memory_counts_in_analytics(new.memory_id) then
      perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 0, 0, 1, 0);
    end if;
  elsif tg_op = 'UPDATE' then
    if old.deleted_at is null and new.deleted_at is not null
       and app.memory_counts_in_analytics(old.memory_id) then
      perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, 0, -1, 0);
    end if;
  elsif old.deleted_at is null and app.memory_counts_in_analytics(old.memory_id) then
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, 0, -1, 0);
  end if;
  return null;
end
$$;

drop trigger if exists memories_rollup on public.memories;
create trigger memories_rollup after insert or update of status or delete on public.memories
for each row execute function app.rollup_memories();
drop trigger if exists memories_rollup_children on public.memories;
create trigger memories_rollup_children before delete on public.memories
for each row execute function app.rollup_deleted_memory_children();

-- What the rollup counted before: take the drafts out (and what hangs on them).
do $$
declare
  draft record;
begin
  for draft in
    select id, family_unit_id, created_at, user_id from public.memories where status = 'draft'
  loop
    perform app.bump_analytics_metrics(
      draft.family_unit_id, draft.created_at, draft.user_id, -1, 0, 0, 0);
    perform app.bump_analytics_for_children(draft.id, -1);
  end loop;
end
$$;
