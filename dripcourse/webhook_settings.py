"""The email providers' webhook settings checked at start: a key that cannot be read, or a
secret short enough to guess, stops the program with the setting's name (docs/configuration.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dripcourse.errors import ConfigError

if TYPE_CHECKING:
    from dripcourse.settings import Settings

_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")


def check_webhooks(settings: Settings) -> None:
    """Refuse a webhook setting that cannot work (ConfigError naming it)."""
    for arn in settings.ses_topic_arns:
        if not _TOPIC_ARN.fullmatch(arn):
            raise ConfigError(
                f"setting ses_topic_arn: {arn!r} is not an SNS topic ARN "
                "(arn:aws:sns:REGION:ACCOUNT:TOPIC)"
            )
    if settings.sendgrid_webhook_public_key:
        try:
            verification_key(settings.sendgrid_webhook_public_key)
        except ValueError:
            raise ConfigError(
                "setting sendgrid_webhook_public_key: not an elliptic-curve public key; copy "
                "the verification key SendGrid shows for the signed event webhook"
            ) from None
    if settings.postmark_webhook_user and not settings.postmark_webhook_password:
        raise ConfigError("setting postmark_webhook_user: set postmark_webhook_password too")
    if ":" in settings.postmark_webhook_user:
        raise ConfigError("setting postmark_webhook_user: a user name cannot hold ':'")
    for name in (
        "mailgun_webhook_signing_key",
        "postmark_webhook_password",
        "postmark_webhook_secret",
    ):
        value = getattr(settings, name)
        if value and len(value.encode()) < 16:
            raise ConfigError(f"setting {name}: at least 16 bytes, or it can be guessed")
    if settings.webhook_max_age_seconds < 30:
        raise ConfigError("setting webhook_max_age_seconds: at least 30")


def verification_key(text: str) -> ec.EllipticCurvePublicKey:
    """A public key given as PEM or as the base64 of its DER (how SendGrid shows it);
    ValueError for anything else."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("not a public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve key")
    return key
