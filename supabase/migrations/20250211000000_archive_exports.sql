-- The family archive's exports: one row per export job, and (Supabase only) the private
-- `archives` bucket the finished zips are stored in. docs/archive.md explains the whole.
--
-- A job is queued by an adult or grandparent (POST /families/me/exports) and run by a
-- background job (app/services/archive_exporter.py) with the service role:
--
--   queued ──claim──▶ running ──▶ completed (file stored; removed after expires_at)
--                        │   └───▶ failed (error says why)
--                        └─ the process died: the claim (claimed_until) runs out and another
--                           process claims it again, up to a few attempts.
--
-- Members see their own family's jobs only, and only in the roles that may export; nothing
-- but the job itself writes progress and results.

create table if not exists public.archive_exports (
  id uuid primary key default gen_random_uuid(),
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  -- Who asked (null once that profile is gone; the CLI does not make jobs).
  requested_by uuid references public.user_profiles (id) on delete set null,
  include text[] not null default '{originals}'
    check (cardinality(include) between 1 and 2 and include <@ array['originals', 'previews']),
  status text not null default 'queued'
    check (status in ('queued', 'running', 'completed', 'failed')),
  files_done integer not null default 0 check (files_done >= 0),
  files_total integer not null default 0 check (files_total >= 0),
  bytes_done bigint not null default 0 check (bytes_done >= 0),
  size_bytes bigint check (size_bytes >= 0),
  -- In the archives bucket: {family_unit_id}/{export id}/{bag name}.zip.
  storage_path text,
  error text check (char_length(error) <= 1000),
  attempts integer not null default 0,
  -- A running job's claim; renewed as it makes progress, taken over once it has run out.
  claimed_until timestamptz,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  expires_at timestamptz,
  check (status <> 'completed' or (storage_path is not null and expires_at is not null))
);

create index if not exists archive_exports_family_idx
  on public.archive_exports (family_unit_id, created_at desc);
create index if not exists archive_exports_due_idx on public.archive_exports (created_at)
  where status in ('queued', 'running');
-- One export at a time per family: a second one while one is queued or running is refused
-- (409 export_in_progress), also when two requests race.
create unique index if not exists archive_exports_one_active
  on public.archive_exports (family_unit_id) where status in ('queued', 'running');

grant select on public.archive_exports to authenticated;
grant insert (family_unit_id, requested_by, include) on public.archive_exports to authenticated;
grant all on public.archive_exports to service_role;

alter table public.archive_exports enable row level security;
alter table public.archive_exports force row level security;

drop policy if exists archive_exports_select on public.archive_exports;
create policy archive_exports_select on public.archive_exports for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

drop policy if exists archive_exports_insert on public.archive_exports;
create policy archive_exports_insert on public.archive_exports for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and requested_by = (select auth.uid())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

-- Supabase Storage: a private bucket for archives. Not the memories bucket: that one only
-- takes photos and videos of at most 50 MiB, which is right for uploads and wrong for a zip of
-- a family's whole life. No size limit of its own (the project's global limit applies) and
-- only zips; no policy for members' tokens, so only the service role reads or writes it.
do $$
begin
  if to_regclass('storage.buckets') is null then
    raise notice 'No Supabase Storage here: the archives bucket is not needed';
    return;
  end if;
  insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  values ('archives', 'archives', false, null, array['application/zip'])
  on conflict (id) do update
    set public = false, allowed_mime_types = excluded.allowed_mime_types;
end
$$;
