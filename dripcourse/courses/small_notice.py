"""A small one-off notice to a reader: plain text from the course's sender, marked as automatic.

Lessons are built by ``render``; a few other messages answer something the reader did (the
journal link they asked for, the question about a reply from another address). Each is one
plain-text part with the same headers, set here once: From the course's sender, the Subject
encoded when it must be, the Date, and ``Auto-Submitted: auto-replied`` (RFC 3834: a program's
answer to a message or an action, which no one should answer in turn). The caller gives the
text, the To value, the Message-ID and any header of its own, and sends the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import format_datetime

from dripcourse.courses.headers import QP_UTF8, WIRE_POLICY, sender_header, subject_header


def plain_notice(
    text: str,
    *,
    sender: str,
    to: str,
    subject: str,
    now: dt.datetime,
    message_id: str,
    headers: Mapping[str, str | Header] | None = None,
) -> Message:
    """The notice: ``text`` as quoted-printable UTF-8, from ``sender`` (a course's "Name
    <address>"), sent at ``now``; ``headers`` follow the usual ones, in their order."""
    msg = MIMEText(text, "plain", QP_UTF8, policy=WIRE_POLICY)
    msg["From"] = sender_header(sender)
    msg["To"] = to
    msg["Subject"] = subject_header(subject)
    msg["Date"] = format_datetime(now.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-replied"
    for name, value in (headers or {}).items():
        msg[name] = value
    return msg
