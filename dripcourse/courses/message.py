"""One lesson's message for one reader: its Message-ID, reply and bounce addresses, the
provider headers that name the delivery, and the MIME message built from a rendered lesson.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid

from dripcourse.courses.headers import (
    QP_UTF8,
    WIRE_POLICY,
    check_header_values,
    sender_header,
    subject_header,
    to_header,
)
from dripcourse.courses.render import Personal, RenderedLesson
from dripcourse.links import BOUNCE, DELIVERY, REPLY, Links


def reply_addresses(
    links: Links, domain: str, enrollment_id: int, day: int, key: str
) -> dict[str, str]:
    """Reply-To and envelope sender of one delivery, bound to the enrollment's ``link_key``;
    none without a ``reply_domain``."""
    if not domain:
        return {}
    return {
        "reply_to": links.address(REPLY, enrollment_id, day, domain, key),
        "bounce_to": links.address(BOUNCE, enrollment_id, day, domain, key),
    }


# The header each provider hands back in its webhook events, and how the token sits in it.
# The provider takes its own header (X-Mailgun-*, X-SMTPAPI, X-PM-*) off before delivery.
TAG_NAME = "dripcourse_delivery"
TAG_HEADER = "X-Dripcourse-Delivery"


def delivery_headers(
    links: Links, providers: tuple[str, ...], enrollment_id: int, day: int, key: str
) -> tuple[tuple[str, str], ...]:
    """The headers that name one delivery to each provider in ``providers`` (those whose
    webhook is set up): a signed token of (enrollment, day) bound to the enrollment's key,
    which the provider's bounce and complaint events carry back. None without a provider."""
    if not providers:
        return ()
    token = links.address_token(DELIVERY, enrollment_id, day, key)
    shapes = {
        "ses": (TAG_HEADER, token),  # SES hands back the original headers
        "mailgun": ("X-Mailgun-Variables", json.dumps({TAG_NAME: token})),
        "sendgrid": ("X-SMTPAPI", json.dumps({"unique_args": {TAG_NAME: token}})),
        "postmark": (f"X-PM-Metadata-{TAG_NAME}", token),
    }
    return tuple(shapes[p] for p in providers if p in shapes)


def message_id(domain: str, delivery_id: int | None, secret: str) -> str:
    """A Message-ID: stable per delivery, so a resend after a crash looks like the same mail."""
    if delivery_id is None:
        return make_msgid(domain=domain)
    digest = hashlib.sha256(f"{secret}:{delivery_id}".encode()).hexdigest()[:20]
    return f"<lesson.{digest}@{domain}>"


def build_message(
    rendered: RenderedLesson, who: Personal, *, now: dt.datetime, msg_id: str
) -> Message:
    """The finished multipart/alternative message for one subscriber.

    Built with the compat32 MIME classes rather than EmailMessage: EmailMessage parses every
    header it is given into objects, which was a third of the cost of a message (see
    benchmarks/RESULTS.md). compat32 does not check for line breaks in header values, so
    that check is made here; non-ASCII text goes in as Header objects, which encode (RFC 2047)
    and fold it into lines of a legal length when the message is written.
    """
    subject = rendered.subject.render(who)
    check_header_values(subject, who)
    headers: dict[str, str | Header] = {
        "From": sender_header(rendered.course.sender),
        "To": to_header(who),
        "Subject": subject_header(subject),
        "Date": format_datetime(now.astimezone(dt.UTC)),
        "Message-ID": msg_id,
        "List-Id": rendered.list_id,
        "List-Unsubscribe": f"<{who.unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if rendered.feedback_id:
        headers["Feedback-ID"] = rendered.feedback_id
    if who.reply_to:
        headers["Reply-To"] = who.reply_to
    if who.bounce_to:
        # Read by the SMTP transport as the envelope sender and not sent (see mail.envelope).
        headers["Return-Path"] = f"<{who.bounce_to}>"
    for name, value in who.tags:
        headers[name] = value
    msg = MIMEMultipart("alternative", policy=WIRE_POLICY)
    for name, value in headers.items():
        msg[name] = value
    # Quoted-printable keeps every line under 998 octets and the text readable in the source.
    msg.attach(MIMEText(rendered.text.render(who), "plain", QP_UTF8, policy=WIRE_POLICY))
    msg.attach(MIMEText(rendered.html.render(who), "html", QP_UTF8, policy=WIRE_POLICY))
    return msg
