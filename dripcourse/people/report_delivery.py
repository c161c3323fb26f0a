"""The report's deliverability figures: bounces and complaints, and the warnings in force.

Read from ``delivery_problems``: one row per bounce or complaint applied, whichever way it
came (our bounce address, "mail", or a provider's webhook, "ses", "postmark", ...), with its
reason family and what it did, never an address or a word. Per cohort, and overall (every
cohort, and people since forgotten, whose rows stay without an enrollment).

Counts are of reports, hidden by the number of different people behind them, like the
report's other figures. The three breakdowns of one kind (by reason, by effect, by source)
add up to the same total and share their reports, so read across each other they could give
a hidden figure away (a hidden reason less a shown effect): when any figure of one of them
is hidden, every non-zero figure of all three is, and only the total stays.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.models import DeliveryProblem, Enrollment
from dripcourse.people.report_figures import Cell, Figures, Shown, iso
from dripcourse.people.status import WARNING_DAYS

# What a bounce or a complaint did (inbound/bounces.py Effect, inbound/complaints.py
# Reaction, as ``delivery_problems.effect`` holds them), in the order the report lists them.
EFFECTS = {
    "bounce": ("suppress", "soft", "warn", "note"),
    "complaint": ("complained", "unsubscribe", "warn"),
}
DELAY = "delay"  # a delay notice: recorded, never a failure, counted apart
MAIL = "mail"  # our own bounce address; any other source is a provider's webhook


@dataclass(frozen=True)
class _Problem:
    kind: str
    reason: str
    effect: str
    status: str
    source: str
    at: dt.datetime
    person: int  # the subscriber, or 0 for those since forgotten (counted as one person)


def cohort_section(
    session: Session, cohort_id: int, now: dt.datetime, figures: Figures
) -> dict[str, object]:
    """One cohort's bounces, complaints and deliverability warnings in force."""
    query = _query().join(Enrollment, DeliveryProblem.enrollment_id == Enrollment.id)
    return _section(_rows(session, query.where(Enrollment.cohort_id == cohort_id)), now, figures)


def overall_section(session: Session, now: dt.datetime, figures: Figures) -> dict[str, object]:
    """The same for the whole programme: every cohort, and people since forgotten."""
    query = _query().outerjoin(Enrollment, DeliveryProblem.enrollment_id == Enrollment.id)
    return _section(_rows(session, query), now, figures)


def _query():  # type: ignore[no-untyped-def]
    return select(
        DeliveryProblem.kind,
        DeliveryProblem.reason,
        DeliveryProblem.effect,
        DeliveryProblem.status,
        DeliveryProblem.source,
        DeliveryProblem.at,
        Enrollment.subscriber_id,
    )


def _rows(session: Session, query) -> list[_Problem]:  # type: ignore[no-untyped-def]
    return [
        _Problem(kind, reason, effect, status or "", source, at, person or 0)
        for kind, reason, effect, status, source, at, person in session.execute(query)
    ]


def _section(problems: list[_Problem], now: dt.datetime, figures: Figures) -> dict[str, object]:
    section: dict[str, object] = {}
    for kind, name in (("bounce", "bounces"), ("complaint", "complaints")):
        mine = [p for p in problems if p.kind == kind and p.effect != DELAY]
        section[name] = _breakdowns(mine, EFFECTS[kind], figures)
    delays = [p for p in problems if p.kind == "bounce" and p.effect == DELAY]
    section["delays"] = figures.one(_cell(delays))
    section["warnings"] = _warnings(problems, now, figures)
    return section


def _cell(problems: Iterable[_Problem]) -> Cell:
    mine = list(problems)
    return Cell(len(mine), len({p.person for p in mine}))


def _breakdowns(
    problems: list[_Problem], effects: tuple[str, ...], figures: Figures
) -> dict[str, object]:
    """The total, and the reports by reason, by effect and by source (mail first)."""
    seen_effects = sorted({p.effect for p in problems} - set(effects))
    sources = sorted({p.source for p in problems} - {MAIL})
    keys = {
        "reason": sorted({p.reason for p in problems}),
        "effect": [*effects, *seen_effects],
        "source": [MAIL, *sources],
    }
    cells = {
        by: [_cell(p for p in problems if getattr(p, by) == key) for key in wanted]
        for by, wanted in keys.items()
    }
    shown = {by: figures.parts(row) for by, row in cells.items()}
    if any(figures.hidden in row for row in shown.values()):
        shown = {by: [figures.hidden if c.value else 0 for c in row] for by, row in cells.items()}
    out: dict[str, object] = {"total": figures.one(_cell(problems))}
    for by, wanted in keys.items():
        out[f"by_{by}"] = [
            {by: key, "reports": value} for key, value in zip(wanted, shown[by], strict=True)
        ]
    return out


def _warnings(
    problems: list[_Problem], now: dt.datetime, figures: Figures
) -> list[dict[str, object]]:
    """The deliverability warnings in force (``people.status.deliverability_warnings``'s
    rule: blocks about us in the last ``WARNING_DAYS`` days), the most frequent first; the
    moment of the last one only beside a count that is shown."""
    recent = [
        p
        for p in problems
        if p.effect == "warn" and now - dt.timedelta(days=WARNING_DAYS) < p.at <= now
    ]
    grouped: dict[tuple[str, str], list[_Problem]] = defaultdict(list)
    for p in recent:
        grouped[(p.kind, p.reason)].append(p)
    out: list[dict[str, object]] = []
    for (kind, reason), mine in sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        codes: dict[str, int] = defaultdict(int)
        for p in mine:
            if p.status:
                codes[p.status] += 1
        count: Shown = figures.one(_cell(mine))
        out.append(
            {
                "kind": kind,
                "reason": reason,
                "statuses": sorted(codes, key=lambda c: (-codes[c], c))[:3],
                "reports": count,
                "last": iso(max(p.at for p in mine)) if isinstance(count, int) else None,
            }
        )
    return out
