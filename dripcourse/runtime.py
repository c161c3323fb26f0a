"""The objects one process needs, built once from Settings and passed in: never globals."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import redis
import tenacity
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dripcourse import db
from dripcourse.courses.course import Course, course_slugs
from dripcourse.courses.course_folder import load_course
from dripcourse.courses.render import Renderer
from dripcourse.encryption import ReflectionCipher, key_from_var
from dripcourse.errors import CourseError, DripcourseError
from dripcourse.inbound.bounces import SoftRule
from dripcourse.inbound.lesson_quote import template_text
from dripcourse.inbound.route import Inbound, Limits
from dripcourse.links import Links
from dripcourse.mail_url import parse_mail_url
from dripcourse.sending.ratelimit import RateLimiter
from dripcourse.sending.transport import RelayError, Transport, transport_from_url
from dripcourse.settings import (
    Settings,
    kept_secret_key,
    redis_url_for_rate_limit,
    secret_key,
)

log = logging.getLogger(__name__)

# How long a send waits for the send-rate limiter's Redis to come back before it gives up.
RATE_LIMIT_PATIENCE_SECONDS = 10.0


def _pause(seconds: float) -> None:
    time.sleep(seconds)


class Catalog:
    """The courses under one emails/ folder, each loaded and checked once per process."""

    def __init__(
        self,
        emails_dir: Path,
        *,
        reply_by_email: bool = False,
        feedback_id: str = "",
        team: tuple[str, str] = ("the course team", ""),
    ) -> None:
        self.emails_dir = emails_dir
        self.reply_by_email = reply_by_email
        self.feedback_id = feedback_id
        self.team = team  # name and contact address, for every lesson's footer
        self._courses: dict[str, Course] = {}
        self._renderer: Renderer | None = None
        # Lesson versions this process knows are stored: digest -> id (see lessons_sent).
        self.lesson_versions: dict[str, int] = {}

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(
                self.emails_dir,
                reply_by_email=self.reply_by_email,
                feedback_id=self.feedback_id,
                team_name=self.team[0],
                team_contact=self.team[1],
            )
        return self._renderer

    def course(self, slug: str) -> Course:
        if slug not in self._courses:
            course = load_course(self.emails_dir, slug)
            self.renderer.check(course)
            self._courses[slug] = course
        return self._courses[slug]

    def slugs(self) -> list[str]:
        return course_slugs(self.emails_dir)


@dataclass
class Runtime:
    settings: Settings
    _transport: Transport | None = field(default=None, repr=False)
    # False for a command that needs a database made already (see db.make_engine).
    create_database: bool = True
    # True for the CLI: a database a newer release upgraded is refused before the first
    # statement, so a command can neither write rows that release does not expect nor send.
    refuse_newer: bool = False
    # The threads of a thread-pool worker ask for the transport at once when the first tasks
    # arrive: one must make it, or each makes its own and all but one leak their connections.
    _transport_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def engine(self) -> Engine:
        engine = db.make_engine(self.settings.database_url, create=self.create_database)
        if self.refuse_newer:
            db.refuse_newer(engine)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.engine)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(
            self.settings.path(self.settings.emails_dir),
            reply_by_email=bool(self.settings.reply_domain),
            feedback_id=self.settings.feedback_id,
            team=(self.settings.team_name, self.settings.team_contact),
        )

    @cached_property
    def sample_links(self) -> Links:
        """Links for staff previews, whose sample reader's links lead nowhere: signed with the
        key when there is one, else with a throwaway one, so a preview made before `init`
        (or on a laptop without a database) leaves no var/secret_key behind."""
        return Links(
            secret_key=kept_secret_key(self.settings) or secrets.token_urlsafe(48),
            base_url=self.settings.base_url,
            reflect_max_age_days=self.settings.reflect_max_age_days,
            address_key=self.settings.inbound_secret,
        )

    @cached_property
    def links(self) -> Links:
        return Links(
            secret_key=secret_key(self.settings),
            base_url=self.settings.base_url,
            reflect_max_age_days=self.settings.reflect_max_age_days,
            address_key=self.settings.inbound_secret,
        )

    @cached_property
    def inbound(self) -> Inbound:
        """What the inbound core needs: addresses, the reflection key, limits, courses."""
        catalog = self.catalog

        def course(slug: str) -> Course | None:
            try:
                return catalog.course(slug)
            except CourseError:
                return None

        def lesson_text(slug: str, day: int) -> str:
            try:
                found = catalog.course(slug)
                return template_text(catalog.renderer.lesson(found, day).text)
            except DripcourseError:
                return ""

        s = self.settings
        return Inbound(
            lesson_text=lesson_text,
            links=self.links,
            cipher=self.reflection_cipher,
            reply_domain=s.reply_domain,
            course=course,
            trusted_authserv_id=s.inbound_trusted_authserv_id,
            soft_rule=SoftRule(
                failures=s.bounce_soft_failures,
                days=s.bounce_soft_days,
                window_days=s.bounce_soft_window_days,
            ),
            limits=Limits(
                per_subscriber_per_day=s.inbound_max_per_subscriber_per_day,
                per_hour=s.inbound_max_per_hour,
                held_notices_per_day=s.inbound_max_notices_per_subscriber_per_day,
                max_chars=s.reflection_max_chars,
            ),
        )

    @cached_property
    def reflection_cipher(self) -> ReflectionCipher:
        """Seals and opens reflection text; on the embedded set-up its key is made in var/."""
        value = self.settings.reflections_key or key_from_var(
            self.settings.path(self.settings.var_dir)
        )
        return ReflectionCipher.from_setting(value)

    @property
    def outbox(self) -> Path | None:
        """The folder the file transport writes lessons into; None for any other transport."""
        mail = parse_mail_url(self.settings.mail_url)
        return mail.folder if mail.scheme == "file" else None

    @property
    def transport(self) -> Transport:
        transport = self._transport
        if transport is None:
            with self._transport_lock:
                if self._transport is None:
                    self._transport = transport_from_url(
                        self.settings.mail_url, timeout=self.settings.smtp_timeout_seconds
                    )
                transport = self._transport
        return transport

    @cached_property
    def limiter(self) -> RateLimiter | None:
        url = redis_url_for_rate_limit(self.settings)
        if url is None:
            return None
        return RateLimiter.from_url(url, self.settings.rate_limit_per_second)

    def throttle(self) -> None:
        """Wait for a slot under the global send-rate limit, if one is set.

        A Redis that blinks (restarted, a dropped connection) is tried again for about ten
        seconds, each wait logged; only then does sending pause (RelayError), as for a relay.
        """
        if self.limiter is None:
            return
        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
                wait=tenacity.wait_exponential_jitter(multiplier=0.25, max=2, jitter=0.25),
                stop=tenacity.stop_after_delay(RATE_LIMIT_PATIENCE_SECONDS),
                before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
                sleep=lambda seconds: _pause(seconds),
                reraise=True,
            )(self.limiter.wait)
        except redis.RedisError as exc:
            # The limiter is part of our own set-up: its outage pauses sending, as a relay's
            # does, and spends no subscriber's attempt.
            raise RelayError(f"send-rate limiter unavailable: {exc}") from exc

    def after_fork(self) -> None:
        """In a forked child: drop, without closing, the connections inherited from the parent.

        Closing them would close the parent's too: they are the same sockets (a PostgreSQL
        connection is ended with a message the server obeys; an SMTP one with QUIT).
        """
        self._transport = None
        self._transport_lock = threading.Lock()  # a thread of the parent may have held it
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if "engine" in self.__dict__:
            self.engine.dispose()
