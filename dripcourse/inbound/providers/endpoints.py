"""The webhook URLs: ``POST /webhooks/ses``, ``/mailgun``, ``/sendgrid``, ``/postmark``.

A thin view per request: a provider whose setting is empty is not there (404); the
provider's module checks the request before anything in it is believed, and a refusal is
a plain 4xx with nothing changed; the events are then applied in one transaction. The
answers are short plain text: providers read only the status.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, request

from dripcourse.db import transaction
from dripcourse.inbound.providers import mailgun, postmark, sendgrid, ses
from dripcourse.inbound.providers.common import MAX_BODY_BYTES, Refused, Verified
from dripcourse.inbound.providers.record import record

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/<provider>", provide_automatic_options=False)
def receive(provider: str) -> Response:
    rt: Runtime = current_app.extensions["dripcourse"]
    if provider not in rt.settings.webhook_providers:
        abort(404)
    clock: Callable[[], dt.datetime] = current_app.config["CLOCK"]
    now = clock()
    request.max_content_length = MAX_BODY_BYTES
    body = request.get_data(cache=False)
    try:
        verified, confirmation = _verify(provider, body, rt, now)
        with transaction(rt.sessions) as session:
            kinds = record(
                session,
                provider,
                verified,
                links=rt.links,
                now=now,
                soft_rule=rt.inbound.soft_rule,
            )
            if confirmation is not None:
                # After the replay check; a failure rolls it back, so SNS's next try counts.
                ses.confirm(confirmation, _fetch())
                log.info("webhook ses: subscribed to %s", confirmation.get("TopicArn"))
    except Refused as exc:
        log.warning("webhook %s refused (%s): %s", provider, exc.status, exc.why)
        return Response(f"{exc.why}\n", status=exc.status, mimetype="text/plain")
    return Response(f"ok: {len(kinds)} event(s)\n", status=200, mimetype="text/plain")


def _verify(
    provider: str, body: bytes, rt: Runtime, now: dt.datetime
) -> tuple[Verified, dict[str, Any] | None]:
    """The request's events once the provider's scheme holds, and an SNS subscription
    confirmation to answer (None for anything else)."""
    settings = rt.settings
    max_age = settings.webhook_max_age_seconds
    if provider == "mailgun":
        return mailgun.verify(
            body, signing_key=settings.mailgun_webhook_signing_key, now=now, max_age=max_age
        ), None
    if provider == "sendgrid":
        verified = sendgrid.verify(
            body,
            signature=request.headers.get(sendgrid.SIGNATURE, ""),
            timestamp=request.headers.get(sendgrid.TIMESTAMP, ""),
            public_key=settings.sendgrid_webhook_public_key,
            now=now,
            max_age=max_age,
        )
        return verified, None
    if provider == "postmark":
        verified = postmark.verify(
            body,
            authorization=request.headers.get("Authorization", ""),
            secret_header=request.headers.get(postmark.SECRET_HEADER, ""),
            user=settings.postmark_webhook_user,
            password=settings.postmark_webhook_password,
            secret=settings.postmark_webhook_secret,
        )
        return verified, None
    message, verified = ses.verify(
        body,
        topics=settings.ses_topic_arns,
        certificates=_certificates(),
        now=now,
        max_age=max_age,
    )
    return verified, message if message.get("Type") == "SubscriptionConfirmation" else None


def _fetch() -> ses.Fetch:
    """How SNS URLs are fetched (tests hand in their own: no network)."""
    return current_app.config.get("SNS_FETCH") or ses.fetch_https


def _certificates() -> ses.Certificates:
    """The signing certificates this app has fetched, kept for its lifetime."""
    kept = current_app.extensions.get("dripcourse.sns_certificates")
    if not isinstance(kept, ses.Certificates):
        kept = current_app.extensions.setdefault(
            "dripcourse.sns_certificates", ses.Certificates(_fetch())
        )
    return kept
