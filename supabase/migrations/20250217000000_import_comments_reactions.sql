-- Importing a Timeless export brings back its comments (with their threads, dates and authors)
-- and the reactions of those who are members here (docs/importing.md).
--
-- Comments keep the id they had in the archive (import_source_id, unique in the family): a
-- second run of the same import, or a run after one killed half-way, finds what it already
-- wrote and adds nothing twice, and a reply finds its parent by it. A comment whose author is
-- not a member of this family is the importing member's (who answers for it: may edit or
-- delete it), carrying the name its author had in the archive (imported_author_name), which
-- the comment responses show as the author's name.
--
-- Members cannot back-date a comment or write one as someone else (20250201000000): an
-- import does both, so it writes through two definer functions that take the family and the
-- importer from the caller's own session and check what the import rules say: an adult or
-- grandparent, a memory of the family, an author who is a member of it.

alter table public.memory_comments
  add column if not exists import_source_id uuid,
  add column if not exists imported_author_name text
    check (char_length(imported_author_name) between 1 and 100);

create unique index if not exists memory_comments_import_source
  on public.memory_comments (family_unit_id, import_source_id)
  where import_source_id is not null;

-- The comment endpoints and the feed's top_comments read this view: an imported comment of
-- someone who is not a member here shows their archive name (no avatar: not theirs).
create or replace view public.memory_comment_details with (security_invoker = true) as
select
  c.id, c.memory_id, c.user_id,
  jsonb_build_object(
    'id', p.id, 'display_name', coalesce(c.imported_author_name, p.display_name),
    'avatar_url', case when c.imported_author_name is null then p.avatar_url end,
    'role', p.role,
    'avatar_path', case when c.imported_author_name is null
                        then app.avatar_path(p.avatar_media_id) end
  ) as author,
  c.parent_comment_id,
  case when c.deleted_at is null then c.content else '[deleted]' end as content,
  c.created_at, c.updated_at, c.deleted_at, c.reply_count,
  c.import_source_id is not null as imported,
  c.imported_author_name
from public.memory_comments c
join public.user_profiles p on p.id = c.user_id;

-- One comment of an archive. author: a member of the family, or null for the caller with
-- author_name. parent_source: the archive id of the comment it replies to, already imported
-- on the same memory. Returns the comment's id and whether it was added now (false: it was
-- imported before, and nothing is changed).
create or replace function app.import_comment(
  memory uuid, source uuid, parent_source uuid, author uuid, author_name text, body text,
  created timestamptz, updated timestamptz, deleted boolean
) returns table (comment_id uuid, added boolean)
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.uid();
  family uuid := app.current_family_id();
  parent uuid;
  written uuid;
  written_at timestamptz := least(created, now());
begin
  if family is null or app.current_member_role() not in ('adult', 'grandparent') then
    raise exception 'only an adult or grandparent imports' using errcode = '42501';
  end if;
  if source is null then
    raise exception 'an imported comment needs its archive id' using errcode = '22004';
  end if;
  select c.id into written from public.memory_comments c
  where c.family_unit_id = family and c.import_source_id = source;
  if found then
    return query select written, false;
    return;
  end if;
  perform 1 from public.memories m where m.id = memory and m.family_unit_id = family;
  if not found then
    raise exception 'memory not in the family' using errcode = '23503';
  end if;
  if author is null then
    author := caller;
    if author_name is null then
      raise exception 'a comment of someone else needs their name' using errcode = '22004';
    end if;
  else
    author_name := null;
    perform 1 from public.user_profiles p
    where p.id = author and p.family_unit_id = family and p.removed_at is null;
    if not found then
      raise exception 'author not a member of the family' using errcode = '42501';
    end if;
  end if;
  if parent_source is not null then
    select c.id into parent from public.memory_comments c
    where c.family_unit_id = family and c.import_source_id = parent_source
      and c.memory_id = memory;
    if not found then
      raise exception 'parent comment not imported' using errcode = '23503';
    end if;
  end if;
  insert into public.memory_comments (
    memory_id, family_unit_id, user_id, parent_comment_id, content, created_at, updated_at,
    deleted_at, import_source_id, imported_author_name)
  values (
    memory, family, author, parent, case when deleted then '[deleted]' else body end,
    written_at, greatest(written_at, least(coalesce(updated, created), now())),
    case when deleted then greatest(written_at, least(coalesce(updated, created), now())) end,
    source, author_name)
  on conflict (family_unit_id, import_source_id) where import_source_id is not null
  do nothing
  returning id into written;
  if written is null then  -- a concurrent run of the same import wrote it first
    select c.id into written from public.memory_comments c
    where c.family_unit_id = family and c.import_source_id = source;
    return query select written, false;
    return;
  end if;
  return query select written, true;
end
$$;
revoke all on function app.import_comment(uuid, uuid, uuid, uuid, text, text, timestamptz,
  timestamptz, boolean) from public;
grant execute on function app.import_comment(uuid, uuid, uuid, uuid, text, text, timestamptz,
  timestamptz, boolean) to authenticated;

-- One reaction of an archive, by a member of the family, with its date. True when written,
-- false when that member already has that emoji on the memory (the unique key).
create or replace function app.import_reaction(
  memory uuid, author uuid, reaction text, created timestamptz
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
declare
  family uuid := app.current_family_id();
  written uuid;
begin
  if family is null or app.current_member_role() not in ('adult', 'grandparent') then
    raise exception 'only an adult or grandparent imports' using errcode = '42501';
  end if;
  perform 1 from public.memories m where m.id = memory and m.family_unit_id = family;
  if not found then
    raise exception 'memory not in the family' using errcode = '23503';
  end if;
  perform 1 from public.user_profiles p
  where p.id = author and p.family_unit_id = family and p.removed_at is null;
  if not found then
    raise exception 'author not a member of the family' using errcode = '42501';
  end if;
  insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji, created_at,
                                       updated_at)
  values (memory, family, author, reaction, least(created, now()), least(created, now()))
  on conflict (memory_id, user_id, emoji) do nothing
  returning id into written;
  return written is not null;
end
$$;
revoke all on function app.import_reaction(uuid, uuid, text, timestamptz) from public;
grant execute on function app.import_reaction(uuid, uuid, text, timestamptz) to authenticated;
