"""Signed, per-purpose tokens for the links in every lesson.

A token names an enrollment (and, for reflections, a day) by id only: no address or name in
clear. Each purpose has its own salt, so an unsubscribe token can never open a journal.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

REFLECT = "reflect"
JOURNAL = "journal"
PAUSE = "pause"
UNSUBSCRIBE = "unsubscribe"
LESSON = "lesson"  # the lesson as sent, to read in a browser
PATHS = {REFLECT: "r", JOURNAL: "j", PAUSE: "p", UNSUBSCRIBE: "u", LESSON: "l"}
PRIVACY_PATH = "/privacy"  # the same for everyone: no token
# The links to private writing; with ``reflect_max_age_days`` set, they expire. Pause and
# unsubscribe links never do (leaving must always work), so the pages they open show nothing
# private and offer no link to these.
EXPIRING = (REFLECT, JOURNAL, LESSON)


class BadToken(Exception):
    """A forged, tampered, truncated or expired token."""


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
        """The ids inside a token made for ``purpose`` and when it was issued."""
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
            isinstance(x, int) and not isinstance(x, bool) for x in payload
        ):
            raise BadToken(purpose)
        return payload, issued_at

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
