-- Quotas: uploads in progress count (docs/api.md, "Quotas"; docs/storage.md, "Quotas").
--
-- Before, only registered files counted against a memory's 200 MiB, so a child could hold
-- 5 × 50 MiB of upload URLs for one memory (and keep the files 24 h without registering
-- them). Now issuing an upload URL reserves its bytes here until the file is registered or the
-- reservation expires, and the family's quota (FAMILY_STORAGE_QUOTA_BYTES) counts the same
-- way: registered files plus live reservations.
--
-- A reservation lives as long as its upload URL. When the built-in storage receives the file
-- it holds the reservation, at the file's real size, for as long as the orphan sweep keeps an
-- unregistered file (so an upload never registered still counts while it takes room on disk);
-- registering the file turns it into a media row and deletes the reservation, in one
-- transaction. Expired rows are cleared when the family next reserves, and by the orphan sweep.
--
-- Members have no privilege on the table at all (row level security is on and forced, with no
-- policy for them): every member-side use goes through the security definer functions below,
-- which take the family from the caller's own profile, never from an argument.

create table if not exists app.upload_reservations (
  storage_path text primary key,
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  -- Not a foreign key: deleting a memory must not free the room of a file already uploaded
  -- into its folder, which stays on disk until the orphan sweep removes it. Null for an
  -- upload that belongs to no memory (a profile picture, in {family}/avatars/).
  memory_id uuid,
  reserved_by uuid references public.user_profiles (id) on delete set null,
  max_bytes bigint not null check (max_bytes > 0),
  -- Set when the built-in storage has received the file: its real size, which then counts.
  uploaded_bytes bigint check (uploaded_bytes > 0),
  url_expires_at timestamptz not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint upload_reservations_path_in_own_folder check (
    starts_with(
      storage_path, family_unit_id::text || '/' || coalesce(memory_id::text, 'avatars') || '/')
    and storage_path !~ '(^|/)\.\.?(/|$)'
  )
);
create index if not exists upload_reservations_family_idx
  on app.upload_reservations (family_unit_id, expires_at);
create index if not exists upload_reservations_memory_idx
  on app.upload_reservations (memory_id, expires_at);
-- A family's registered bytes, summed from the index alone.
create index if not exists memory_media_family_size_idx
  on public.memory_media (family_unit_id) include (file_size);

alter table app.upload_reservations enable row level security;
alter table app.upload_reservations force row level security;
revoke all on app.upload_reservations from public, anon, authenticated;
grant all on app.upload_reservations to service_role;

-- What a reservation counts for: the real size once received, else all it may receive.
create or replace function app.reserved_bytes(uploaded_bytes bigint, max_bytes bigint)
returns bigint language sql immutable set search_path = '' as $$
  select coalesce(uploaded_bytes, max_bytes)
$$;

-- Locks the caller's family's storage (so reservations and registrations of one family are
-- decided one at a time), clears its expired reservations and says what is in use: for the
-- family and for one memory, registered files plus live reservations, leaving out one path
-- (the upload being registered, which is about to be counted by its real size). The family
-- row is locked FOR NO KEY UPDATE: rows that merely reference the family are not held up.
create or replace function app.lock_family_storage(memory uuid, excluding_path text)
returns table (family_bytes bigint, memory_bytes bigint)
language plpgsql volatile security definer set search_path = '' as $$
declare
  family uuid := app.current_family_id();
begin
  if family is null then
    raise exception 'not a member of a family' using errcode = '42501';
  end if;
  perform 1 from public.family_units where id = family for no key update;
  delete from app.upload_reservations where family_unit_id = family and expires_at <= now();
  return query select
    (select coalesce(sum(m.file_size), 0)::bigint
       from public.memory_media m where m.family_unit_id = family)
    + (select coalesce(sum(app.reserved_bytes(r.uploaded_bytes, r.max_bytes)), 0)::bigint
       from app.upload_reservations r
       where r.family_unit_id = family and r.storage_path is distinct from excluding_path),
    (select coalesce(sum(m.file_size), 0)::bigint
       from public.memory_media m where m.memory_id = memory and m.family_unit_id = family)
    + (select coalesce(sum(app.reserved_bytes(r.uploaded_bytes, r.max_bytes)), 0)::bigint
       from app.upload_reservations r
       where r.memory_id = memory and r.family_unit_id = family
         and r.expires_at > now() and r.storage_path is distinct from excluding_path);
end
$$;

-- Reserves `bytes` for an upload URL into one of the caller's family's memories (or, memory
-- null, for one of its avatars). The API decides how many bytes may be reserved (after
-- lock_family_storage, in the same transaction); a reservation lasts at most a day whatever
-- it is given.
create or replace function app.reserve_upload(
  memory uuid, path text, bytes bigint, url_expires_at timestamptz
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  family uuid := app.current_family_id();
  until timestamptz := least(url_expires_at, now() + interval '1 day');
begin
  if family is null or (memory is not null and not exists (
    select 1 from public.memories where id = memory and family_unit_id = family
  )) then
    raise exception 'no such memory in the caller''s family' using errcode = '42501';
  end if;
  insert into app.upload_reservations
    (storage_path, family_unit_id, memory_id, reserved_by, max_bytes, url_expires_at, expires_at)
  values (path, family, memory, auth.uid(), bytes, until, until);
end
$$;

-- The file was registered (its media row now counts it): the reservation goes.
create or replace function app.release_upload(path text) returns void
language sql volatile security definer set search_path = '' as $$
  delete from app.upload_reservations
  where storage_path = path and family_unit_id = app.current_family_id()
$$;

-- What the caller's family uses now: registered files plus live reservations.
create or replace function app.family_storage_used() returns bigint
language sql stable security definer set search_path = '' as $$
  select (select coalesce(sum(m.file_size), 0)::bigint
            from public.memory_media m where m.family_unit_id = app.current_family_id())
       + (select coalesce(sum(app.reserved_bytes(r.uploaded_bytes, r.max_bytes)), 0)::bigint
            from app.upload_reservations r
            where r.family_unit_id = app.current_family_id() and r.expires_at > now())
$$;

revoke all on function app.lock_family_storage(uuid, text), app.reserve_upload(uuid, text, bigint, timestamptz),
  app.release_upload(text), app.family_storage_used() from public;
grant execute on function app.lock_family_storage(uuid, text), app.reserve_upload(uuid, text, bigint, timestamptz),
  app.release_upload(text), app.family_storage_used() to authenticated, service_role;
grant execute on function app.reserved_bytes(bigint, bigint) to authenticated, service_role;
