"""The foundation of the tables: the declarative base, UTC times, link keys, status enums."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import secrets

from sqlalchemy import (
    DateTime,
    Enum,
    String,
    TypeDecorator,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import FunctionElement


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike.

    SQLite keeps no zone; PostgreSQL would shift by the session zone. One rule for both keeps
    comparisons in queries exact.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: object
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


# The largest id (or day) the Integer columns hold on every backend: 32 bits on PostgreSQL, 64 on
# SQLite. A value past a column's range fails the whole query there, not just finds nothing.
MAX_ID = 2**31 - 1


LINK_KEY_CHARS = 12  # 60 random bits of lower-case base32: fits a reply address's local part


def new_link_key() -> str:
    """A fresh random ``Enrollment.link_key`` (see links.py)."""
    return base64.b32encode(secrets.token_bytes(8)).decode().lower()[:LINK_KEY_CHARS]


class random_link_key(FunctionElement[str]):  # noqa: N801 - reads as the SQL function it is
    """The database's own random key, for rows added without one (raw SQL, a release from
    before keys still running during the upgrade): never the same for two rows."""

    type = String()
    inherit_cache = True


@compiles(random_link_key, "sqlite")
def _random_link_key_sqlite(element: random_link_key, compiler: object, **kw: object) -> str:
    return "lower(hex(randomblob(6)))"


@compiles(random_link_key, "postgresql")
def _random_link_key_postgresql(element: random_link_key, compiler: object, **kw: object) -> str:
    return "substr(md5(random()::text || clock_timestamp()::text), 1, 12)"


class Base(DeclarativeBase):
    pass


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    FAILED = "failed"
    REMOVED = "removed"  # an operator took them out of the cohort (or moved them)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # claimed and queued, waiting for a worker
    WAITING = "waiting"  # put back until next_attempt_at: a retry, the window, a paused relay
    SENDING = "sending"  # a worker holds it until next_attempt_at
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the subscriber left before it went out


def enum_type(kind: type[enum.Enum], name: str) -> Enum:
    return Enum(
        kind,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )
