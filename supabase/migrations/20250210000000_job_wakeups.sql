-- Wake-ups for the background jobs (app/db/wakeups.py): a NOTIFY when media is registered and
-- when mail is queued, so a `timeless worker` (possibly on another machine) starts at once
-- instead of at its next poll. PostgreSQL sends a notification only when its transaction
-- commits, and folds identical ones of one transaction into one: a statement-level trigger
-- with an empty payload costs one notification per registering transaction. The payload
-- carries nothing: the worker claims what is due (`FOR UPDATE SKIP LOCKED`) as it always does.

create or replace function app.notify_media_registered() returns trigger
language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.pg_notify('timeless_media', '');
  return null;
end;
$$;

create or replace function app.notify_mail_queued() returns trigger
language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.pg_notify('timeless_mail', '');
  return null;
end;
$$;

drop trigger if exists memory_media_notify_registered on public.memory_media;
create trigger memory_media_notify_registered
  after insert on public.memory_media
  for each statement execute function app.notify_media_registered();

drop trigger if exists mail_outbox_notify_queued on app.mail_outbox;
create trigger mail_outbox_notify_queued
  after insert on app.mail_outbox
  for each statement execute function app.notify_mail_queued();

-- Trigger functions run as the inserting role; nobody needs to call them directly.
revoke all on function app.notify_media_registered() from public;
revoke all on function app.notify_mail_queued() from public;
