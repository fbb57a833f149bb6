-- Accounts a family can live with: the logins a member can list and end, password reset
-- tokens, the mail outbox, and leaving a family or deleting one's account.

-- Logins a member can list ------------------------------------------------------------
-- What the member sees in GET /auth/sessions. last_used_at moves on every refresh and, at
-- most once every few minutes, when an access token is used (see session_service), so a
-- busy login costs no write per request.
alter table app.auth_sessions add column if not exists user_agent text
  check (char_length(user_agent) <= 512);
alter table app.auth_sessions add column if not exists last_used_at timestamptz
  not null default now();
grant update (last_used_at) on app.auth_sessions to authenticated;

-- Password reset tokens --------------------------------------------------------------
-- Only a SHA-256 of the token is kept; single use (used_at), valid until expires_at.
-- Service role only: no member ever reads them.
create table if not exists app.password_reset_tokens (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  token_hash text not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index if not exists password_reset_tokens_user_idx
  on app.password_reset_tokens (user_id);
grant all on app.password_reset_tokens to service_role;
alter table app.password_reset_tokens enable row level security;
alter table app.password_reset_tokens force row level security;

-- The mail outbox --------------------------------------------------------------------
-- A message is written here in the same transaction as the action that sends it, and a
-- background job delivers it over SMTP with retries. Delivery is at least once: every
-- attempt carries the same Message-ID, so a copy sent again after a crash between sending
-- and marking sent is recognisably the same message. Bodies (a reset link is a secret) are
-- erased once the message is finished; finished rows are purged after a retention period.
create table if not exists app.mail_outbox (
  id uuid primary key default gen_random_uuid(),
  message_id text not null unique,
  kind text not null check (kind in ('password_reset', 'invite')),
  to_address text not null,
  subject text not null,
  text_body text,
  html_body text,
  status text not null default 'pending'
    check (status in ('pending', 'sent', 'failed', 'expired')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  -- A sender holds a message until then; a crashed sender's hold runs out and it is retried.
  claimed_until timestamptz,
  -- A message still unsent then is dropped (a reset link past its lifetime is useless).
  send_before timestamptz,
  sent_at timestamptz,
  last_error text,
  created_at timestamptz not null default now()
);
create index if not exists mail_outbox_due_idx on app.mail_outbox (next_attempt_at)
  where status = 'pending';
grant all on app.mail_outbox to service_role;
alter table app.mail_outbox enable row level security;
alter table app.mail_outbox force row level security;

-- The one mail a member's own transaction may queue: an invite they just issued, to the
-- invite's own address (never an address the caller chooses).
create or replace function app.queue_invite_mail(
  invite uuid, message_id text, subject text, text_body text, html_body text
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
declare
  target text;
  expiry timestamptz;
begin
  select i.email, i.expires_at into target, expiry from public.invitations i
  where i.id = invite
    and i.family_unit_id = app.current_family_id()
    and i.invited_by = auth.uid()
    and i.status = 'pending';
  if not found then
    return false;
  end if;
  insert into app.mail_outbox (message_id, kind, to_address, subject, text_body, html_body,
                               send_before)
  values (message_id, 'invite', target, subject, text_body, html_body, expiry);
  return true;
end
$$;
revoke all on function app.queue_invite_mail(uuid, text, text, text, text) from public;
grant execute on function app.queue_invite_mail(uuid, text, text, text, text) to authenticated;

-- Leaving a family, deleting an account ---------------------------------------------------
-- One statement under the family's lock, so two adults leaving at once cannot leave the
-- family without an adult. Rows: first the outcome, then the storage paths of every media
-- file that went (the caller removes the files after the commit).
--   erase:            deleting the account: the profile's name becomes "Former member" and
--                     its avatar goes; leaving keeps the name the family knew.
--   delete_memories:  the caller's memories go too (with everyone's reactions and comments
--                     on them); their comments and reactions on others' memories stay.
-- Either way the profile stays (marked removed, email and username freed) so what stays
-- keeps an author; every login ends; pending invites they issued are revoked. A member
-- alone in the family takes the family with them: everything in it is deleted.
create or replace function app.depart_family(erase boolean, delete_memories boolean)
returns table (outcome text, storage_path text)
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.uid();
  family uuid := app.current_family_id();
  caller_role text := app.current_member_role();
  others integer;
  other_adults integer;
begin
  if caller is null or family is null then
    return query select 'not_found'::text, null::text;
    return;
  end if;
  perform 1 from public.family_units where id = family for update;
  select count(*), count(*) filter (where p.role = 'adult') into others, other_adults
  from public.user_profiles p
  where p.family_unit_id = family and p.removed_at is null and p.id <> caller;
  if others > 0 and caller_role = 'adult' and other_adults = 0 then
    return query select 'last_adult'::text, null::text;
    return;
  end if;

  if others = 0 then
    return query select 'family_deleted'::text, null::text;
    return query select 'file'::text, mm.storage_path from public.memory_media mm
      where mm.family_unit_id = family;
    -- Memories first, while the family still exists: their triggers update the family's
    -- counters and rollups, which the family's own deletion then removes.
    delete from public.memories where family_unit_id = family;
    delete from public.family_units where id = family;
  else
    return query select 'departed'::text, null::text;
    if delete_memories then
      return query select 'file'::text, mm.storage_path
        from public.memory_media mm join public.memories m on m.id = mm.memory_id
        where m.user_id = caller;
      delete from public.memories where user_id = caller;
    end if;
    update public.user_profiles
    set removed_at = now(), updated_at = now(), email = null, username = null,
        display_name = case when erase then 'Former member' else display_name end,
        avatar_url = case when erase then null else avatar_url end
    where id = caller;
    update public.invitations set status = 'revoked'
    where invited_by = caller and status = 'pending';
  end if;
  update app.auth_sessions
  set revoked_at = now(), revoked_reason = case when erase then 'account deleted'
                                                else 'left the family' end
  where user_id = caller and revoked_at is null;
  delete from app.password_reset_tokens where user_id = caller;
end
$$;
revoke all on function app.depart_family(boolean, boolean) from public;
grant execute on function app.depart_family(boolean, boolean) to authenticated;
