-- Removal is final: ending a membership also revokes the pending invites the member issued.
--
-- Before, a removed member's pending invites stayed valid: a grandparent could invite herself
-- as an adult at another address, be removed, accept her own invite and come back with more
-- power. `app.end_membership` is now the one place that ends a membership (removal today;
-- leaving or deleting an account can call it too): the profile is marked removed, every login
-- session ends and every pending invite the member issued is revoked, in one transaction.
-- Acceptance re-checks the inviter as well (app/services/invite_service.py), so an invite
-- whose inviter is no longer a member admits nobody even if a path forgot to revoke it.

create or replace function app.end_membership(target uuid, reason text) returns void
language plpgsql volatile security definer set search_path = '' as $$
begin
  update public.user_profiles set removed_at = now(), updated_at = now()
  where id = target and removed_at is null;
  update app.auth_sessions set revoked_at = now(), revoked_reason = reason
  where user_id = target and revoked_at is null;
  update public.invitations set status = 'revoked'
  where invited_by = target and status = 'pending';
end
$$;

-- Only other functions of this schema call it; a member never calls it directly.
revoke all on function app.end_membership(uuid, text) from public;

-- Same checks as before. The family row is locked FOR NO KEY UPDATE (not FOR UPDATE): two
-- removals still queue on it, but an invite being accepted at this moment (which holds the
-- invite's row lock and then inserts a profile referencing the family, taking KEY SHARE on
-- it) is not blocked by the removal while the removal waits for that invite: no deadlock.
create or replace function app.remove_family_member(target uuid) returns text
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller_family uuid := app.current_family_id();
  target_role text;
begin
  if caller_family is null or app.current_member_role() is distinct from 'adult' then
    return 'forbidden';
  end if;
  perform 1 from public.family_units where id = caller_family for no key update;
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
  perform app.end_membership(target, 'removed from family');
  return 'removed';
end
$$;

revoke all on function app.remove_family_member(uuid) from public;
grant execute on function app.remove_family_member(uuid) to authenticated;
