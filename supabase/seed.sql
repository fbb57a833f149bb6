-- Demo data for a local Supabase stack (`supabase db reset` runs this after the migrations).
-- Never used by the built-in server, and never by `supabase db push`.
--
-- One family, the Riveras, with four members who can sign in through the backend
-- (POST /api/v1/auth/login) with the password `timeless-demo-password`:
--
--   maria@example.com   adult         (founded the family)
--   rosa@example.com    grandparent
--   leo@example.com     teen          (has one draft only he can see)
--   sofia.0001          child         (provisioned: signs in with her username)
--
-- Accounts are written straight into Supabase Auth's tables the way GoTrue itself writes them:
-- bcrypt hashes from pgcrypto (Supabase installs it in `extensions`), a confirmed email, an
-- `email` identity, and empty strings (not NULL) in the token columns, which GoTrue cannot read
-- as NULL. The child's address is the synthetic one the backend derives from her username
-- (app.services.supabase_auth.child_login_email); it is never shown to anyone.

insert into auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  confirmation_token, recovery_token, email_change_token_new, email_change,
  raw_app_meta_data, raw_user_meta_data, created_at, updated_at
)
select
  '00000000-0000-0000-0000-000000000000', u.id, 'authenticated', 'authenticated', u.email,
  extensions.crypt('timeless-demo-password', extensions.gen_salt('bf')), now(),
  '', '', '', '',
  '{"provider": "email", "providers": ["email"], "managed_by": "timeless-love"}'::jsonb,
  u.user_metadata, now(), now()
from (values
  ('5e5d0c1a-0000-4000-8000-000000000001'::uuid, 'maria@example.com', '{}'::jsonb),
  ('5e5d0c1a-0000-4000-8000-000000000002'::uuid, 'rosa@example.com', '{}'::jsonb),
  ('5e5d0c1a-0000-4000-8000-000000000003'::uuid, 'leo@example.com', '{}'::jsonb),
  ('5e5d0c1a-0000-4000-8000-000000000004'::uuid, 'sofia.0001@children.timeless.invalid',
   '{"username": "sofia.0001"}'::jsonb)
) as u (id, email, user_metadata);

insert into auth.identities (
  user_id, provider_id, provider, identity_data, last_sign_in_at, created_at, updated_at
)
select
  u.id, u.id::text, 'email',
  jsonb_build_object('sub', u.id::text, 'email', u.email, 'email_verified', true,
                     'phone_verified', false),
  now(), now(), now()
from auth.users u
where u.id::text like '5e5d0c1a-%';

-- The family and its members' profiles.
insert into public.family_units (id, name, created_by)
values ('f4a1e000-0000-4000-8000-000000000001', 'The Riveras',
        '5e5d0c1a-0000-4000-8000-000000000001');

insert into public.user_profiles (id, family_unit_id, role, display_name, email, username)
values
  ('5e5d0c1a-0000-4000-8000-000000000001', 'f4a1e000-0000-4000-8000-000000000001',
   'adult', 'Maria Rivera', 'maria@example.com', null),
  ('5e5d0c1a-0000-4000-8000-000000000002', 'f4a1e000-0000-4000-8000-000000000001',
   'grandparent', 'Rosa Rivera', 'rosa@example.com', null),
  ('5e5d0c1a-0000-4000-8000-000000000003', 'f4a1e000-0000-4000-8000-000000000001',
   'teen', 'Leo Rivera', 'leo@example.com', null),
  ('5e5d0c1a-0000-4000-8000-000000000004', 'f4a1e000-0000-4000-8000-000000000001',
   'child', 'Sofia Rivera', null, 'sofia.0001');

insert into public.pet_profiles (family_unit_id, display_name, created_by)
values ('f4a1e000-0000-4000-8000-000000000001', 'Churro',
        '5e5d0c1a-0000-4000-8000-000000000001');

-- A few memories: three published (spread over the past months, so the feed has some
-- order to it), and one draft of Leo's that only he sees.
insert into public.memories (
  id, family_unit_id, user_id, title, description, memory_date, location, tags, status, created_at
)
values
  ('3e3a0000-0000-4000-8000-000000000001', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000002', 'Grandma''s first paella lesson',
   'Rosa finally shared the recipe. The socarrat was perfect on the third try.',
   current_date - 90, 'Valencia', array['cooking', 'family recipes'], 'published',
   now() - interval '90 days'),
  ('3e3a0000-0000-4000-8000-000000000002', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000001', 'Sofia''s first bike ride',
   'No training wheels, one scraped knee, a very proud rider.',
   current_date - 20, 'Riverside park', array['milestones', 'sofia'], 'published',
   now() - interval '20 days'),
  ('3e3a0000-0000-4000-8000-000000000003', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000003', 'Beach day with Churro',
   'Churro discovered waves. Waves won.',
   current_date - 2, 'El Saler', array['summer', 'churro'], 'published',
   now() - interval '2 days'),
  ('3e3a0000-0000-4000-8000-000000000004', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000003', 'Surprise party plans (secret!)',
   'For mum''s birthday. Do not publish before the 14th.',
   null, null, array['secret'], 'draft', now() - interval '1 day');

insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji)
values
  ('3e3a0000-0000-4000-8000-000000000001', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000001', '❤️'),
  ('3e3a0000-0000-4000-8000-000000000002', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000002', '🎉'),
  ('3e3a0000-0000-4000-8000-000000000002', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000003', '👍'),
  ('3e3a0000-0000-4000-8000-000000000003', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000004', '😂');

insert into public.memory_comments (memory_id, family_unit_id, user_id, content)
values
  ('3e3a0000-0000-4000-8000-000000000002', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000002', 'Just like your father at that age!'),
  ('3e3a0000-0000-4000-8000-000000000003', 'f4a1e000-0000-4000-8000-000000000001',
   '5e5d0c1a-0000-4000-8000-000000000001', 'Churro needs a towel. And a bath.');
