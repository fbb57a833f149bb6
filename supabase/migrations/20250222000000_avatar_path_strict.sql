-- app.avatar_path(media) (the thumbnail path of an uploaded avatar, 20250209000000) is called
-- for the author of every memory and every top comment a feed page shows, and most authors
-- have no uploaded avatar. The function carries `set search_path`, so PostgreSQL cannot
-- inline it and ran it, with its query and memory_media's row level security, for every one
-- of them: a third of a feed page's database time (docs/performance.md). Declared STRICT, it
-- is not called at all for a null id; its answer for one was null already (no row has a null
-- id), so nothing changes but the cost.
alter function app.avatar_path(uuid) strict;
