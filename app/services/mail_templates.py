"""The mail the service sends, as plain text and HTML: password-reset links and invites.

`string.Template` rather than Jinja: two short messages with a handful of fields need no
template language, and no new dependency. Every value put into the HTML is escaped; the
plain text needs none.
"""

import html
from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


def _render(subject: str, text: Template, markup: Template, values: dict[str, str]) -> RenderedMail:
    escaped = {key: html.escape(value) for key, value in values.items()}
    return RenderedMail(
        subject=subject, text=text.substitute(values), html=markup.substitute(escaped)
    )


_HTML_PAGE = Template("""\
<!doctype html>
<html><body style="font-family: sans-serif; line-height: 1.5; color: #222;">
$content
<p style="color: #777; font-size: small;">Timeless Love</p>
</body></html>
""")


def _page(content: str) -> Template:
    return Template(_HTML_PAGE.substitute(content=content))


# Password reset ------------------------------------------------------------------------------

_RESET_SUBJECT = "Reset your Timeless Love password"
_RESET_TEXT = Template("""\
Hello,

Someone, hopefully you, asked to reset the password of the Timeless Love account that uses
this email address. To choose a new password, open this link within $minutes minutes:

$link

The link works once. If you did not ask for it, ignore this message: your password stays
as it is.
""")
_RESET_HTML = _page("""\
<p>Hello,</p>
<p>Someone, hopefully you, asked to reset the password of the Timeless Love account that
uses this email address. To choose a new password, open this link within $minutes
minutes:</p>
<p><a href="$link">Choose a new password</a></p>
<p>The link works once. If you did not ask for it, ignore this message: your password stays
as it is.</p>
""")


def password_reset(*, link: str, minutes: int) -> RenderedMail:
    return _render(
        _RESET_SUBJECT, _RESET_TEXT, _RESET_HTML, {"link": link, "minutes": str(minutes)}
    )


# Invites -------------------------------------------------------------------------------------

_INVITE_TEXT = Template("""\
Hello,

$inviter invited you to join $family on Timeless Love, a private place where a family
keeps and shares its memories. You would join as: $role.

To accept, open this link before $expires:

$link

If you do not know $inviter, ignore this message.
""")
_INVITE_HTML = _page("""\
<p>Hello,</p>
<p>$inviter invited you to join <strong>$family</strong> on Timeless Love, a private place
where a family keeps and shares its memories. You would join as: $role.</p>
<p><a href="$link">Accept the invitation</a> (before $expires)</p>
<p>If you do not know $inviter, ignore this message.</p>
""")


def invite(*, inviter: str, family: str, role: str, link: str, expires: str) -> RenderedMail:
    values = {"inviter": inviter, "family": family, "role": role, "link": link, "expires": expires}
    # A header is one line: names may hold any whitespace, the subject folds it to spaces.
    subject = " ".join(f"{inviter} invited you to {family} on Timeless Love".split())
    return _render(subject, _INVITE_TEXT, _INVITE_HTML, values)
