"""Signed, per-purpose tokens for the links in every lesson.

A token names an enrollment (and, for reflections, a day) by id only: no address or name in
clear. Each purpose has its own salt, so an unsubscribe token can never open a journal.

Every token is also bound to its enrollment's ``link_key``, a random value kept in the row
(see ``Token.opens``): an id that comes to mean another row (SQLite handing out a deleted
highest id again, a database restored from a backup, people imported into a fresh database)
has another key, so an old link or address can never open or act on the new person. Tokens
made before keys existed carry none; they are accepted only for rows made before keys existed
too, and (web links) only when issued after the row was made. docs/security.md says why.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes
from itsdangerous.signer import HMACAlgorithm
from sqlalchemy.orm import Session

from dripcourse.models import MAX_ID, Enrollment

REFLECT = "reflect"
JOURNAL = "journal"
PAUSE = "pause"
UNSUBSCRIBE = "unsubscribe"
LESSON = "lesson"  # the lesson as sent, to read in a browser
SUPPORT = "support"  # where to turn in a dark week: the reader's list, nothing private
CHECKIN = "checkin"  # answer a check-in question (the answer follows the token in the path)
# A reply from another address, held until its reader says whether it is theirs: the link in
# the one message that asks them, to (enrollment, held reply). It always expires.
CONFIRM = "confirm"
CONFIRM_MAX_AGE_DAYS = 7
# Address tokens, in the local part of a reply or bounce address (see ``Links.address_token``).
REPLY = "reply"
BOUNCE = "bounce"
# A header naming one delivery, which an email provider's webhook hands back (never an address).
DELIVERY = "delivery"
ADDRESS_PREFIX = {REPLY: "reflect", BOUNCE: "bounce"}
_ADDRESS_PURPOSES = (REPLY, BOUNCE, DELIVERY)
MAX_LOCAL_PART = 64  # RFC 5321: a longer local part may be refused by any server on the way
_MAC_CHARS = 24  # 120 bits of base32
SAMPLE_KEY = "sample"  # the key of the sample links in previews: no row has it, no id is 0
PATHS = {
    REFLECT: "r",
    JOURNAL: "j",
    PAUSE: "p",
    UNSUBSCRIBE: "u",
    LESSON: "l",
    SUPPORT: "s",
    CHECKIN: "c",
    CONFIRM: "h",
}
PRIVACY_PATH = "/privacy"  # the same for everyone: no token
# The links to private writing; with ``reflect_max_age_days`` set, they expire. Pause and
# unsubscribe links never do (leaving must always work), nor support links (where to turn
# must always open), so the pages they open show nothing private and offer no link to these.
# A check-in answer is the subscriber's own too, and its page offers the journal.
EXPIRING = (REFLECT, JOURNAL, LESSON, CHECKIN)
# Links that expire whatever the settings say, after this many days.
MAX_AGE_DAYS = {CONFIRM: CONFIRM_MAX_AGE_DAYS}


class BadToken(Exception):
    """A forged, tampered, truncated or expired token, or one naming no possible row."""


class ExpiredToken(BadToken):
    """A token we made, for this purpose, that is past its age: a page may say so."""


class Bindable(Protocol):
    """What ``Token.opens`` reads of an enrollment row."""

    link_key: str
    legacy_links: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class Token:
    """What a valid signature vouches for: the ids, when it was issued, and the row's key.

    ``issued_at`` is None for reply and bounce addresses (they carry no time); ``key`` is None
    for a token made before tokens were bound to their row.
    """

    ids: list[int]
    issued_at: dt.datetime | None
    key: str | None

    def opens(self, row: Bindable) -> bool:
        """Whether this token was made for ``row`` rather than an earlier row of the same id.

        A bound token must carry the row's own key. An unbound one (made by a release before
        keys) only for a row made before keys too (``legacy_links``), and, when it says when it
        was issued, not before the row was made: a link older than its row was someone else's.
        """
        if self.key is not None:
            return hmac.compare_digest(self.key.encode(), row.link_key.encode())
        if not row.legacy_links:
            return False
        if self.issued_at is None:
            return True
        made = row.created_at.replace(microsecond=0)
        return self.issued_at >= made


def enrollment_of(session: Session, token: Token) -> Enrollment | None:
    """The enrollment a valid token was made for; None when that row is gone.

    A row with the token's id but not its key is a later one (see ``Token.opens``): for this
    token, it is as gone as the row it was made for.
    """
    found = session.get(Enrollment, token.ids[0])
    return found if found is not None and token.opens(found) else None


class _IssuedAtSigner(TimestampSigner):
    """Signs with a given issue time instead of now (see ``Links.token``), and, once
    ``derived_key`` is set, with that key rather than deriving it again for each signature
    (see ``_signer``)."""

    def __init__(
        self,
        *args: object,
        issued_at: dt.datetime | None = None,
        derived_key: bytes | None = None,
        **kwargs: object,
    ):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.issued_at = issued_at
        self.derived_key = derived_key

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is None and self.derived_key is not None:
            return self.derived_key
        return super().derive_key(secret_key)

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

    def token(self, purpose: str, *ids: int, key: str, issued_at: dt.datetime | None = None) -> str:
        """A token for ``purpose`` bound to the row whose ``link_key`` is ``key``.

        ``issued_at`` backdates it, so it expires no later: a page reached by one link and
        offering another gives the second the first one's issue time, so following links never
        makes a fresh one out of an old one.

        itsdangerous makes the token: the serializer of ``purpose`` writes the payload and a
        signer signs it. The signer of a purpose and issue time is made once and kept (see
        ``_signer``), since a lesson carries seven tokens.
        """
        return self._signed(purpose, self._payload(purpose, ids, key), issued_at)

    def _payload(self, purpose: str, ids: tuple[int, ...], key: str) -> bytes:
        serializer = _serializer_of(self.secret_key, purpose)
        return want_bytes(serializer.dump_payload([*ids, key]))

    def _signed(self, purpose: str, payload: bytes, issued_at: dt.datetime | None) -> str:
        return _signer(self.secret_key, purpose, issued_at).sign(payload).decode()

    def url(self, purpose: str, *ids: int, key: str) -> str:
        return self._url(purpose, self.token(purpose, *ids, key=key))

    def _url(self, purpose: str, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/{PATHS[purpose]}/{token}"

    def load(self, purpose: str, token: str) -> list[int]:
        """The ids inside a token made for ``purpose``; BadToken for anything else."""
        return self.load_token(purpose, token).ids

    def load_token(self, purpose: str, token: str) -> Token:
        """The ids inside a token made for ``purpose``, when it was issued, and its key.

        Every id (enrollment or day) is a positive number a database column can hold. Whether
        the token is for the row now holding the id is ``Token.opens``'s to say.
        """
        max_age = None
        if purpose in EXPIRING and self.reflect_max_age_days:
            max_age = self.reflect_max_age_days * 86400
        if purpose in MAX_AGE_DAYS:
            max_age = MAX_AGE_DAYS[purpose] * 86400
        try:
            payload, issued_at = self._serializer(purpose).loads(
                token, max_age=max_age, return_timestamp=True
            )
        except SignatureExpired:
            raise ExpiredToken(purpose) from None
        except BadData:
            raise BadToken(purpose) from None
        if not isinstance(payload, list):
            raise BadToken(purpose)
        key = None
        if payload and isinstance(payload[-1], str):
            *payload, key = payload
        if not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_ID for x in payload
        ):
            # Only we can sign ids out of range, but one must still never reach a query.
            raise BadToken(purpose)
        return Token(payload, issued_at, key)

    def address_token(self, purpose: str, enrollment_id: int, day: int, key: str) -> str:
        """A token for (enrollment, day) that fits in an email address's local part.

        The web tokens are too long (about 60 characters before the address prefix) and mix
        upper and lower case, which a mail server on the way may fold. This one is lower-case
        base 36 and base 32: ``<enrollment>-<day>-<key>-<mac>``, at most 51 characters for
        any id a database gives out. No issue time: a reply may come weeks later, and a bounce
        even after the reflection links expired.
        """
        if purpose not in _ADDRESS_PURPOSES or enrollment_id < 0 or day < 0:
            raise ValueError(f"no address token for {purpose} {enrollment_id} {day}")
        if not key.isalnum() or not key.islower():
            raise ValueError("a link key is lower-case letters and digits")
        payload = f"{_b36(enrollment_id)}-{_b36(day)}-{key}"
        return f"{payload}-{self._address_mac(purpose, payload)}"

    def address(self, purpose: str, enrollment_id: int, day: int, domain: str, key: str) -> str:
        """``reflect+TOKEN@domain`` or ``bounce+TOKEN@domain``; ValueError past 64 characters."""
        token = self.address_token(purpose, enrollment_id, day, key)
        local = f"{ADDRESS_PREFIX[purpose]}+{token}"
        if len(local) > MAX_LOCAL_PART:
            raise ValueError(f"local part {len(local)} characters long")
        return f"{local}@{domain}"

    def load_address(self, purpose: str, local_part: str) -> tuple[int, int]:
        """(enrollment id, day) from the local part of an address made by ``address``."""
        return tuple(self.load_address_token(purpose, local_part).ids)  # type: ignore[return-value]

    def load_address_token(self, purpose: str, local_part: str) -> Token:
        """The (enrollment id, day) and key of an address made by ``address``.

        Accepts the token alone or with its ``reflect+``/``bounce+`` prefix, in any case, and
        the unbound form (``<enrollment>-<day>-<mac>``) of releases before keys. BadToken for
        anything else.
        """
        if purpose not in _ADDRESS_PURPOSES:
            raise BadToken(purpose)
        local = local_part.strip().lower()
        prefix = ADDRESS_PREFIX.get(purpose, purpose) + "+"
        if local.startswith(prefix):
            local = local[len(prefix) :]
        parts = local.split("-")
        if len(parts) not in (3, 4) or len(local) > MAX_LOCAL_PART:
            raise BadToken(purpose)
        *signed, mac = parts
        expected = self._address_mac(purpose, "-".join(signed))
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise BadToken(purpose)
        enrollment, day = signed[:2]
        key = signed[2] if len(signed) == 3 else None
        try:
            ids = [int(enrollment, 36), int(day, 36)]
        except ValueError:
            raise BadToken(purpose) from None
        if not all(1 <= x <= MAX_ID for x in ids):
            # Only we can sign ids out of range, but one must still never reach a query.
            raise BadToken(purpose)
        return Token(ids, None, key)

    def _address_mac(self, purpose: str, payload: str) -> str:
        secret = self.address_key or self.secret_key
        key = hashlib.sha256(f"dripcourse.address.{purpose}:{secret}".encode()).digest()
        digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode().lower()[:_MAC_CHARS]

    def for_lesson(
        self, enrollment_id: int, day: int, key: str, shown: Collection[str] | None = None
    ) -> dict[str, str]:
        """Every link one lesson email carries, bound to the enrollment's ``link_key``.

        With ``shown`` (the purposes the lesson's text and HTML show), the links it does not
        show are left empty rather than signed; the unsubscribe link is signed always, since
        every lesson carries it in its List-Unsubscribe header.
        """
        links = dict.fromkeys(_LESSON_LINKS, "")
        for ids, purposes in (
            ((enrollment_id, day), (REFLECT, LESSON, CHECKIN)),
            ((enrollment_id,), (JOURNAL, PAUSE, UNSUBSCRIBE, SUPPORT)),
        ):
            wanted = [p for p in purposes if shown is None or p in shown or p == UNSUBSCRIBE]
            if not wanted:
                continue
            # The payload is the same bytes under every purpose (only the signature depends
            # on the salt), so the serializer writes it once for the links that share it.
            payload = self._payload(wanted[0], ids, key)
            for purpose in wanted:
                links[purpose] = self._url(purpose, self._signed(purpose, payload, None))
        links["privacy"] = self.base_url.rstrip("/") + PRIVACY_PATH
        return links

    def samples(self, day: int) -> dict[str, str]:
        """Links of the same shape that open nothing (enrollment 0): for staff previews."""
        return self.for_lesson(0, day, SAMPLE_KEY)


# The links of a lesson email, in the order for_lesson gives them.
_LESSON_LINKS = (REFLECT, JOURNAL, PAUSE, UNSUBSCRIBE, LESSON, SUPPORT, CHECKIN)


class _CompactJSON:
    """itsdangerous's JSON for payloads (compact, not ASCII-only), with its encoder made once:
    ``json.dumps`` with arguments makes a new encoder for every call, a third of a payload's
    time. The same text, so the same tokens (tests/test_link_signing.py)."""

    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def dumps(cls, obj: object) -> str:
        return cls._encoder.encode(obj)

    @staticmethod
    def loads(payload: str | bytes) -> object:
        return json.loads(payload)


class _KeptHMAC(HMACAlgorithm):
    """HMAC-SHA1, as itsdangerous signs, with the keyed state for one key made once and copied
    for each signature rather than keyed afresh (any other key is keyed as usual)."""

    def __init__(self, key: bytes) -> None:
        super().__init__(hashlib.sha1)
        self.key = key
        self.keyed = hmac.new(key, digestmod=hashlib.sha1)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        if key != self.key:
            return super().get_signature(key, value)
        mac = self.keyed.copy()  # copying never changes the kept state: safe across threads
        mac.update(value)
        return mac.digest()


@functools.lru_cache(maxsize=64)
def _serializer_of(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    """The serializer of ``purpose``, which writes its tokens' payloads: made once."""
    return URLSafeTimedSerializer(secret_key, salt=f"dripcourse.{purpose}", serializer=_CompactJSON)


@functools.lru_cache(maxsize=256)
def _signer(secret_key: str, purpose: str, issued_at: dt.datetime | None) -> _IssuedAtSigner:
    """The signer of ``purpose`` for tokens issued at ``issued_at`` (None: when signed), made
    once with the key it derives from the secret, instead of a signer and a key per token.

    SHA-1 is itsdangerous's own digest, passed as hashlib's constructor rather than its lazy
    wrapper so that hmac takes its C path, and keyed once for the derived key (``_KeptHMAC``):
    the same HMAC-SHA1, the same bytes.
    """
    salt = f"dripcourse.{purpose}"
    signer = _IssuedAtSigner(secret_key, salt=salt, issued_at=issued_at, digest_method=hashlib.sha1)
    signer.derived_key = signer.derive_key()
    signer.algorithm = _KeptHMAC(signer.derived_key)
    return signer


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
