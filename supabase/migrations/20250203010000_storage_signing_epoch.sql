-- Removing a member stops the signed storage links handed out before (built-in storage).
--
-- A signed download or upload URL of the built-in storage is an HMAC over the object path and
-- expiry; a removed member kept every link they had been given until it expired (24 h at
-- most). Each family now has a signing epoch, mixed into the HMAC of every URL for that
-- family's objects (app/adapters/storage/local.py): ending a membership moves it on, so every
-- earlier link of the family stops working at once and members simply get fresh ones.
-- Supabase Storage signs its own URLs and cannot revoke them this way (docs/supabase.md).

alter table public.family_units
  add column if not exists storage_signing_epoch bigint not null default 0;

create or replace function app.end_membership(target uuid, reason text) returns void
language plpgsql volatile security definer set search_path = '' as $$
begin
  update public.user_profiles set removed_at = now(), updated_at = now()
  where id = target and removed_at is null;
  update app.auth_sessions set revoked_at = now(), revoked_reason = reason
  where user_id = target and revoked_at is null;
  update public.invitations set status = 'revoked'
  where invited_by = target and status = 'pending';
  update public.family_units set storage_signing_epoch = storage_signing_epoch + 1
  where id = (select family_unit_id from public.user_profiles where id = target);
end
$$;

revoke all on function app.end_membership(uuid, text) from public;
