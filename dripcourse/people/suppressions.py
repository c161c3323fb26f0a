"""The suppression list, as operators see and change it: addresses that are never mailed.

An entry's ``reason`` starts with its kind: ``bounced: <server reply>``, ``complained``,
``unsubscribed``, ``forgotten: ...`` (all that is left of a person erased at their request),
or ``operator: <their words>`` for entries added by hand. Reasons hold text from outside (a
server's reply): control characters are taken out before it is shown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.errors import InputError, NotFound
from dripcourse.models import EnrollmentStatus, Subscriber, Suppression
from dripcourse.people.enrollment import stop_enrollment, suppress
from dripcourse.people.signup import check_signup
from dripcourse.validate import without_controls

KINDS = ("bounced", "complained", "unsubscribed", "forgotten", "operator")


class NeedsConfirmation(InputError):
    """Lifting this entry is likely a mistake; the operator must confirm it (--yes)."""


@dataclass(frozen=True)
class Entry:
    email: str
    kind: str  # one of KINDS
    detail: str
    since: dt.datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "email": self.email,
            "reason": self.kind,
            "detail": self.detail,
            "since": self.since.isoformat().replace("+00:00", "Z"),
        }


def entry(row: Suppression) -> Entry:
    kind, _, detail = row.reason.partition(":")
    if kind not in KINDS:
        # Entries written before kinds were spelled out: treat them as an operator's.
        kind, detail = "operator", row.reason
    return Entry(row.email, kind, without_controls(detail).strip(), row.created_at)


def forgotten_on(session: Session, email: str) -> dt.datetime | None:
    """When the person with this address was forgotten at their request; None if not."""
    row = session.scalar(select(Suppression).where(Suppression.email == email.strip().lower()))
    if row is None or entry(row).kind != "forgotten":
        return None
    return row.created_at


def list_entries(session: Session) -> list[Entry]:
    return [entry(row) for row in session.scalars(select(Suppression).order_by(Suppression.email))]


def _address(email: str) -> str:
    # The same normalising as enrollment, so an entry matches the stored address.
    return check_signup(email, "", "UTC").email


def add(session: Session, email: str, reason: str, now: dt.datetime) -> Entry:
    """Suppress an address by hand and stop its active enrollments (they end as removed)."""
    address = _address(email)
    reason = " ".join(reason.split())
    if not reason:
        raise InputError("--reason: say why (it is shown in `suppressions list`)")
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is not None:
        raise InputError(f"{address} is suppressed already ({entry(existing).kind})")
    suppress(session, address, f"operator: {reason}", now)
    person = session.scalar(select(Subscriber).where(Subscriber.email == address))
    for each in person.enrollments if person else []:
        if each.status == EnrollmentStatus.ACTIVE:
            stop_enrollment(session, each, EnrollmentStatus.REMOVED, now)
    session.flush()
    return Entry(address, "operator", reason, now)


def remove(session: Session, email: str, *, confirmed: bool = False) -> Entry:
    """Lift a suppression, so the address can be enrolled again. A bounced address needs
    ``confirmed``: mailing a dead mailbox again hurts the sender's reputation."""
    address = _address(email)
    row = session.scalar(select(Suppression).where(Suppression.email == address))
    if row is None:
        raise NotFound(f"{address} is not on the suppression list")
    lifted = entry(row)
    if lifted.kind == "forgotten" and not confirmed:
        raise NeedsConfirmation(
            f"{address} was forgotten on {lifted.since:%Y-%m-%d} at their request: this entry "
            "is all that is left of them and what keeps them from being mailed again; lifting "
            "it leaves no trace that they asked to be erased: add --yes to lift it"
        )
    if lifted.kind in ("bounced", "complained") and not confirmed:
        raise NeedsConfirmation(
            f"{address} {lifted.kind} on {lifted.since:%Y-%m-%d}"
            + (f" ({lifted.detail})" if lifted.detail else "")
            + "; mailing it again may bounce or be reported as spam: add --yes to lift it"
        )
    session.delete(row)
    session.flush()
    return lifted
