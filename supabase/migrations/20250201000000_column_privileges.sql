-- What a member's own token may write, column by column; what the server owns, it sets itself.
--
-- On Supabase the Data API hands any member's token to the database as role `authenticated`,
-- and the app's own user sessions (app/db/postgres.py) use that very role. Row level security
-- says which rows; it says nothing about columns. Before this migration a member talking to
-- the database directly could insert a memory with reaction_count 5000 and created_at 2099,
-- set modified_by to someone else, insert media as `completed` with file_size 1, or back-date
-- a comment. The rule now: a member can write nothing the API would refuse.
--
-- 1. INSERT is granted only on the columns the API itself writes as the member; counters,
--    timestamps, processing state and the like keep their defaults or are set by triggers.
-- 2. Where the API does write a server-owned value in a user session (updated_at,
--    modified_by, deleted_at, created_by), a BEFORE trigger sets it to the server's value
--    whenever the writer is `authenticated`: now(), auth.uid(). The API's own statements
--    already write exactly those values, so it is unaffected.
-- 3. A media row's file_size is the stored object's real size where the database can see the
--    objects (Supabase Storage's storage.objects). On the built-in server only the API can
--    reach the database, and it writes the size it read from storage itself.
-- 4. Nothing for `anon` in `public`: not even the views Supabase's default privileges grant.
--
-- The triggers check `current_user = 'authenticated'`: the counters and rollups run as their
-- (security definer) owner and background work as service_role, and are left alone.
-- tests/attacks/test_direct_db.py holds the reviewed list of every privilege and the writes
-- that must be refused.

-- 1. Column grants ------------------------------------------------------------------------------

revoke insert on public.pet_profiles, public.invitations, public.memories, public.memory_media,
  public.memory_reactions, public.memory_comments
from authenticated;

grant insert (family_unit_id, display_name, avatar_url, created_by)
  on public.pet_profiles to authenticated;
grant insert (family_unit_id, email, role, token_hash, invited_by, expires_at)
  on public.invitations to authenticated;
grant insert (family_unit_id, user_id, title, description, memory_date, location, tags, status)
  on public.memories to authenticated;
grant insert (id, memory_id, family_unit_id, storage_bucket, storage_path, file_name, mime_type,
              file_size)
  on public.memory_media to authenticated;
grant insert (memory_id, family_unit_id, user_id, emoji) on public.memory_reactions
  to authenticated;
grant insert (memory_id, family_unit_id, user_id, parent_comment_id, content)
  on public.memory_comments to authenticated;

-- 4. anon: nothing in public. The Supabase compatibility migration reset the tables it named;
-- this also covers the views (memory_comment_details was granted to anon by default there).
revoke all on all tables in schema public from anon;
revoke all on public.memory_comment_details from authenticated;
grant select on public.memory_comment_details to authenticated;

-- 2. Server-owned values ------------------------------------------------------------------------

create function app.set_server_owned_values() returns trigger
language plpgsql set search_path = '' as $$
begin
  if current_user <> 'authenticated' then
    return new;
  end if;
  case tg_table_name
    when 'memories' then
      if tg_op = 'INSERT' then
        -- The API creates drafts and published memories only; archiving comes later.
        if new.status not in ('draft', 'published') then
          raise exception 'a new memory is a draft or published' using errcode = '23514';
        end if;
      else
        new.modified_by := auth.uid();
        new.updated_at := now();
      end if;
    when 'memory_comments' then
      new.updated_at := now();
      if new.deleted_at is not null then
        new.deleted_at := coalesce(old.deleted_at, now());
      end if;
    when 'pet_profiles' then
      new.created_by := auth.uid();
    when 'auth_sessions' then
      -- Revoking is for good, and happens now: a revoked login is never revived.
      if old.revoked_at is not null then
        new.revoked_at := old.revoked_at;
        new.revoked_reason := old.revoked_reason;
      elsif new.revoked_at is not null then
        new.revoked_at := now();
      end if;
      -- A login's last use, where the table has the column (a later migration adds it), is
      -- the server's clock too. Through jsonb so this function works with or without it.
      if to_jsonb(new) -> 'last_used_at' is distinct from to_jsonb(old) -> 'last_used_at' then
        new := jsonb_populate_record(new, jsonb_build_object('last_used_at', now()));
      end if;
    when 'invitations' then
      -- Only a pending invite is revoked (or found expired); the API refuses the rest.
      if new.status is distinct from old.status and old.status <> 'pending' then
        raise exception 'only a pending invite can be revoked' using errcode = '42501';
      end if;
    else
      -- family_units, user_profiles
      new.updated_at := now();
  end case;
  return new;
end
$$;

create trigger memories_server_owned before insert or update on public.memories
for each row execute function app.set_server_owned_values();
create trigger memory_comments_server_owned before update on public.memory_comments
for each row execute function app.set_server_owned_values();
create trigger pet_profiles_server_owned before insert on public.pet_profiles
for each row execute function app.set_server_owned_values();
create trigger auth_sessions_server_owned before update on app.auth_sessions
for each row execute function app.set_server_owned_values();
create trigger invitations_server_owned before update on public.invitations
for each row execute function app.set_server_owned_values();
create trigger family_units_server_owned before update on public.family_units
for each row execute function app.set_server_owned_values();
create trigger user_profiles_server_owned before update on public.user_profiles
for each row execute function app.set_server_owned_values();

-- 3. A media row's size is its object's --------------------------------------------------------
-- The trigger runs as the writer (so it knows the writer is `authenticated`); the size comes from
-- a security definer helper, since a member's own Storage policies need not show them the
-- object. The helper answers only for objects in the caller's own family's folder.

create function app.own_family_object_size(bucket text, object_name text) returns bigint
language plpgsql stable security definer set search_path = '' as $$
declare
  object_size bigint;
begin
  if to_regclass('storage.objects') is null
     or split_part(object_name, '/', 1) is distinct from app.current_family_id()::text then
    return null;
  end if;
  execute 'select (metadata ->> ''size'')::bigint from storage.objects'
          ' where bucket_id = $1 and name = $2'
    into object_size using bucket, object_name;
  return object_size;
end
$$;

revoke all on function app.own_family_object_size(text, text) from public;
grant execute on function app.own_family_object_size(text, text) to authenticated;

create function app.set_media_file_size() returns trigger
language plpgsql set search_path = '' as $$
declare
  object_size bigint;
begin
  if current_user <> 'authenticated' or to_regclass('storage.objects') is null then
    return new;
  end if;
  object_size := app.own_family_object_size(new.storage_bucket, new.storage_path);
  if object_size is null then
    raise exception 'no uploaded object at this storage_path' using errcode = '23503';
  end if;
  new.file_size := object_size;
  return new;
end
$$;

create trigger memory_media_file_size before insert on public.memory_media
for each row execute function app.set_media_file_size();
