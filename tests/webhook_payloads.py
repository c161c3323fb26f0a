"""Requests as each email provider sends them, signed with keys the tests make. No tests here.

The shapes follow each provider's documentation of its webhook payloads; the keys, the
certificate and every id are made here, so nothing touches the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:eu-west-1:123456789012:dripcourse-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
MAILGUN_KEY = "mailgun-signing-key-made-for-the-tests"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "a-password-for-the-postmark-hook"
POSTMARK_SECRET = "a-secret-header-for-the-postmark-hook"


@dataclass
class Sent:
    """What one lesson we sent carried: its recipient and the headers providers hand back."""

    to: str
    headers: dict[str, str]

    @property
    def message_id(self) -> str:
        return self.headers["message-id"]

    @property
    def tag(self) -> str:
        return self.headers["x-dripcourse-delivery"]


def sent_lessons(outbox: Path) -> list[Sent]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        headers = {k.lower(): str(v) for k, v in msg.items()}
        found.append(Sent(to=headers["to"].split("<")[-1].strip(">").strip(), headers=headers))
    return found


def lesson_for(outbox: Path, address: str, day: int) -> Sent:
    mine = [s for s in sent_lessons(outbox) if s.to == address]
    return mine[day - 1]


# -- Amazon SES through SNS ----------------------------------------------------------------


@dataclass
class SNS:
    """An SNS signing key and its self-signed certificate, served at ``CERT_URL``."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    fetched: list[str] = field(default_factory=list)

    def certificate(self, now: dt.datetime) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def fetch(self, now: dt.datetime):  # type: ignore[no-untyped-def]
        """The fetch the app is handed: records every URL, serves only the certificate."""

        def get(url: str) -> bytes:
            self.fetched.append(url)
            if url == CERT_URL:
                return self.certificate(now)
            return b"<ConfirmSubscriptionResponse/>"

        return get

    def sign(self, message: dict[str, Any], version: str = "1") -> bytes:
        names = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if message["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        signed = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(signed.encode(), padding.PKCS1v15(), digest)
        message = {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": message.get("SigningCertURL", CERT_URL),
        }
        return json.dumps(message).encode()


def sns_notification(notice: dict[str, Any], now: dt.datetime, **extra: str) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": secrets.token_hex(16),
        "TopicArn": TOPIC,
        "Message": json.dumps(notice),
        "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        **extra,
    }


def sns_confirmation(now: dt.datetime, subscribe_url: str) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": secrets.token_hex(16),
        "Token": secrets.token_hex(32),
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def ses_mail(sent: Sent, now: dt.datetime, *, with_headers: bool = True) -> dict[str, Any]:
    """The ``mail`` object, with the original headers when the topic is set to include them."""
    mail: dict[str, Any] = {
        "timestamp": now.isoformat(),
        "source": "lessons@course.example.org",
        "messageId": "0102018d2a1b3c4d-ses-own-id-000000",
        "destination": [sent.to],
    }
    if with_headers:
        mail["headersTruncated"] = False
        mail["headers"] = [{"name": k, "value": v} for k, v in sent.headers.items()]
        mail["commonHeaders"] = {"messageId": sent.message_id, "to": [sent.to]}
    return mail


def ses_bounce(sent: Sent, now: dt.datetime, recipient: str | None = None, **bounce: Any) -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient or sent.to,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": now.isoformat(),
            "feedbackId": secrets.token_hex(8),
            **bounce,
        },
        "mail": ses_mail(sent, now),
    }


def ses_complaint(sent: Sent, now: dt.datetime, recipient: str | None = None) -> dict:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient or sent.to}],
            "timestamp": now.isoformat(),
            "feedbackId": secrets.token_hex(8),
            "complaintFeedbackType": "abuse",
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
        },
        "mail": ses_mail(sent, now),
    }


# -- Mailgun --------------------------------------------------------------------------------


def mailgun_body(
    event_data: dict[str, Any], now: dt.datetime, key: str = MAILGUN_KEY, token: str = ""
) -> bytes:
    timestamp = str(int(now.timestamp()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return json.dumps(
        {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": signature.hexdigest(),
            },
            "event-data": event_data,
        }
    ).encode()


def mailgun_event(sent: Sent, now: dt.datetime, event: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": now.timestamp(),
        "log-level": "error",
        "recipient": sent.to,
        "recipient-domain": sent.to.split("@")[1],
        "message": {
            "headers": {
                "to": sent.to,
                "message-id": sent.message_id.strip("<>"),
                "from": "lessons@course.example.org",
                "subject": "Day 3",
            }
        },
        "user-variables": json.loads(sent.headers["x-mailgun-variables"]),
    }
    if event == "failed":
        data.update(
            severity="permanent",
            reason="bounce",
            **{
                "delivery-status": {
                    "attempt-no": 1,
                    "code": 550,
                    "message": "5.1.1 The email account that you tried to reach does not exist",
                    "description": "",
                }
            },
        )
    data.update(fields)
    return data


# -- SendGrid -------------------------------------------------------------------------------


@dataclass
class SendGrid:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_key(self) -> str:
        """As SendGrid shows it: the base64 of the DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def request(self, events: list[dict[str, Any]], now: dt.datetime) -> tuple[bytes, dict]:
        body = json.dumps(events).encode()
        timestamp = str(int(now.timestamp()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return body, {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_event(sent: Sent, now: dt.datetime, event: str, **fields: Any) -> dict[str, Any]:
    unique_args = json.loads(sent.headers["x-smtpapi"])["unique_args"]
    data: dict[str, Any] = {
        "email": sent.to,
        "timestamp": int(now.timestamp()),
        "smtp-id": sent.message_id,
        "event": event,
        "category": ["lessons"],
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **unique_args,
    }
    if event == "bounce":
        data.update(type="bounce", status="5.0.0", reason="550 5.1.1 The user does not exist")
    data.update(fields)
    return data


# -- Postmark -------------------------------------------------------------------------------


def postmark_headers(
    user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD, secret: str = POSTMARK_SECRET
) -> dict[str, str]:
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {basic}", "X-Dripcourse-Secret": secret}


def postmark_metadata(sent: Sent) -> dict[str, str]:
    prefix = "x-pm-metadata-"
    return {k[len(prefix) :]: v for k, v in sent.headers.items() if k.startswith(prefix)}


def postmark_bounce(sent: Sent, now: dt.datetime, **fields: Any) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": secrets.randbelow(10**9),
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": postmark_metadata(sent),
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": sent.to,
        "From": "lessons@course.example.org",
        "BouncedAt": now.isoformat(),
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Day 3",
        **fields,
    }


def postmark_complaint(sent: Sent, now: dt.datetime) -> dict[str, Any]:
    return postmark_bounce(
        sent,
        now,
        RecordType="SpamComplaint",
        Type="SpamComplaint",
        TypeCode=512,
        Name="Spam complaint",
        Details="",
    )


def postmark_unsubscribe(sent: Sent, now: dt.datetime) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": now.isoformat(),
        "Recipient": sent.to,
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "",
        "Metadata": postmark_metadata(sent),
    }
