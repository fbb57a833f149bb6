-- Media storage and the memory lifecycle: what the database guarantees whatever the code does.

-- A media row only ever points at objects inside its own family's and memory's folder
-- ({family_unit_id}/{memory_id}/...), never through a `.` or `..` segment. Signed URLs are
-- only handed out for paths stored here, so even a bug in the service could not turn a
-- media row into a URL for another family's file.
alter table public.memory_media
  add constraint memory_media_path_in_own_folder check (
    starts_with(storage_path, family_unit_id::text || '/' || memory_id::text || '/')
    and storage_path !~ '(^|/)\.\.?(/|$)'
    and (
      thumbnail_path is null
      or (starts_with(thumbnail_path, family_unit_id::text || '/' || memory_id::text || '/')
          and thumbnail_path !~ '(^|/)\.\.?(/|$)')
    )
  );

-- Access URLs and the orphan sweep look objects up by thumbnail path as well.
create unique index memory_media_thumbnail_path_key on public.memory_media (thumbnail_path);

-- Status lifecycle: draft → published → archived → published (deleting is a DELETE).
-- The service refuses other changes with a 400 first; this is the last line.
create function app.check_memory_status_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  if new.status is distinct from old.status
     and (old.status, new.status) not in (
       ('draft', 'published'), ('published', 'archived'), ('archived', 'published')
     ) then
    raise exception 'a memory cannot go from % to %', old.status, new.status
      using errcode = '23514';
  end if;
  return new;
end
$$;

create trigger memories_status_lifecycle before update of status on public.memories
for each row execute function app.check_memory_status_change();
