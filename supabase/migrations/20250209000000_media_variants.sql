-- Media for browsers and phones: variants (thumbnail, preview, playback), a placeholder,
-- capture metadata, duplicates by SHA-256, AVIF, the family's keep_location switch, and
-- avatars of members and pets through the same upload and processing as memory media.
-- docs/memories.md and docs/storage.md explain what uses each part.

-- 1. The family decides whether GPS positions are kept --------------------------------------
alter table public.family_units
  add column if not exists keep_location boolean not null default false;
grant update (keep_location) on public.family_units to authenticated;

-- 2. Media rows: what processing found and made --------------------------------------------
-- variants: {"thumbnail"|"preview"|"playback": {"path", "mime_type", "width", "height",
--           "size"}}, written by processing only (service role).
-- taken_at: the capture instant; taken_at_offset: its UTC offset in minutes, or null when
--           the file gave a local time without one (taken_at then holds that wall-clock time
--           as if it were UTC, and the API shows it without an offset).
-- purpose: 'memory' (a memory's photo or video) or 'avatar' (a member's or pet's picture,
--          with no memory). One table, so one processing queue serves both.
alter table public.memory_media
  add column if not exists sha256 text check (sha256 ~ '^[0-9a-f]{64}$'),
  add column if not exists variants jsonb not null default '{}'::jsonb,
  add column if not exists placeholder text check (char_length(placeholder) <= 100),
  add column if not exists taken_at timestamptz,
  add column if not exists taken_at_offset smallint check (taken_at_offset between -900 and 900),
  add column if not exists camera jsonb,
  add column if not exists purpose text not null default 'memory';

alter table public.memory_media alter column memory_id drop not null;
alter table public.memory_media drop constraint if exists memory_media_purpose_check;
alter table public.memory_media add constraint memory_media_purpose_check check (
  (purpose = 'memory' and memory_id is not null) or (purpose = 'avatar' and memory_id is null)
);

alter table public.memory_media drop constraint if exists memory_media_mime_type_check;
alter table public.memory_media add constraint memory_media_mime_type_check check (mime_type in (
  'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/heic', 'image/heif', 'image/avif',
  'video/mp4', 'video/webm', 'video/quicktime'));

-- Every object a row names stays inside its own folder: a memory's for memory media,
-- {family}/avatars/ for avatars; variants included, since the service signs URLs for them.
create or replace function app.media_folder(family uuid, memory uuid) returns text
language sql immutable parallel safe set search_path = '' as $$
  select family::text || '/' || coalesce(memory::text, 'avatars') || '/'
$$;

create or replace function app.path_in_folder(path text, folder text) returns boolean
language sql immutable parallel safe set search_path = '' as $$
  select path is null or (starts_with(path, folder) and path !~ '(^|/)\.\.?(/|$)')
$$;

create or replace function app.variant_paths_in_folder(variants jsonb, folder text)
returns boolean
language sql immutable parallel safe set search_path = '' as $$
  select coalesce(bool_and(app.path_in_folder(v.value ->> 'path', folder)), true)
  from jsonb_each(case when jsonb_typeof(variants) = 'object' then variants else '{}' end) v
$$;

alter table public.memory_media drop constraint if exists memory_media_path_in_own_folder;
alter table public.memory_media add constraint memory_media_path_in_own_folder check (
  storage_path is not null
  and app.path_in_folder(storage_path, app.media_folder(family_unit_id, memory_id))
  and app.path_in_folder(thumbnail_path, app.media_folder(family_unit_id, memory_id))
  and app.variant_paths_in_folder(variants, app.media_folder(family_unit_id, memory_id))
);

-- The same bytes once per family (memories only: an avatar may be a photo of a memory).
create unique index if not exists memory_media_family_sha256_key
  on public.memory_media (family_unit_id, sha256) where purpose = 'memory';

-- The earliest capture of a memory's media, for memory_date.
create index if not exists memory_media_memory_taken_idx
  on public.memory_media (memory_id, taken_at) where taken_at is not null;

-- What a member's own transaction may write: registration's columns. Processing results
-- (status, variants, paths, capture facts) are written by the service role only, so a
-- member's token (Supabase's Data API included) cannot point a variant at another file.
revoke insert on public.memory_media from authenticated;
grant insert (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type,
              file_size, sha256, purpose)
  on public.memory_media to authenticated;

-- Avatars are visible to the whole family and inserted by any member; memory media keep
-- their policies (visible and editable with their memory).
drop policy if exists memory_media_select on public.memory_media;
create policy memory_media_select on public.memory_media for select to authenticated
using (
  case when purpose = 'avatar'
    then family_unit_id = (select app.current_family_id())
    else exists (select 1 from public.memories m where m.id = memory_media.memory_id)
  end
);

create policy memory_media_insert_avatar on public.memory_media for insert to authenticated
with check (
  purpose = 'avatar'
  and memory_id is null
  and family_unit_id = (select app.current_family_id())
);

-- Which media id already holds these bytes in the caller's family, even when it belongs to
-- another member's draft (the id alone says nothing; reading it is still a 404).
create or replace function app.family_media_with_sha256(digest text) returns uuid
language sql stable security definer set search_path = '' as $$
  select id from public.memory_media
  where family_unit_id = app.current_family_id() and purpose = 'memory' and sha256 = digest
  limit 1
$$;
revoke all on function app.family_media_with_sha256(text) from public;
grant execute on function app.family_media_with_sha256(text) to authenticated, service_role;

-- 3. memory_date from the media ---------------------------------------------------------------
-- true while memory_date was filled in from the earliest capture date of the memory's media;
-- an edit of memory_date by anyone (a change of value) makes it the member's, never touched
-- again by processing.
alter table public.memories
  add column if not exists memory_date_from_media boolean not null default false;

create or replace function app.memory_date_set_by_member() returns trigger
language plpgsql set search_path = '' as $$
begin
  if new.memory_date is distinct from old.memory_date
     and new.memory_date_from_media is not distinct from old.memory_date_from_media then
    new.memory_date_from_media := false;
  end if;
  return new;
end
$$;

drop trigger if exists memories_memory_date_owner on public.memories;
create trigger memories_memory_date_owner before update of memory_date on public.memories
for each row execute function app.memory_date_set_by_member();

-- 4. Avatars ---------------------------------------------------------------------------------
alter table public.user_profiles
  add column if not exists avatar_media_id uuid references public.memory_media (id)
    on delete set null;
alter table public.pet_profiles
  add column if not exists avatar_media_id uuid references public.memory_media (id)
    on delete set null;
grant update (avatar_media_id) on public.user_profiles to authenticated;
grant update (avatar_url, avatar_media_id) on public.pet_profiles to authenticated;

-- Who may change a pet: the roles that may create one.
drop policy if exists pet_profiles_update on public.pet_profiles;
create policy pet_profiles_update on public.pet_profiles for update to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

-- An avatar is an avatar upload of the profile's own family, never a memory's photo (which
-- might be another member's draft): checked whoever writes the row.
create or replace function app.check_avatar_media() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.avatar_media_id is not null and not exists (
    select 1 from public.memory_media mm
    where mm.id = new.avatar_media_id and mm.purpose = 'avatar'
      and mm.family_unit_id = new.family_unit_id
  ) then
    raise exception 'avatar_media_id is not an avatar upload of this family'
      using errcode = '23514';
  end if;
  return new;
end
$$;

-- A member leaving or deleting their account takes their uploaded avatar with them.
create or replace function app.drop_avatar_on_departure() returns trigger
language plpgsql set search_path = '' as $$
begin
  if new.removed_at is not null and old.removed_at is null then
    new.avatar_media_id := null;
  end if;
  return new;
end
$$;

-- The replaced avatar's row goes (after the profile stopped pointing at it); its files are
-- removed by the service after the commit, or else by the orphan sweep.
create or replace function app.drop_replaced_avatar() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  delete from public.memory_media where id = old.avatar_media_id and purpose = 'avatar';
  return null;
end
$$;

drop trigger if exists user_profiles_avatar_check on public.user_profiles;
create trigger user_profiles_avatar_check before insert or update of avatar_media_id
on public.user_profiles for each row execute function app.check_avatar_media();
drop trigger if exists pet_profiles_avatar_check on public.pet_profiles;
create trigger pet_profiles_avatar_check before insert or update of avatar_media_id
on public.pet_profiles for each row execute function app.check_avatar_media();
drop trigger if exists user_profiles_avatar_departure on public.user_profiles;
create trigger user_profiles_avatar_departure before update of removed_at on public.user_profiles
for each row execute function app.drop_avatar_on_departure();
drop trigger if exists user_profiles_avatar_replaced on public.user_profiles;
create trigger user_profiles_avatar_replaced after update on public.user_profiles
for each row when (old.avatar_media_id is distinct from new.avatar_media_id)
execute function app.drop_replaced_avatar();
drop trigger if exists pet_profiles_avatar_replaced on public.pet_profiles;
create trigger pet_profiles_avatar_replaced after update on public.pet_profiles
for each row when (old.avatar_media_id is distinct from new.avatar_media_id)
execute function app.drop_replaced_avatar();
drop trigger if exists pet_profiles_avatar_deleted on public.pet_profiles;
create trigger pet_profiles_avatar_deleted after delete on public.pet_profiles
for each row when (old.avatar_media_id is not null)
execute function app.drop_replaced_avatar();

-- The thumbnail path of a profile's uploaded avatar once processed (the API signs it and
-- shows it as avatar_url). Invoker: the caller's row level security applies.
create or replace function app.avatar_path(media uuid) returns text
language sql stable set search_path = '' as $$
  select mm.variants -> 'thumbnail' ->> 'path' from public.memory_media mm
  where mm.id = media and mm.processing_status = 'completed'
$$;
grant execute on function app.avatar_path(uuid) to authenticated, service_role;

-- 5. The views the API reads: media and authors carry the new fields --------------------------
create or replace view public.memory_details with (security_invoker = true) as
select
  m.id, m.user_id, m.family_unit_id, m.title, m.description, m.memory_date, m.location,
  m.tags, m.status, m.created_at, m.updated_at, m.modified_by,
  m.reaction_count, m.comment_count,
  jsonb_build_object(
    'id', p.id, 'display_name', p.display_name, 'avatar_url', p.avatar_url, 'role', p.role,
    'avatar_path', app.avatar_path(p.avatar_media_id)
  ) as author,
  coalesce((
    select jsonb_agg(
      jsonb_build_object(
        'id', mm.id, 'memory_id', mm.memory_id, 'storage_path', mm.storage_path,
        'storage_bucket', mm.storage_bucket, 'file_name', mm.file_name,
        'mime_type', mm.mime_type, 'file_size', mm.file_size, 'width', mm.width,
        'height', mm.height, 'duration', mm.duration, 'thumbnail_path', mm.thumbnail_path,
        'processing_status', mm.processing_status, 'metadata', mm.metadata,
        'created_at', mm.created_at, 'updated_at', mm.updated_at,
        'sha256', mm.sha256, 'variants', mm.variants, 'placeholder', mm.placeholder,
        'taken_at', mm.taken_at, 'taken_at_offset', mm.taken_at_offset, 'camera', mm.camera
      ) order by mm.created_at, mm.id)
    from public.memory_media mm where mm.memory_id = m.id
  ), '[]'::jsonb) as media
from public.memories m
join public.user_profiles p on p.id = m.user_id;

create or replace view public.memory_comment_details with (security_invoker = true) as
select
  c.id, c.memory_id, c.user_id,
  jsonb_build_object(
    'id', p.id, 'display_name', p.display_name, 'avatar_url', p.avatar_url, 'role', p.role,
    'avatar_path', app.avatar_path(p.avatar_media_id)
  ) as author,
  c.parent_comment_id,
  case when c.deleted_at is null then c.content else '[deleted]' end as content,
  c.created_at, c.updated_at, c.deleted_at, c.reply_count
from public.memory_comments c
join public.user_profiles p on p.id = c.user_id;

-- Forgetting positions when the family turns keep_location off (adults and grandparents,
-- who may change the family's settings).
create or replace function app.forget_family_locations() returns void
language sql volatile security definer set search_path = '' as $$
  update public.memory_media
  set metadata = metadata - 'location', updated_at = now()
  where family_unit_id = app.current_family_id()
    and app.current_member_role() in ('adult', 'grandparent')
    and metadata ? 'location'
$$;
revoke all on function app.forget_family_locations() from public;
grant execute on function app.forget_family_locations() to authenticated;

-- 6. Supabase Storage accepts AVIF too (skipped where there is no Supabase Storage) ----------
do $$
begin
  if to_regclass('storage.buckets') is null then
    return;
  end if;
  update storage.buckets
  set allowed_mime_types = array[
    'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/heic', 'image/heif',
    'image/avif', 'video/mp4', 'video/webm', 'video/quicktime']
  where id = 'memories';
end
$$;
