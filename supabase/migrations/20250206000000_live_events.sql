-- Live updates (GET /events): the events table, the triggers that write it, and the
-- NOTIFY that wakes every server process. See docs/events.md.
--
-- Events are written by triggers on the tables themselves, in the same transaction as the
-- change: a change that rolls back never announces anything, and every path that writes
-- (a request, the media processor, a database function) announces the same way. Each row
-- records its audience (family; for a draft, only its author; optionally some roles);
-- app/services/events_service.py decides with it who receives the event.
--
-- Ordering. `seq` (the SSE id clients send back as Last-Event-ID) is assigned at commit, in
-- commit order within a family: a deferred trigger takes a per-family lock just before the
-- commit, numbers the transaction's events and notifies. So once a client has seen seq N,
-- every event of its family with a smaller seq is already committed, and "replay seq > N"
-- can never skip one that committed late.

create table if not exists app.live_events (
  id bigint generated always as identity primary key,
  -- Null until the transaction commits (then in commit order within the family).
  seq bigint,
  family_unit_id uuid not null,
  type text not null check (type in (
    'memory.published', 'memory.updated', 'memory.deleted', 'media.processed',
    'reaction.created', 'reaction.deleted', 'comment.created', 'comment.updated',
    'comment.deleted', 'member.joined', 'member.removed', 'export.progress', 'export.ready')),
  data jsonb not null,
  -- Set for events about a draft: only its author may see them.
  only_member_id uuid,
  -- Set for events only some roles may see (exports: those who may export); null = all.
  roles text[],
  created_at timestamptz not null default now()
);
-- No foreign key to family_units: events are a short-lived log (purged after the retention
-- period), and a family being deleted announces nothing.
create index if not exists live_events_family_seq_idx on app.live_events (family_unit_id, seq);
create index if not exists live_events_created_idx on app.live_events (created_at);
create sequence if not exists app.live_events_seq;

-- Single-use tickets for EventSource, which cannot send an Authorization header.
create table if not exists app.event_tickets (
  -- Only a SHA-256 of the ticket is kept; the ticket itself is shown once.
  ticket_hash text primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  -- The login the ticket was issued to (null for a Supabase Auth token): ending it kills
  -- the ticket and the stream opened with it.
  session_id uuid references app.auth_sessions (id) on delete cascade,
  expires_at timestamptz not null,
  created_at timestamptz not null default now()
);
create index if not exists event_tickets_user_idx on app.event_tickets (user_id);
create index if not exists event_tickets_expires_idx on app.event_tickets (expires_at);

grant all on app.live_events, app.event_tickets to service_role;
grant usage on sequence app.live_events_seq to service_role;

alter table app.live_events enable row level security;
alter table app.live_events force row level security;
alter table app.event_tickets enable row level security;
alter table app.event_tickets force row level security;

-- Members never touch either table with SQL (no grants, no policies): events are read
-- through GET /events, and tickets are issued and spent by the service (a member writing
-- its own ticket could choose its lifetime).

-- Publishing ---------------------------------------------------------------------------------
-- The one way an event is written, by the triggers below (as their owner) and by services
-- in a system session (events_service.publish). Never by a member: a forged member.removed
-- would end someone else's streams.

create or replace function app.publish_live_event(
  family uuid, event_type text, payload jsonb, only_member uuid default null,
  audience_roles text[] default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
begin
  insert into app.live_events (family_unit_id, type, data, only_member_id, roles)
  values (family, event_type, payload, only_member, audience_roles);
end
$$;
revoke all on function app.publish_live_event(uuid, text, jsonb, uuid, text[]) from public;
grant execute on function app.publish_live_event(uuid, text, jsonb, uuid, text[])
  to service_role;

-- Just before commit: number the transaction's events in commit order for their family,
-- then notify. The lock is held only from here to the end of the commit, and nothing else
-- is waited for while holding it, so it cannot deadlock with the transaction's other locks.
-- The payload names the family and the seq; listeners fetch the rows themselves.
create or replace function app.sequence_live_event() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  assigned bigint;
begin
  -- 0x4c56 ("LV"): this lock's namespace among the service's advisory locks.
  perform pg_advisory_xact_lock(19542, hashtext(new.family_unit_id::text));
  update app.live_events set seq = nextval('app.live_events_seq') where id = new.id
  returning seq into assigned;
  perform pg_notify('app_live_events', new.family_unit_id::text || ' ' || assigned::text);
  return null;
end
$$;

drop trigger if exists live_events_sequence on app.live_events;
create constraint trigger live_events_sequence after insert on app.live_events
deferrable initially deferred
for each row execute function app.sequence_live_event();

-- What an event about memory `memory` needs: whether it still exists (`found` is false in a
-- cascade, when it is being deleted), its audience (null: the family; for a draft, only its
-- author) and its counters.
create or replace function app.live_memory_audience(memory uuid, out found boolean,
  out only_member uuid, out reaction_count integer, out comment_count integer)
language sql stable security definer set search_path = '' as $$
  select m.id is not null, case when m.status = 'draft' then m.user_id end,
         m.reaction_count, m.comment_count
  from (select 1) one left join public.memories m on m.id = memory
$$;
revoke all on function app.live_memory_audience(uuid) from public;

-- A family being deleted takes everything with it and announces nothing.
create or replace function app.live_family_exists(family uuid) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (select 1 from public.family_units where id = family)
$$;
revoke all on function app.live_family_exists(uuid) from public;

-- Memories ---------------------------------------------------------------------------------
-- Created published, or a draft published: memory.published to the family. A draft's own
-- creation announces nothing (no one else may see it). Other changes of the fields a reader
-- sees: memory.updated with their names (a draft's only to its author). Counters and
-- timestamps are not changes a client needs an event for (reactions and comments have
-- their own).

create or replace function app.live_memory_events() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  changed text[];
begin
  if tg_op = 'INSERT' then
    if new.status <> 'draft' then
      perform app.publish_live_event(new.family_unit_id, 'memory.published',
        jsonb_build_object('memory_id', new.id, 'user_id', new.user_id));
    end if;
  elsif tg_op = 'UPDATE' then
    if old.status = 'draft' and new.status <> 'draft' then
      perform app.publish_live_event(new.family_unit_id, 'memory.published',
        jsonb_build_object('memory_id', new.id, 'user_id', new.user_id));
      return null;
    end if;
    changed := array_remove(array[
      case when new.title is distinct from old.title then 'title' end,
      case when new.description is distinct from old.description then 'description' end,
      case when new.memory_date is distinct from old.memory_date then 'memory_date' end,
      case when new.location is distinct from old.location then 'location' end,
      case when new.tags is distinct from old.tags then 'tags' end,
      case when new.status is distinct from old.status then 'status' end
    ], null);
    if cardinality(changed) > 0 then
      perform app.publish_live_event(new.family_unit_id, 'memory.updated',
        jsonb_build_object('memory_id', new.id, 'fields', to_jsonb(changed)),
        case when new.status = 'draft' then new.user_id end);
    end if;
  elsif app.live_family_exists(old.family_unit_id) then
    perform app.publish_live_event(old.family_unit_id, 'memory.deleted',
      jsonb_build_object('memory_id', old.id),
      case when old.status = 'draft' then old.user_id end);
  end if;
  return null;
end
$$;

drop trigger if exists memories_live_events on public.memories;
create trigger memories_live_events
after insert or delete or update of title, description, memory_date, location, tags, status
on public.memories for each row execute function app.live_memory_events();

-- Media: added or removed is memory.updated (fields ["media"]); processing finished is
-- media.processed. Rows removed with their memory (a cascade) announce nothing more.

create or replace function app.live_media_events() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  memory record;
begin
  if tg_op = 'UPDATE' then
    if new.processing_status in ('completed', 'failed')
       and new.processing_status is distinct from old.processing_status then
      select * into memory from app.live_memory_audience(new.memory_id);
      if memory.found then
        perform app.publish_live_event(new.family_unit_id, 'media.processed',
          jsonb_build_object('memory_id', new.memory_id, 'media_id', new.id,
                             'processing_status', new.processing_status),
          memory.only_member);
      end if;
    end if;
  elsif tg_op = 'INSERT' then
    select * into memory from app.live_memory_audience(new.memory_id);
    if memory.found then
      perform app.publish_live_event(new.family_unit_id, 'memory.updated',
        jsonb_build_object('memory_id', new.memory_id, 'fields', jsonb_build_array('media')),
        memory.only_member);
    end if;
  else
    select * into memory from app.live_memory_audience(old.memory_id);
    if memory.found and app.live_family_exists(old.family_unit_id) then
      perform app.publish_live_event(old.family_unit_id, 'memory.updated',
        jsonb_build_object('memory_id', old.memory_id, 'fields', jsonb_build_array('media')),
        memory.only_member);
    end if;
  end if;
  return null;
end
$$;

drop trigger if exists memory_media_live_events on public.memory_media;
create trigger memory_media_live_events
after insert or delete or update of processing_status
on public.memory_media for each row execute function app.live_media_events();

-- Reactions: the counter triggers (memory_reactions_count) run first (triggers fire in name
-- order), so reaction_count is the new one.

create or replace function app.live_reaction_events() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  memory record;
  r public.memory_reactions;
  event_type text;
begin
  if tg_op = 'INSERT' then
    r := new;
    event_type := 'reaction.created';
  else
    r := old;
    event_type := 'reaction.deleted';
  end if;
  select * into memory from app.live_memory_audience(r.memory_id);
  if not memory.found or (tg_op = 'DELETE' and not app.live_family_exists(r.family_unit_id)) then
    return null;
  end if;
  perform app.publish_live_event(r.family_unit_id, event_type,
    jsonb_build_object('memory_id', r.memory_id, 'reaction_id', r.id, 'user_id', r.user_id,
                       'emoji', r.emoji, 'reaction_count', memory.reaction_count),
    memory.only_member);
  return null;
end
$$;

drop trigger if exists memory_reactions_live_events on public.memory_reactions;
create trigger memory_reactions_live_events after insert or delete on public.memory_reactions
for each row execute function app.live_reaction_events();

-- Comments: created; text edited; deleted (soft, as the API does; or hard while its memory
-- stays). comment_count comes after the counter trigger (memory_comments_count) ran.

create or replace function app.live_comment_events() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  memory record;
  c public.memory_comments;
begin
  if tg_op = 'DELETE' then
    c := old;
  else
    c := new;
  end if;
  select * into memory from app.live_memory_audience(c.memory_id);
  if not memory.found then
    return null;
  end if;
  if tg_op = 'INSERT' then
    perform app.publish_live_event(c.family_unit_id, 'comment.created',
      jsonb_build_object('memory_id', c.memory_id, 'comment_id', c.id,
                         'parent_comment_id', c.parent_comment_id, 'user_id', c.user_id,
                         'comment_count', memory.comment_count),
      memory.only_member);
  elsif tg_op = 'UPDATE' then
    if old.deleted_at is null and new.deleted_at is not null then
      perform app.publish_live_event(c.family_unit_id, 'comment.deleted',
        jsonb_build_object('memory_id', c.memory_id, 'comment_id', c.id,
                           'comment_count', memory.comment_count),
        memory.only_member);
    elsif new.deleted_at is null and new.content is distinct from old.content then
      perform app.publish_live_event(c.family_unit_id, 'comment.updated',
        jsonb_build_object('memory_id', c.memory_id, 'comment_id', c.id),
        memory.only_member);
    end if;
  elsif old.deleted_at is null and app.live_family_exists(c.family_unit_id) then
    perform app.publish_live_event(c.family_unit_id, 'comment.deleted',
      jsonb_build_object('memory_id', c.memory_id, 'comment_id', c.id,
                         'comment_count', memory.comment_count),
      memory.only_member);
  end if;
  return null;
end
$$;

drop trigger if exists memory_comments_live_events on public.memory_comments;
create trigger memory_comments_live_events
after insert or delete or update of content, deleted_at
on public.memory_comments for each row execute function app.live_comment_events();

-- Members and pets ---------------------------------------------------------------------------
-- A member removed (or leaving) also loses their event tickets at once; their streams end
-- when the member.removed event reaches the process holding them (and, for our own tokens,
-- when their sessions' revocation does).

create or replace function app.live_member_events() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform app.publish_live_event(new.family_unit_id, 'member.joined',
      jsonb_build_object('user_id', new.id, 'display_name', new.display_name,
                         'role', new.role));
  elsif old.removed_at is null and new.removed_at is not null then
    delete from app.event_tickets where user_id = new.id;
    perform app.publish_live_event(new.family_unit_id, 'member.removed',
      jsonb_build_object('user_id', new.id));
  end if;
  return null;
end
$$;

drop trigger if exists user_profiles_live_events on public.user_profiles;
create trigger user_profiles_live_events after insert or update of removed_at
on public.user_profiles for each row execute function app.live_member_events();

create or replace function app.live_pet_events() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform app.publish_live_event(new.family_unit_id, 'member.joined',
      jsonb_build_object('user_id', new.id, 'display_name', new.display_name, 'role', 'pet'));
  elsif app.live_family_exists(old.family_unit_id) then
    perform app.publish_live_event(old.family_unit_id, 'member.removed',
      jsonb_build_object('user_id', old.id));
  end if;
  return null;
end
$$;

drop trigger if exists pet_profiles_live_events on public.pet_profiles;
create trigger pet_profiles_live_events after insert or delete on public.pet_profiles
for each row execute function app.live_pet_events();

-- Logins -------------------------------------------------------------------------------------
-- A login that ends (logout, reuse, removal, password change) kills its tickets and tells
-- every process, which closes the streams opened with it. Delivered at commit.

create or replace function app.live_session_revoked() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if old.revoked_at is null and new.revoked_at is not null then
    delete from app.event_tickets where session_id = new.id;
    perform pg_notify('app_sessions_revoked', new.id::text);
  end if;
  return null;
end
$$;

drop trigger if exists auth_sessions_live_events on app.auth_sessions;
create trigger auth_sessions_live_events after update of revoked_at on app.auth_sessions
for each row execute function app.live_session_revoked();
