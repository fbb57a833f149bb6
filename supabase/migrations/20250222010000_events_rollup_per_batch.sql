-- Every feed page, memory view and sign-in records an analytics event; the writer inserts them
-- in batches (app/services/analytics_service.py). The rollup trigger ran once per event row,
-- each run a function call, a family check and an upsert of the same (family, day, member)
-- row of analytics_metrics: with a feed under load most of the database time an event cost
-- (docs/performance.md). It now runs once per insert statement, over the batch as a
-- transition table: one upsert per (family, day, member), with the same counts as before.
-- The rows are upserted in key order, so two writers (two server processes) inserting
-- batches at once lock them in the same order and cannot deadlock.

create or replace function app.rollup_event_batch() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.analytics_metrics as m
    (family_unit_id, day, user_id, memories, reactions, comments, events)
  select e.family_unit_id, (e."timestamp" at time zone 'UTC')::date, e.user_id, 0, 0, 0,
         count(*)
  from inserted e
  where e.family_unit_id is not null and e.user_id is not null
    -- A family being deleted: its rollup rows go with it (as app.bump_analytics_metrics).
    and exists (select 1 from public.family_units f where f.id = e.family_unit_id)
  group by 1, 2, 3
  order by 1, 2, 3
  on conflict (family_unit_id, day, user_id) do update
    set events = m.events + excluded.events;
  return null;
end
$$;
revoke all on function app.rollup_event_batch() from public;

drop trigger if exists analytics_events_rollup on public.analytics_events;
create trigger analytics_events_rollup after insert on public.analytics_events
referencing new table as inserted
for each statement execute function app.rollup_event_batch();

drop function if exists app.rollup_events();
