-- An invitation's expiry is the server's (INVITE_TTL_DAYS), never the inviter's.
--
-- Members could insert an invitation with any expires_at (the column was granted for the
-- API's own insert): through Supabase's Data API, an invite that never expires, or one that
-- looks fresh. The column is no longer granted; an invite made without it lives the default
-- seven days, and the API, which knows the configured lifetime, sets it as service_role in
-- the inviting member's own transaction (app/services/invite_service.py).
alter table public.invitations alter column expires_at set default now() + interval '7 days';
revoke insert (expires_at) on public.invitations from anon, authenticated;
