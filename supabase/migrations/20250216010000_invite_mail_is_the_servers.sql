-- Only the server queues invite mail, from its own templates.
--
-- app.queue_invite_mail took the mail's subject and bodies from its caller, and members could
-- call it: a member's token could mail text of its own choosing (a phishing page, say) from
-- the service to anyone it had invited, as often as it liked. The mail holds the invite link,
-- whose token only the server knows when the invite is made (the database keeps its hash),
-- so the text cannot be built from the invite row here; the server renders it
-- (app/services/mail_templates.py) and queues it as service_role inside the inviting member's
-- own transaction. The function's checks stay: a pending invite that the member whose claims
-- the transaction carries issued, in their family, mailed to the invite's own address.
revoke all on function app.queue_invite_mail(uuid, text, text, text, text)
  from public, anon, authenticated;
grant execute on function app.queue_invite_mail(uuid, text, text, text, text) to service_role;
