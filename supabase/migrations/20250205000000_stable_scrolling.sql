-- Stable scrolling: what a feed scroll needs to keep the order it began with.
-- docs/feed.md ("Stable scrolling") explains the design; app/services/feed_service.py runs it.
--
-- A scroll's first page records PostgreSQL's snapshot (pg_current_snapshot()) and its time.
-- Later pages order every memory as that first page saw it. Most memories have not changed
-- since, so they are read from the feed's indexes as they are now; the few that changed
-- (engagement counters, memory_date or status) or were created since are read back, as
-- they were, from the log below: each row keeps a memory's values before one change, and the
-- first change the snapshot did not see holds exactly the values the snapshot saw.

create table if not exists app.memory_changes (
  id bigint generated always as identity primary key,
  -- No foreign keys: a row outlives its memory (rows are purged by age), and a memory's
  -- deletion must never wait on its log.
  family_unit_id uuid not null,
  memory_id uuid not null,
  -- The writing transaction, compared with a scroll's snapshot by pg_visible_in_snapshot.
  xact xid8 not null default pg_current_xact_id(),
  changed_at timestamptz not null default now(),
  -- false: this row records the memory's creation (it did not exist before).
  existed boolean not null,
  -- The values before the change (null when existed is false).
  status text,
  memory_date date,
  reaction_count integer,
  comment_count integer
);

-- A scroll reads the rows of its family that its snapshot may not have seen: xact at or
-- above the snapshot's xmin. Everything older is visible to every snapshot and never read.
create index if not exists memory_changes_family_xact_idx
  on app.memory_changes (family_unit_id, xact);
create index if not exists memory_changes_changed_at_idx on app.memory_changes (changed_at);

create or replace function app.record_memory_change() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    insert into app.memory_changes (family_unit_id, memory_id, existed)
    values (new.family_unit_id, new.id, false);
  elsif old.status is distinct from new.status
     or old.memory_date is distinct from new.memory_date
     or old.reaction_count <> new.reaction_count
     or old.comment_count <> new.comment_count then
    insert into app.memory_changes
      (family_unit_id, memory_id, existed, status, memory_date, reaction_count, comment_count)
    values (old.family_unit_id, old.id, true, old.status, old.memory_date, old.reaction_count,
            old.comment_count);
  end if;
  return null;
end
$$;

drop trigger if exists memories_record_change on public.memories;
create trigger memories_record_change
after insert or update of status, memory_date, reaction_count, comment_count
on public.memories
for each row execute function app.record_memory_change();

-- Rows older than any scroll can be (a cursor lives 24 hours) are no longer needed.
create or replace function app.purge_memory_changes(older_than interval) returns bigint
language sql security definer set search_path = '' as $$
  with gone as (
    delete from app.memory_changes where changed_at < now() - older_than returning 1
  )
  select count(*) from gone
$$;

revoke all on function app.purge_memory_changes(interval) from public;
grant execute on function app.purge_memory_changes(interval) to service_role;

grant select on app.memory_changes to authenticated;
grant all on app.memory_changes to service_role;
alter table app.memory_changes enable row level security;
alter table app.memory_changes force row level security;

drop policy if exists memory_changes_select on app.memory_changes;
create policy memory_changes_select on app.memory_changes for select to authenticated
using (family_unit_id = (select app.current_family_id()));

-- The engagement weight as a column ------------------------------------------------------------
-- The feed orders each age band by least(reactions + 2 × comments, 99) from an index. A page
-- by offset only reads that index in order; a scroll's next page must *start* inside it, at
-- its position, with conditions on the weight. Under row level security Postgres uses a
-- condition as an index condition only if it is leakproof, and integer + and * are not (they
-- can fail on overflow), so a condition on the expression would be checked row by row after
-- the policy: a walk through the family instead of a seek. On a stored column the condition
-- is a plain integer comparison, which is leakproof. The index keeps its name and order.
alter table public.memories add column if not exists feed_weight integer
  generated always as (least(reaction_count + 2 * comment_count, 99)) stored;
drop index if exists public.memories_feed_engagement_idx;
create index memories_feed_engagement_idx on public.memories (
  family_unit_id, status, feed_weight desc, created_at desc, id
);

-- The score as of a moment --------------------------------------------------------------------
-- The same arithmetic as app.feed_score (20250103100000_feed.sql), split so that a scroll can
-- score "as of" its first page: the age band of a memory at a given time, and the score of a
-- band and an engagement weight (reactions + 2 × comments). For any memory,
-- app.feed_band_score(app.feed_band_at(created_at, now()), reactions + 2 * comments) is
-- bit for bit app.feed_score(created_at, reactions, comments).

-- The start of age band n (1–3) at a given time: the same edges as app.feed_band_start(n),
-- which is this at now(). The feed's statements select bands with these very edges. Stable,
-- not immutable, as timestamptz arithmetic is (so the planner may still inline them).
create or replace function app.feed_band_start_at(band integer, at timestamptz)
returns timestamptz
language sql stable parallel safe as $$
  select at - case band
    when 1 then interval '24 hours'
    when 2 then interval '168 hours'
    when 3 then interval '720 hours'
  end
$$;

create or replace function app.feed_band_at(created_at timestamptz, at timestamptz)
returns integer
language sql stable parallel safe as $$
  select case
    when created_at >= app.feed_band_start_at(1, at) then 1
    when created_at >= app.feed_band_start_at(2, at) then 2
    when created_at >= app.feed_band_start_at(3, at) then 3
    else 4
  end
$$;

create or replace function app.feed_band_score(band integer, weight integer)
returns double precision
language sql immutable parallel safe as $$
  select 0.6 * (case band when 1 then 1.0 when 2 then 0.7 when 3 then 0.4 else 0.2 end)
           ::double precision
       + 0.4 * least(log((1 + weight)::double precision) / 2, 1)
$$;

grant execute on function app.feed_band_start_at(integer, timestamptz),
  app.feed_band_at(timestamptz, timestamptz), app.feed_band_score(integer, integer)
  to authenticated, service_role;
