"""Signed, per-purpose tokens for the links in every lesson.

A token names an enrollment (and, for reflections, a day) by id only: no address or name in
clear. Each purpose has its own salt, so an unsubscribe token can never open a journal.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from dripcourse.models import MAX_ID

REFLECT = "reflect"
JOURNAL = "journal"
PAUSE = "pause"
UNSUBSCRIBE = "unsubscribe"
LESSON = "lesson"  # the lesson as sent, to read in a browser
# Address tokens, in the local part of a reply or bounce address (see ``Links.address_token``).
REPLY = "reply"
BOUNCE = "bounce"
ADDRESS_PREFIX = {REPLY: "reflect", BOUNCE: "bounce"}
MAX_LOCAL_PART = 64  # RFC 5321: a longer local part may be refused by any server on the way
_MAC_CHARS = 24  # 120 bits of base32
PATHS = {REFLECT: "r", JOURNAL: "j", PAUSE: "p", UNSUBSCRIBE: "u", LESSON: "l"}
PRIVACY_PATH = "/privacy"  # the same for everyone: no token
# The links to private writing; with ``reflect_max_age_days`` set, they expire. Pause and
# unsubscribe links never do (leaving must always work), so the pages they open show nothing
# private and offer no link to these.
EXPIRING = (REFLECT, JOURNAL, LESSON)


class BadToken(Exception):
    """A forged, tampered, truncated or expired token, or one naming no possible row."""


class _IssuedAtSigner(TimestampSigner):
    """Signs with a given issue time instead of now (see ``Links.token``)."""

    def __init__(self, *args: object, issued_at: dt.datetime | None = None, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.issued_at = issued_at

    def get_timestamp(self) -> int:
        if self.issued_at is None:
            return super().get_timestamp()
        return int(self.issued_at.timestamp())


@dataclass(frozen=True)
class Links:
    secret_key: str
    base_url: str
    # 0: reflection links never expire. Unsubscribe links never expire whatever this says.
    reflect_max_age_days: int = 0
    # Signs the reply and bounce addresses when set (``inbound_secret``), else secret_key.
    address_key: str = ""

    def _serializer(
        self, purpose: str, issued_at: dt.datetime | None = None
    ) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            self.secret_key,
            salt=f"dripcourse.{purpose}",
            signer=_IssuedAtSigner,
            signer_kwargs={"issued_at": issued_at},
        )

    def token(self, purpose: str, *payload: int, issued_at: dt.datetime | None = None) -> str:
        """A token for ``purpose``; ``issued_at`` backdates it, so it expires no later.

        A page reached by one link and offering another gives the second the first one's issue
        time: following links never makes a fresh one out of an old one.
        """
        return self._serializer(purpose, issued_at).dumps(list(payload))

    def url(self, purpose: str, *payload: int) -> str:
        return f"{self.base_url.rstrip('/')}/{PATHS[purpose]}/{self.token(purpose, *payload)}"

    def load(self, purpose: str, token: str) -> list[int]:
        """The ids inside a token made for ``purpose``; BadToken for anything else."""
        return self.load_issued(purpose, token)[0]

    def load_issued(self, purpose: str, token: str) -> tuple[list[int], dt.datetime]:
        """The ids inside a token made for ``purpose`` and when it was issued.

        Every id (enrollment or day) is a positive number a database column can hold.
        """
        max_age = None
        if purpose in EXPIRING and self.reflect_max_age_days:
            max_age = self.reflect_max_age_days * 86400
        try:
            payload, issued_at = self._serializer(purpose).loads(
                token, max_age=max_age, return_timestamp=True
            )
        except BadData:
            raise BadToken(purpose) from None
        if not isinstance(payload, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_ID for x in payload
        ):
            # Only we can sign ids out of range, but one must still never reach a query.
            raise BadToken(purpose)
        return payload, issued_at

    def address_token(self, purpose: str, enrollment_id: int, day: int) -> str:
        """A token for (enrollment, day) that fits in an email address's local part.

        The web tokens are too long (about 50 characters before the address prefix) and mix
        upper and lower case, which a mail server on the way may fold. This one is lower-case
        base 36 and base 32: ``<enrollment>-<day>-<mac>``, at most 40 characters for any id a
        database gives out. No issue time: a reply may come weeks later, and a bounce even
        after the reflection links expired.
        """
        if purpose not in ADDRESS_PREFIX or enrollment_id < 0 or day < 0:
            raise ValueError(f"no address token for {purpose} {enrollment_id} {day}")
        payload = f"{_b36(enrollment_id)}-{_b36(day)}"
        return f"{payload}-{self._address_mac(purpose, payload)}"

    def address(self, purpose: str, enrollment_id: int, day: int, domain: str) -> str:
        """``reflect+TOKEN@domain`` or ``bounce+TOKEN@domain``; ValueError past 64 characters."""
        local = f"{ADDRESS_PREFIX[purpose]}+{self.address_token(purpose, enrollment_id, day)}"
        if len(local) > MAX_LOCAL_PART:
            raise ValueError(f"local part {len(local)} characters long")
        return f"{local}@{domain}"

    def load_address(self, purpose: str, local_part: str) -> tuple[int, int]:
        """(enrollment id, day) from the local part of an address made by ``address``.

        Accepts the token alone or with its ``reflect+``/``bounce+`` prefix, in any case.
        BadToken for anything else.
        """
        local = local_part.strip().lower()
        prefix = ADDRESS_PREFIX[purpose] + "+"
        if local.startswith(prefix):
            local = local[len(prefix) :]
        parts = local.split("-")
        if len(parts) != 3 or len(local) > MAX_LOCAL_PART:
            raise BadToken(purpose)
        enrollment, day, mac = parts
        expected = self._address_mac(purpose, f"{enrollment}-{day}")
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise BadToken(purpose)
        try:
            ids = int(enrollment, 36), int(day, 36)
        except ValueError:
            raise BadToken(purpose) from None
        if not all(1 <= x <= MAX_ID for x in ids):
            # Only we can sign ids out of range, but one must still never reach a query.
            raise BadToken(purpose)
        return ids

    def _address_mac(self, purpose: str, payload: str) -> str:
        secret = self.address_key or self.secret_key
        key = hashlib.sha256(f"dripcourse.address.{purpose}:{secret}".encode()).digest()
        digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower()[:_MAC_CHARS]

    def for_lesson(self, enrollment_id: int, day: int) -> dict[str, str]:
        """Every link one lesson email carries."""
        return {
            REFLECT: self.url(REFLECT, enrollment_id, day),
            JOURNAL: self.url(JOURNAL, enrollment_id),
            PAUSE: self.url(PAUSE, enrollment_id),
            UNSUBSCRIBE: self.url(UNSUBSCRIBE, enrollment_id),
            LESSON: self.url(LESSON, enrollment_id, day),
            "privacy": self.base_url.rstrip("/") + PRIVACY_PATH,
        }


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
