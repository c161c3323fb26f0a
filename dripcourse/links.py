"""Signed, per-purpose tokens for the links in every lesson.

A token names an enrollment (and, for reflections, a day) by id only: no address or name in
clear. Each purpose has its own salt, so an unsubscribe token can never open a journal.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

REFLECT = "reflect"
JOURNAL = "journal"
PAUSE = "pause"
UNSUBSCRIBE = "unsubscribe"
LESSON = "lesson"  # the lesson as sent, to read in a browser
PATHS = {REFLECT: "r", JOURNAL: "j", PAUSE: "p", UNSUBSCRIBE: "u", LESSON: "l"}
PRIVACY_PATH = "/privacy"  # the same for everyone: no token


class BadToken(Exception):
    """A forged, tampered, truncated or expired token."""


@dataclass(frozen=True)
class Links:
    secret_key: str
    base_url: str
    # 0: reflection links never expire. Unsubscribe links never expire whatever this says.
    reflect_max_age_days: int = 0

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret_key, salt=f"dripcourse.{purpose}")

    def token(self, purpose: str, *payload: int) -> str:
        return self._serializer(purpose).dumps(list(payload))

    def url(self, purpose: str, *payload: int) -> str:
        return f"{self.base_url.rstrip('/')}/{PATHS[purpose]}/{self.token(purpose, *payload)}"

    def load(self, purpose: str, token: str) -> list[int]:
        """The ids inside a token made for ``purpose``; BadToken for anything else."""
        max_age = None
        if purpose in (REFLECT, JOURNAL, LESSON) and self.reflect_max_age_days:
            max_age = self.reflect_max_age_days * 86400
        try:
            payload = self._serializer(purpose).loads(token, max_age=max_age)
        except BadData:
            raise BadToken(purpose) from None
        if not isinstance(payload, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in payload
        ):
            raise BadToken(purpose)
        return payload

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
