-- Imports: bringing a family's past in (a Google Photos Takeout, a folder of photos, a
-- Timeless export), as jobs any of the family's adults or grandparents can start and follow.
--
-- An import is idempotent by content: every file it stores is recorded in import_items under
-- its SHA-256, in the same transaction as its media row, so running the same archive again (or
-- again after a crash half-way) adds nothing twice. The memory an album or a day became is
-- recorded in import_memories under a key ("album:Summer 2019", "day:2019-06-14"), so the
-- next run adds a missing photo to the same memory rather than making a second one.

alter table public.family_units add column if not exists keep_location boolean not null default false;

create table public.family_imports (
  id uuid primary key default gen_random_uuid(),
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  created_by uuid references public.user_profiles (id) on delete set null,
  -- The uploaded zip (removed once the import has finished), or null for an operator's import
  -- of a local path through `timeless import`.
  storage_path text unique,
  source_name text not null check (char_length(source_name) between 1 and 255),
  status text not null default 'queued'
    check (status in ('queued', 'running', 'completed', 'failed')),
  progress jsonb not null default '{"files_done": 0, "files_total": 0, "bytes_done": 0}'::jsonb,
  report jsonb not null default
    '{"memories_created": 0, "media_imported": 0, "duplicates_skipped": 0, "files_skipped": []}'::jsonb,
  error text,
  attempts integer not null default 0,
  claimed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
create index family_imports_family on public.family_imports (family_unit_id, created_at desc);
create index family_imports_runnable on public.family_imports (created_at)
  where status in ('queued', 'running');

create table public.import_memories (
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  import_key text not null check (char_length(import_key) between 1 and 600),
  memory_id uuid not null references public.memories (id) on delete cascade,
  primary key (family_unit_id, import_key)
);

create table public.import_items (
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  media_id uuid not null references public.memory_media (id) on delete cascade,
  primary key (family_unit_id, sha256)
);

alter table public.family_imports enable row level security;
alter table public.family_imports force row level security;
alter table public.import_memories enable row level security;
alter table public.import_memories force row level security;
alter table public.import_items enable row level security;
alter table public.import_items force row level security;

-- Who may import: the same roles as the permission table's "Export and import the family
-- archive" row (adult, grandparent), in the caller's own family.
create policy family_imports_select on public.family_imports for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);
create policy family_imports_insert on public.family_imports for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and created_by = (select auth.uid())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

create policy import_memories_select on public.import_memories for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);
create policy import_memories_insert on public.import_memories for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
  and exists (
    select 1 from public.memories m
    where m.id = memory_id and m.family_unit_id = (select app.current_family_id())
  )
);

create policy import_items_select on public.import_items for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);
create policy import_items_insert on public.import_items for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
  and exists (
    select 1 from public.memory_media m
    where m.id = media_id and m.family_unit_id = (select app.current_family_id())
  )
);

-- A member starts an import and reads its progress; the job itself (status, progress, report)
-- is written by the background runner in a system session only.
revoke all on public.family_imports, public.import_memories, public.import_items
  from anon, authenticated;
grant select on public.family_imports to authenticated;
grant insert (family_unit_id, created_by, storage_path, source_name)
  on public.family_imports to authenticated;
grant select, insert on public.import_memories, public.import_items to authenticated;
grant all on public.family_imports, public.import_memories, public.import_items to service_role;

-- Supabase Storage: the uploaded archive is a zip in the family's folder, so the bucket accepts
-- zips (upload URLs are signed by the API for one path each: a member cannot put a zip where a
-- photo goes). Its size limit stays the media limit: an operator who wants imports larger than
-- that through the API raises it (docs/importing.md); `timeless import` has no such limit.
do $$
begin
  if to_regclass('storage.buckets') is null then
    return;
  end if;
  update storage.buckets
  set allowed_mime_types = (
        select array_agg(distinct t order by t)
        from unnest(allowed_mime_types || array['application/zip']) t
      )
  where id = 'memories';
end
$$;
