-- The feed: its score in SQL, the counters and indexes that keep a page cheap for a family
-- with 100 000 memories, and the one home of "a comment as the API shows it".
-- docs/feed.md explains the query that uses them.

-- Score ------------------------------------------------------------------------------------
-- docs/api.md: feed_score = 0.6 × time_score + 0.4 × engagement_score.
-- No `set search_path` on these: a SET clause stops the planner from inlining a SQL
-- function (and with it from using indexes on the inlined expression). They are plain
-- invoker functions, so a caller's search_path can give them nothing the caller lacks.

-- The edges of the age bands of time_score: band n holds memories created at or after
-- app.feed_band_start(n) (and before the start of band n - 1). Hours, not days: '7 days'
-- would follow the session's daylight-saving calendar. The feed query selects each band
-- with these very edges, so the bands and the scores always agree.
create function app.feed_band_start(band integer) returns timestamptz
language sql stable parallel safe as $$
  select now() - case band
    when 1 then interval '24 hours'
    when 2 then interval '168 hours'
    when 3 then interval '720 hours'
  end
$$;

-- time_score by age since created_at: ≤ 24 h → 1.0, ≤ 7 d → 0.7, ≤ 30 d → 0.4, older → 0.2.
create function app.feed_time_score(created_at timestamptz) returns double precision
language sql stable parallel safe as $$
  select case
    when created_at >= app.feed_band_start(1) then 1.0
    when created_at >= app.feed_band_start(2) then 0.7
    when created_at >= app.feed_band_start(3) then 0.4
    else 0.2
  end::double precision
$$;

-- engagement_score = min(log10(1 + reactions + 2 × comments) / 2, 1). comment_count never
-- includes deleted comments (see the counter triggers), so neither does the score.
create function app.feed_engagement_score(reactions integer, comments integer)
returns double precision
language sql immutable parallel safe as $$
  select least(log((1 + reactions + 2 * comments)::double precision) / 2, 1)
$$;

create function app.feed_score(created_at timestamptz, reactions integer, comments integer)
returns double precision
language sql stable parallel safe as $$
  select 0.6 * app.feed_time_score(created_at)
       + 0.4 * app.feed_engagement_score(reactions, comments)
$$;

grant execute on function app.feed_band_start(integer), app.feed_time_score(timestamptz),
  app.feed_engagement_score(integer, integer), app.feed_score(timestamptz, integer, integer)
  to authenticated, service_role;

-- Ordering by score. Inside one age band time_score is constant, so the score only grows
-- with the engagement weight (reactions + 2 × comments), which stops mattering at 99
-- (log10(100) / 2 = 1). The feed takes the first rows of each of the four bands from this
-- index and merges them, instead of scoring and sorting every memory of the family.
create index memories_feed_engagement_idx on public.memories (
  family_unit_id, status, (least(reaction_count + 2 * comment_count, 99)) desc,
  created_at desc, id
);

-- Ordering by memory_date: undated memories come last in both directions.
create index memories_feed_memory_date_desc_idx
  on public.memories (family_unit_id, status, memory_date desc nulls last, created_at desc, id);
create index memories_feed_memory_date_asc_idx
  on public.memories (family_unit_id, status, memory_date asc nulls last, created_at, id desc);

-- Reactions by emoji ---------------------------------------------------------------------------
-- {"❤️": 2, "👍": 1}, kept by the same trigger and in the same UPDATE as reaction_count,
-- so a feed page never counts reaction rows (a popular memory has hundreds).
alter table public.memories add column reactions_by_emoji jsonb not null default '{}'::jsonb;

-- Replaces the function of 20250103000000_reactions_comments.sql: the same counter, plus
-- the per-emoji counts. An emoji whose count drops to zero leaves the object.
create or replace function app.count_reactions() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    update public.memories
    set reaction_count = reaction_count + 1,
        reactions_by_emoji = reactions_by_emoji || jsonb_build_object(
          new.emoji, coalesce((reactions_by_emoji ->> new.emoji)::integer, 0) + 1)
    where id = new.memory_id;
  else
    update public.memories
    set reaction_count = reaction_count - 1,
        reactions_by_emoji = case
          when (reactions_by_emoji ->> old.emoji)::integer > 1
            then reactions_by_emoji || jsonb_build_object(
              old.emoji, (reactions_by_emoji ->> old.emoji)::integer - 1)
          else reactions_by_emoji - old.emoji
        end
    where id = old.memory_id;
  end if;
  return null;
end
$$;

-- Published memories per family ------------------------------------------------------------
-- total_count of the unfiltered feed, read in one row instead of counting 100 000. Kept
-- exact in the same transaction as each insert, delete and status change. Every member
-- sees every published memory of the family, so the number reveals nothing RLS hides.
create table app.family_memory_counts (
  family_unit_id uuid primary key references public.family_units (id) on delete cascade,
  published integer not null default 0 check (published >= 0)
);

create function app.count_published_memories() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'UPDATE' and old.status = new.status
     and old.family_unit_id = new.family_unit_id then
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    if old.status = 'published' then
      update app.family_memory_counts set published = published - 1
      where family_unit_id = old.family_unit_id;
    end if;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    if new.status = 'published' then
      insert into app.family_memory_counts as c (family_unit_id, published)
      values (new.family_unit_id, 1)
      on conflict (family_unit_id) do update set published = c.published + 1;
    end if;
  end if;
  return null;
end
$$;

create trigger memories_count_published
after insert or delete or update of status, family_unit_id on public.memories
for each row execute function app.count_published_memories();

insert into app.family_memory_counts (family_unit_id, published)
select family_unit_id, count(*) from public.memories where status = 'published'
group by family_unit_id;

grant select on app.family_memory_counts to authenticated;
grant all on app.family_memory_counts to service_role;
alter table app.family_memory_counts enable row level security;
alter table app.family_memory_counts force row level security;

create policy family_memory_counts_select on app.family_memory_counts for select
to authenticated using (family_unit_id = (select app.current_family_id()));

-- Search and tag filters through their GIN indexes -------------------------------------------
-- Under row level security Postgres applies an operator that is not leakproof (@@, @>)
-- only after the policy, so it can never use these GIN indexes on its own: a search in a
-- large family would read every memory. This function runs the indexed lookup as the owner
-- and applies the very rule of the memories_select policy itself (the caller's family;
-- drafts only their own); the feed then reads the memories it names under RLS as usual.
-- In schema app, which the Supabase API does not expose.
create function app.matching_memory_ids(search_query text, wanted_tags text[])
returns setof uuid
language plpgsql stable security definer set search_path = '' rows 200 as $$
declare
  family uuid := app.current_family_id();
  caller uuid := auth.uid();
begin
  -- One static query per case, so each is planned with its GIN index.
  if search_query is not null then
    return query
      select m.id from public.memories m
      where m.search_vector @@ websearch_to_tsquery('english', search_query)
        and (wanted_tags is null or m.tags @> wanted_tags)
        and m.family_unit_id = family and (m.status <> 'draft' or m.user_id = caller);
  elsif wanted_tags is not null then
    return query
      select m.id from public.memories m
      where m.tags @> wanted_tags
        and m.family_unit_id = family and (m.status <> 'draft' or m.user_id = caller);
  end if;
end
$$;

revoke all on function app.matching_memory_ids(text, text[]) from public;
grant execute on function app.matching_memory_ids(text, text[]) to authenticated, service_role;

-- Comments as the API shows them -------------------------------------------------------------
-- The comment endpoints and the feed's top_comments both read this view. A deleted
-- comment keeps its place in the thread and shows "[deleted]". security_invoker: the
-- caller's row level security applies.
create view public.memory_comment_details with (security_invoker = true) as
select
  c.id, c.memory_id, c.user_id,
  jsonb_build_object(
    'id', p.id, 'display_name', p.display_name, 'avatar_url', p.avatar_url, 'role', p.role
  ) as author,
  c.parent_comment_id,
  case when c.deleted_at is null then c.content else '[deleted]' end as content,
  c.created_at, c.updated_at, c.deleted_at, c.reply_count
from public.memory_comments c
join public.user_profiles p on p.id = c.user_id;

grant select on public.memory_comment_details to authenticated, service_role;
