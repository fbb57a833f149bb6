-- Families, members, pets, invitations and login sessions, with row level security.
--
-- Family and role always come from user_profiles (never from token claims), through
-- STABLE SECURITY DEFINER helpers wrapped in (select ...) so each is evaluated once
-- per statement. A removed member (removed_at set) has no family at once.

create schema if not exists app;
grant usage on schema app to authenticated, service_role;

-- Families -----------------------------------------------------------------------

create table public.family_units (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(name) between 1 and 255),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.user_profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  role text not null check (role in ('adult', 'teen', 'child', 'grandparent')),
  display_name text not null check (char_length(display_name) between 1 and 100),
  -- Stored lower-cased; unique across the service, whatever the case it was typed in.
  email text check (email = lower(email)),
  -- Only provisioned children have one; they log in with it.
  username text check (username = lower(username)),
  avatar_url text check (char_length(avatar_url) <= 2048),
  removed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index user_profiles_email_key on public.user_profiles (email);
create unique index user_profiles_username_key on public.user_profiles (username);
create index user_profiles_family_idx on public.user_profiles (family_unit_id);

-- Pets are profiles only: they never log in, so they are not auth users.
create table public.pet_profiles (
  id uuid primary key default gen_random_uuid(),
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  display_name text not null check (char_length(display_name) between 1 and 100),
  avatar_url text check (char_length(avatar_url) <= 2048),
  created_by uuid references public.user_profiles (id) on delete set null,
  created_at timestamptz not null default now()
);
create index pet_profiles_family_idx on public.pet_profiles (family_unit_id);

create table public.invitations (
  id uuid primary key default gen_random_uuid(),
  family_unit_id uuid not null references public.family_units (id) on delete cascade,
  email text not null check (email = lower(email)),
  role text not null check (role in ('adult', 'teen', 'child', 'grandparent')),
  -- Only a SHA-256 of the token is kept; the token itself is shown once.
  token_hash text not null unique,
  status text not null default 'pending'
    check (status in ('pending', 'accepted', 'expired', 'revoked')),
  invited_by uuid references public.user_profiles (id) on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references public.user_profiles (id) on delete set null,
  created_at timestamptz not null default now()
);
create index invitations_family_idx on public.invitations (family_unit_id, created_at desc);
create unique index invitations_one_pending_per_email
  on public.invitations (family_unit_id, email) where status = 'pending';

-- Login sessions -----------------------------------------------------------------
-- One row per login. Access tokens carry its id (sid); revoking it stops every
-- access and refresh token descended from that login at once.

create table app.auth_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  revoked_reason text
);
create index auth_sessions_user_idx on app.auth_sessions (user_id);

create table app.refresh_tokens (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references app.auth_sessions (id) on delete cascade,
  token_hash text not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  -- Set when exchanged for a new pair; presenting it again is reuse.
  rotated_at timestamptz
);
create index refresh_tokens_session_idx on app.refresh_tokens (session_id);

-- What a reader sees: a pending invite past its expiry is expired.
create function app.invite_status(status text, expires_at timestamptz) returns text
language sql stable set search_path = '' as $$
  select case when status = 'pending' and expires_at <= now() then 'expired' else status end
$$;
grant execute on function app.invite_status(text, timestamptz) to authenticated, service_role;

-- Helpers the policies use ----------------------------------------------------------

create function app.current_family_id() returns uuid
language sql stable security definer set search_path = '' as $$
  select family_unit_id from public.user_profiles
  where id = auth.uid() and removed_at is null
$$;

create function app.current_member_role() returns text
language sql stable security definer set search_path = '' as $$
  select role from public.user_profiles
  where id = auth.uid() and removed_at is null
$$;

revoke all on function app.current_family_id(), app.current_member_role() from public;
grant execute on function app.current_family_id(), app.current_member_role()
  to authenticated, service_role;

-- Grants: what each role may touch at all; policies then say which rows. -------------

grant select, update (name, updated_at) on public.family_units to authenticated;
grant select, update (display_name, avatar_url, updated_at) on public.user_profiles
  to authenticated;
grant insert (id, family_unit_id, role, display_name, email, username)
  on public.user_profiles to authenticated;
grant select, insert, delete on public.pet_profiles to authenticated;
grant select, insert, update (status) on public.invitations to authenticated;
grant select, update (revoked_at, revoked_reason) on app.auth_sessions to authenticated;
grant select on app.refresh_tokens to authenticated;

grant all on public.family_units, public.user_profiles, public.pet_profiles,
  public.invitations to service_role;
grant all on app.auth_sessions, app.refresh_tokens to service_role;
grant select, insert, update, delete on auth.users to service_role;

-- Row level security ----------------------------------------------------------------

alter table public.family_units enable row level security;
alter table public.family_units force row level security;
alter table public.user_profiles enable row level security;
alter table public.user_profiles force row level security;
alter table public.pet_profiles enable row level security;
alter table public.pet_profiles force row level security;
alter table public.invitations enable row level security;
alter table public.invitations force row level security;
alter table app.auth_sessions enable row level security;
alter table app.auth_sessions force row level security;
alter table app.refresh_tokens enable row level security;
alter table app.refresh_tokens force row level security;

create policy family_units_select on public.family_units for select to authenticated
using (id = (select app.current_family_id()));

create policy family_units_update on public.family_units for update to authenticated
using (
  id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

create policy user_profiles_select on public.user_profiles for select to authenticated
using (family_unit_id = (select app.current_family_id()));

-- Members edit only their own name and avatar (column grants); role and family are
-- not updatable by `authenticated` at all, so a role is immutable by its holder.
create policy user_profiles_update_own on public.user_profiles for update to authenticated
using (id = (select auth.uid()) and removed_at is null);

-- The one profile a member may create: an adult provisioning a child into their family.
create policy user_profiles_provision_child on public.user_profiles for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and role = 'child'
  and (select app.current_member_role()) = 'adult'
);

create policy pet_profiles_select on public.pet_profiles for select to authenticated
using (family_unit_id = (select app.current_family_id()));

create policy pet_profiles_insert on public.pet_profiles for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

create policy pet_profiles_delete on public.pet_profiles for delete to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) = 'adult'
);

create policy invitations_select on public.invitations for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
);

-- Adults may invite any role but pet; grandparents adults, teens and grandparents.
create policy invitations_insert on public.invitations for insert to authenticated
with check (
  family_unit_id = (select app.current_family_id())
  and invited_by = (select auth.uid())
  and status = 'pending'
  and (
    ((select app.current_member_role()) = 'adult'
      and role in ('adult', 'teen', 'child', 'grandparent'))
    or ((select app.current_member_role()) = 'grandparent'
      and role in ('adult', 'teen', 'grandparent'))
  )
);

create policy invitations_revoke on public.invitations for update to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and (select app.current_member_role()) in ('adult', 'grandparent')
)
with check (status in ('revoked', 'expired'));

create policy auth_sessions_own on app.auth_sessions for select to authenticated
using (user_id = (select auth.uid()));

create policy refresh_tokens_own on app.refresh_tokens for select to authenticated
using (session_id in (select id from app.auth_sessions where user_id = (select auth.uid())));

create policy auth_sessions_revoke_own on app.auth_sessions for update to authenticated
using (user_id = (select auth.uid()));

-- Removing a member ------------------------------------------------------------------
-- Only an adult of the same family; never the last adult. The member's profile stays
-- (marked removed) so the memories they shared keep their author and are not lost;
-- their sessions end at once. The family row is locked so two adults removing each
-- other at the same moment cannot leave the family without an adult.

create function app.remove_family_member(target uuid) returns text
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller_family uuid := app.current_family_id();
  target_role text;
begin
  if caller_family is null or app.current_member_role() is distinct from 'adult' then
    return 'forbidden';
  end if;
  perform 1 from public.family_units where id = caller_family for update;
  select role into target_role from public.user_profiles
  where id = target and family_unit_id = caller_family and removed_at is null;
  if not found then
    return 'not_found';
  end if;
  if target_role = 'adult' and (
    select count(*) from public.user_profiles
    where family_unit_id = caller_family and role = 'adult' and removed_at is null
  ) <= 1 then
    return 'last_adult';
  end if;
  update public.user_profiles set removed_at = now(), updated_at = now() where id = target;
  update app.auth_sessions set revoked_at = now(), revoked_reason = 'removed from family'
  where user_id = target and revoked_at is null;
  return 'removed';
end
$$;

revoke all on function app.remove_family_member(uuid) from public;
grant execute on function app.remove_family_member(uuid) to authenticated;
