-- What a member's token reads directly (Supabase's Data API) is what the API would show.
--
-- 1. Other members' email addresses. Members held SELECT on the whole of
--    public.user_profiles, so any member could read every family member's email (and a
--    former member's until they left). The API shows members their family's display data
--    (name, role, avatar, a child's username), never an email, and a member's own only on
--    GET /auth/me. Members now hold SELECT on every column but `email`; their own is read
--    through app.current_member_email() (the API reads it so). New columns are not granted
--    until someone decides they should be.
-- 2. app.memory_changes (what feed scrolls read back) showed a row for every memory of the
--    family, so another member's draft was seen to exist, with its memory_date. A member now
--    sees the log of a memory only while they may see the memory itself (memories_select
--    applies inside the policy). The feed reads the log joined to memories anyway: it reads
--    the same rows as before.

create or replace function app.current_member_email() returns text
language sql stable security definer set search_path = '' as $$
  select p.email from public.user_profiles p
  where p.id = (select auth.uid()) and p.removed_at is null
$$;
revoke all on function app.current_member_email() from public;
grant execute on function app.current_member_email() to authenticated, service_role;

revoke select on public.user_profiles from anon, authenticated;
grant select (id, family_unit_id, role, display_name, username, avatar_url, avatar_media_id,
              removed_at, created_at, updated_at)
  on public.user_profiles to authenticated;

drop policy if exists memory_changes_select on app.memory_changes;
create policy memory_changes_select on app.memory_changes for select to authenticated
using (
  family_unit_id = (select app.current_family_id())
  and exists (select 1 from public.memories m where m.id = memory_changes.memory_id)
);
