-- Ending a membership stops the signed storage links handed out before (built-in storage).
--
-- A signed download or upload URL of the built-in storage is an HMAC over the object path and
-- expiry; a removed member kept every link they had been given until it expired (24 h at
-- most). Each family now has a signing epoch, mixed into the HMAC of every URL for that
-- family's objects (app/adapters/storage/local.py): whenever a member stops being one —
-- removed by an adult (app.end_membership), leaving, deleting their account
-- (app.depart_family) — the epoch moves on in the same transaction, so every earlier link of
-- the family stops working at once and members simply get fresh ones. A trigger, so that
-- every way a membership ends does it, now and later. Supabase Storage signs its own URLs
-- and cannot revoke them this way (docs/supabase.md).

alter table public.family_units
  add column if not exists storage_signing_epoch bigint not null default 0;

create or replace function app.rotate_storage_signing_epoch() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  update public.family_units set storage_signing_epoch = storage_signing_epoch + 1
  where id = new.family_unit_id;
  return null;
end
$$;
revoke all on function app.rotate_storage_signing_epoch() from public;

drop trigger if exists user_profiles_departure_rotates_signing on public.user_profiles;
create trigger user_profiles_departure_rotates_signing
after update of removed_at on public.user_profiles
for each row when (old.removed_at is null and new.removed_at is not null)
execute function app.rotate_storage_signing_epoch();
