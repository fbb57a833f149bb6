-- Analytics events and the daily per-family rollup the summary reads.
--
-- Events are written off the request path in batches by the service role. Members
-- read only their own family's events; the rollup is kept incrementally by a trigger
-- on the events, so the summary never scans years of raw history.

create table public.analytics_events (
  event_id uuid primary key default gen_random_uuid(),
  event_type text not null check (event_type in (
    'user_registered', 'user_logged_in', 'user_logged_out', 'memory_posted', 'memory_updated',
    'memory_deleted', 'memory_viewed', 'reaction_created', 'reaction_deleted',
    'comment_created', 'comment_updated', 'comment_deleted', 'feed_viewed', 'invite_created',
    'invite_accepted', 'child_provisioned', 'pet_created', 'media_processed')),
  "timestamp" timestamptz not null default now(),
  user_id uuid,
  family_unit_id uuid references public.family_units (id) on delete cascade,
  session_id text,
  metadata jsonb not null default '{}'::jsonb
);

create index analytics_events_family_time_idx
  on public.analytics_events (family_unit_id, "timestamp" desc);
create index analytics_events_time_idx on public.analytics_events ("timestamp");
create index analytics_events_metadata_idx on public.analytics_events using gin (metadata);

-- One row per family, day and member: what the summary adds up.
create table public.analytics_metrics (
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  day date not null,
  user_id uuid not null,
  memories integer not null default 0,
  reactions integer not null default 0,
  comments integer not null default 0,
  events integer not null default 0,
  primary key (family_unit_id, day, user_id)
);

grant select on public.analytics_events, public.analytics_metrics to authenticated;
grant all on public.analytics_events, public.analytics_metrics to service_role;

alter table public.analytics_events enable row level security;
alter table public.analytics_events force row level security;
alter table public.analytics_metrics enable row level security;
alter table public.analytics_metrics force row level security;

create policy analytics_events_select on public.analytics_events for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

create policy analytics_metrics_select on public.analytics_metrics for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

-- The rollup is kept by triggers on the base tables themselves, in the same transaction
-- as each change, so it stays exact through deletions and cascades (deleting a memory
-- removes its reactions and comments, and their counts with them). Each row counts
-- on the day (UTC) it was created, for the member who created it.

create function app.bump_analytics_metrics(
  family uuid, created timestamptz, member uuid,
  d_memories integer, d_reactions integer, d_comments integer, d_events integer
) returns void
language sql security definer set search_path = '' as $$
  insert into public.analytics_metrics as m
    (family_unit_id, day, user_id, memories, reactions, comments, events)
  values (family, (created at time zone 'UTC')::date, member,
          d_memories, d_reactions, d_comments, d_events)
  on conflict (family_unit_id, day, user_id) do update
    set memories = m.memories + excluded.memories,
        reactions = m.reactions + excluded.reactions,
        comments = m.comments + excluded.comments,
        events = m.events + excluded.events
$$;
revoke all on function app.bump_analytics_metrics(uuid, timestamptz, uuid, integer, integer, integer, integer) from public;

create function app.rollup_memories() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 1, 0, 0, 0);
  else
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, -1, 0, 0, 0);
  end if;
  return null;
end
$$;

create function app.rollup_reactions() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 0, 1, 0, 0);
  else
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, -1, 0, 0);
  end if;
  return null;
end
$$;

-- A soft-deleted comment no longer counts; a hard delete (by cascade) of one that
-- still counted takes it away.
create function app.rollup_comments() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' and new.deleted_at is null then
    perform app.bump_analytics_metrics(new.family_unit_id, new.created_at, new.user_id, 0, 0, 1, 0);
  elsif tg_op = 'UPDATE' and old.deleted_at is null and new.deleted_at is not null then
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, 0, -1, 0);
  elsif tg_op = 'DELETE' and old.deleted_at is null then
    perform app.bump_analytics_metrics(old.family_unit_id, old.created_at, old.user_id, 0, 0, -1, 0);
  end if;
  return null;
end
$$;

-- Any event by a member marks them active that day.
create function app.rollup_events() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.family_unit_id is not null and new.user_id is not null then
    perform app.bump_analytics_metrics(new.family_unit_id, new."timestamp", new.user_id, 0, 0, 0, 1);
  end if;
  return null;
end
$$;

create trigger memories_rollup after insert or delete on public.memories
for each row execute function app.rollup_memories();
create trigger memory_reactions_rollup after insert or delete on public.memory_reactions
for each row execute function app.rollup_reactions();
create trigger memory_comments_rollup after insert or update of deleted_at or delete
on public.memory_comments for each row execute function app.rollup_comments();
create trigger analytics_events_rollup after insert on public.analytics_events
for each row execute function app.rollup_events();
