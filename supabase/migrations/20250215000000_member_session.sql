-- Opening a member's request in one round trip (app/db/postgres.py `member_session`).
--
-- Every request of a signed-in member starts a transaction, switches to `authenticated` with
-- the verified token's claims (what Supabase's API layer does), and loads the member as the
-- database knows them now. As separate statements that was two round trips after BEGIN; this
-- function does both in one. It is SECURITY INVOKER and has no SET clause: once its first
-- line has switched the role, the lookup below and every statement after it in the
-- transaction run as `authenticated`, under row level security. The role and the claims are
-- transaction-local (`set_config(..., true)`), as before.
--
-- The lookup is session_service's (docs/auth.md): the member, unless removed; for our own
-- tokens (a login session id), only while that login has not ended; and, at most once every
-- `touch_after_seconds`, the login's last_used_at moved on (SKIP LOCKED: a request never
-- waits for another request of the same login just to touch it).
create or replace function app.enter_member_session(
  claims text,
  login_session uuid,
  touch_after_seconds double precision
)
returns table (id uuid, family_unit_id uuid, role text, display_name text)
language plpgsql
volatile
as $$
#variable_conflict use_column
begin
  perform set_config('role', 'authenticated', true),
          set_config('request.jwt.claims', claims, true);
  return query
    with touched as (
      update app.auth_sessions set last_used_at = now()
      where app.auth_sessions.id = (
        select s.id from app.auth_sessions s
        where s.id = login_session and s.revoked_at is null
          and s.last_used_at < now() - make_interval(secs => touch_after_seconds)
        for update skip locked)
      returning app.auth_sessions.id
    )
    select p.id, p.family_unit_id, p.role, p.display_name
    from public.user_profiles p
    where p.id = (select auth.uid())
      and p.removed_at is null
      and (login_session is null or exists (
            select 1 from app.auth_sessions s
            where s.id = login_session and s.user_id = p.id and s.revoked_at is null));
end
$$;

-- Only the server's own login role (the owner) calls it; a member has no use for it.
revoke all on function app.enter_member_session(text, uuid, double precision) from public;
