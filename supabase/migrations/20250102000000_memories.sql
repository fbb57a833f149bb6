-- Memories and their media, with row level security.
--
-- Drafts are visible only to their author; everything else in the family is visible
-- to every member. Edits: own memory, or any as adult/grandparent. Deletes: own as
-- adult/teen/grandparent, any as adult. Counters (reaction_count, comment_count) are
-- maintained by the feed migration's triggers in the same transaction as each change.

-- to_tsvector needs an immutable input; array_to_string is only stable in general,
-- but for text[] it is immutable in fact.
create function app.tags_text(tags text[]) returns text
language sql immutable parallel safe set search_path = '' as $$
  select coalesce(pg_catalog.array_to_string(tags, ' '), '')
$$;

create table public.memories (
  id uuid primary key default gen_random_uuid(),
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  -- Profiles are never deleted (a removed member is only marked), so authorship stays.
  user_id uuid not null references public.user_profiles (id),
  title text not null check (char_length(title) between 1 and 255 and btrim(title) <> ''),
  description text check (char_length(description) <= 10000),
  memory_date date,
  location text check (char_length(location) <= 255),
  tags text[] not null default '{}' check (cardinality(tags) <= 20),
  status text not null default 'draft' check (status in ('draft', 'published', 'archived')),
  modified_by uuid references public.user_profiles (id),
  reaction_count integer not null default 0 check (reaction_count >= 0),
  comment_count integer not null default 0 check (comment_count >= 0),
  search_vector tsvector generated always as (
    setweight(to_tsvector('english'::regconfig, title), 'A')
    || setweight(to_tsvector('english'::regconfig, app.tags_text(tags)), 'A')
    || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')
    || setweight(to_tsvector('english'::regconfig, coalesce(location, '')), 'C')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index memories_family_created_idx on public.memories (family_unit_id, created_at desc, id);
create index memories_family_status_created_idx
  on public.memories (family_unit_id, status, created_at desc, id);
create index memories_user_idx on public.memories (user_id);
create index memories_tags_idx on public.memories using gin (tags);
create index memories_search_idx on public.memories using gin (search_vector);

create table public.memory_media (
  -- Assigned when the upload URL is issued, so the object path is known in advance.
  id uuid primary key,
  memory_id uuid not null references public.memories (id) on delete cascade,
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  storage_bucket text not null default 'memories',
  storage_path text not null unique,
  file_name text not null check (char_length(file_name) between 1 and 255),
  mime_type text not null check (mime_type in (
    'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/heic', 'image/heif',
    'video/mp4', 'video/webm', 'video/quicktime')),
  file_size bigint not null check (file_size > 0),
  width integer,
  height integer,
  duration double precision,
  thumbnail_path text,
  processing_status text not null default 'pending'
    check (processing_status in ('pending', 'processing', 'completed', 'failed')),
  processing_attempts integer not null default 0,
  -- When the current claim was taken; a stale claim is picked up again by the sweep.
  processing_claimed_at timestamptz,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index memory_media_memory_idx on public.memory_media (memory_id, created_at);
create index memory_media_unfinished_idx on public.memory_media (processing_claimed_at)
  where processing_status in ('pending', 'processing');

-- Grants -------------------------------------------------------------------------------

grant select, insert, delete on public.memories to authenticated;
grant update (title, description, memory_date, location, tags, status, modified_by, updated_at)
  on public.memories to authenticated;
grant select, insert, delete on public.memory_media to authenticated;
grant all on public.memories, public.memory_media to service_role;

alter table public.memories enable row level security;
alter table public.memories force row level security;
alter table public.memory_media enable row level security;
alter table public.memory_media force row level security;

-- Policies: memories --------------------------------------------------------------------

create policy memories_select on public.memories for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (status <> 'draft' or user_id = (select auth.uid()))
);

create policy memories_insert on public.memories for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and user_id = (select auth.uid())
);

create policy memories_update on public.memories for update to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (status <> 'draft' or user_id = (select auth.uid()))
  and (user_id = (select auth.uid())
       or (select app.current_member_role()) in ('adult', 'grandparent'))
)
with check (family_unit_id = (select app.current_family_id()));

create policy memories_delete on public.memories for delete to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (status <> 'draft' or user_id = (select auth.uid()))
  and (
    (user_id = (select auth.uid())
      and (select app.current_member_role()) in ('adult', 'teen', 'grandparent'))
    or (select app.current_member_role()) = 'adult'
  )
);

-- Policies: media -----------------------------------------------------------------------
-- Visible with its memory (the subquery is itself filtered by memories_select).

-- Correlated exists: one index probe per row, where `memory_id in (select ...)` would scan
-- every memory the caller can see on each statement.
create policy memory_media_select on public.memory_media for select to authenticated
using (exists (select 1 from public.memories m where m.id = memory_media.memory_id));

-- Adding or removing media is editing the memory.
create policy memory_media_insert on public.memory_media for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and exists (
    select 1 from public.memories m
    where m.id = memory_media.memory_id
      and m.family_unit_id = (select app.current_family_id())
      and (m.user_id = (select auth.uid())
           or (select app.current_member_role()) in ('adult', 'grandparent'))
  )
);

create policy memory_media_delete on public.memory_media for delete to authenticated
using (
  exists (
    select 1 from public.memories m
    where m.id = memory_media.memory_id
      and (m.user_id = (select auth.uid())
           or (select app.current_member_role()) in ('adult', 'grandparent'))
  )
);

-- One home for "a memory as the API shows it": author and media attached. Both the
-- memory endpoints and the feed read it. security_invoker: the caller's RLS applies.
create view public.memory_details with (security_invoker = true) as
select
  m.id, m.user_id, m.family_unit_id, m.title, m.description, m.memory_date, m.location,
  m.tags, m.status, m.created_at, m.updated_at, m.modified_by,
  m.reaction_count, m.comment_count,
  jsonb_build_object(
    'id', p.id, 'display_name', p.display_name, 'avatar_url', p.avatar_url, 'role', p.role
  ) as author,
  coalesce((
    select jsonb_agg(
      jsonb_build_object(
        'id', mm.id, 'memory_id', mm.memory_id, 'storage_path', mm.storage_path,
        'storage_bucket', mm.storage_bucket, 'file_name', mm.file_name,
        'mime_type', mm.mime_type, 'file_size', mm.file_size, 'width', mm.width,
        'height', mm.height, 'duration', mm.duration, 'thumbnail_path', mm.thumbnail_path,
        'processing_status', mm.processing_status, 'metadata', mm.metadata,
        'created_at', mm.created_at, 'updated_at', mm.updated_at
      ) order by mm.created_at, mm.id)
    from public.memory_media mm where mm.memory_id = m.id
  ), '[]'::jsonb) as media
from public.memories m
join public.user_profiles p on p.id = m.user_id;

grant select on public.memory_details to authenticated, service_role;
