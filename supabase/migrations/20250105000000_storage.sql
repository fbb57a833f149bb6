-- Supabase Storage: the private `memories` bucket, and what a member's own Supabase token may
-- read in it. Also: the API roles' privileges on our tables, brought back to what the earlier
-- migrations grant (Supabase's default privileges give them far more; see part 3).
--
-- The same file runs on Supabase and on the built-in server. Everything that touches the
-- `storage` schema is skipped where Supabase Storage does not exist (checked with to_regclass),
-- so the built-in server, whose files live on disk, applies it as a no-op there.
--
-- Uploads never use a member's token: the backend hands out signed upload URLs made with the
-- service role. The read policy below is for a frontend that might one day read objects with
-- supabase-js; it admits only the member's own family's folder, and only objects of memories
-- the member can see (drafts of others stay invisible).
--
-- Object layout (docs/api.md, Storage): {family_unit_id}/{memory_id}/{media_id}.{ext}, thumbnail
-- {media_id}_thumb.jpg beside it.

-- 1. Is this object a file of a memory the caller can see? ---------------------------------
-- Security invoker on purpose: the caller's row level security on public.memories answers,
-- so another family's memories and other members' drafts do not exist for it. The memory id is
-- checked to be a UUID before the cast, so an odd object name is "no", never an error.
-- (Created on both servers; only the storage policy uses it.)

create function app.memory_object_visible(object_name text) returns boolean
language plpgsql stable set search_path = '' as $$
declare
  parts text[] := pg_catalog.string_to_array(object_name, '/');
begin
  if pg_catalog.array_length(parts, 1) is distinct from 3
     or parts[2] !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    return false;
  end if;
  return exists (select 1 from public.memories m where m.id = parts[2]::uuid);
end
$$;

revoke all on function app.memory_object_visible(text) from public;
grant execute on function app.memory_object_visible(text) to authenticated, service_role;

-- 2. The bucket and its read policy (Supabase only) ------------------------------------------
-- Private; its limits repeat the contract's (50 MiB a file, the accepted media types) so Storage
-- itself refuses what the API would. Re-applied if the bucket already exists, so a bucket made
-- public by hand becomes private again.

do $$
begin
  if to_regclass('storage.buckets') is null then
    raise notice 'No Supabase Storage here: the memories bucket is not needed';
    return;
  end if;
  insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  values (
    'memories', 'memories', false, 50 * 1024 * 1024,
    array['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/heic', 'image/heif',
          'video/mp4', 'video/webm', 'video/quicktime']
  )
  on conflict (id) do update
    set public = false,
        file_size_limit = excluded.file_size_limit,
        allowed_mime_types = excluded.allowed_mime_types;
end
$$;

-- Supabase enables row level security on storage.objects itself (and no longer lets projects
-- alter that table), so this only adds a policy. Only `select`: with no insert, update or
-- delete policy, a member's token can change nothing in Storage.
do $$
begin
  if to_regclass('storage.objects') is null then
    return;
  end if;
  create policy memories_family_read on storage.objects for select to authenticated
  using (
    bucket_id = 'memories'
    and (storage.foldername(name))[1] = (select app.current_family_id()::text)
    and app.memory_object_visible(name)
  );
exception when insufficient_privilege then
  -- A project where this role may not add policies to Storage's tables: nothing reads Storage
  -- with a member's token today, so carry on; docs/supabase.md says how to add it by hand.
  raise warning 'Could not create the storage policy memories_family_read: %', sqlerrm;
end
$$;

-- 3. What the API roles may touch ------------------------------------------------------------
-- On Supabase, default privileges give anon, authenticated and service_role ALL on every table
-- created in `public`, and the Data API serves `public` to anyone holding a member's Supabase
-- token. Row level security still filters the rows, but the column grants of the earlier
-- migrations would be moot: a member could update their own profile's role or family. Reset
-- the grants to exactly what those migrations give (a no-op on the built-in server), and stop
-- granting by default on tables this role creates from now on: each migration grants what it
-- means to, as these do.

revoke all on
  public.family_units, public.user_profiles, public.pet_profiles, public.invitations,
  public.memories, public.memory_media, public.memory_details,
  public.memory_reactions, public.memory_comments,
  public.analytics_events, public.analytics_metrics
from anon, authenticated;

-- 20250101000000_foundation.sql
grant select, update (name, updated_at) on public.family_units to authenticated;
grant select, update (display_name, avatar_url, updated_at) on public.user_profiles
  to authenticated;
grant insert (id, family_unit_id, role, display_name, email, username)
  on public.user_profiles to authenticated;
grant select, insert, delete on public.pet_profiles to authenticated;
grant select, insert, update (status) on public.invitations to authenticated;
-- 20250102000000_memories.sql
grant select, insert, delete on public.memories to authenticated;
grant update (title, description, memory_date, location, tags, status, modified_by, updated_at)
  on public.memories to authenticated;
grant select, insert, delete on public.memory_media to authenticated;
grant select on public.memory_details to authenticated;
-- 20250103000000_reactions_comments.sql
grant select, insert, delete on public.memory_reactions to authenticated;
grant select, insert on public.memory_comments to authenticated;
grant update (content, updated_at, deleted_at) on public.memory_comments to authenticated;
-- 20250104000000_analytics.sql
grant select on public.analytics_events, public.analytics_metrics to authenticated;

alter default privileges in schema public revoke all on tables from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;
