"""The report's one rule for what may be shown: a count from fewer than N people is hidden.

Kept apart from ``report`` so that each part of the report (``report_delivery`` too) counts
its own figures and hides them the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

Shown = int | str  # a count, or "fewer than N"


@dataclass(frozen=True)
class Cell:
    """One count and how many different people it was counted from."""

    value: int
    people: int


class Figures:
    """Turns cells into what may be shown under a threshold of people."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.hidden = f"fewer than {threshold}"

    def small(self, cell: Cell) -> bool:
        return 0 < cell.people < self.threshold

    def one(self, cell: Cell) -> Shown:
        """A figure on its own: hidden when fewer than ``threshold`` people are behind it."""
        return self.hidden if self.small(cell) else cell.value

    def parts(self, cells: Sequence[Cell]) -> list[Shown]:
        """Figures that add up to a total shown elsewhere: each small one hidden, and when
        exactly one is, the next smallest too, so that no one can subtract their way to it."""
        hide = [self.small(c) for c in cells]
        if sum(hide) == 1:
            others = [i for i, c in enumerate(cells) if not hide[i] and c.people > 0]
            if others:
                hide[min(others, key=lambda i: (cells[i].people, cells[i].value))] = True
        return [self.hidden if h else c.value for c, h in zip(cells, hide, strict=True)]


def cell(value: int) -> Cell:
    """A count of people: its value is the number of people behind it."""
    return Cell(value, value)


def iso(moment: dt.datetime) -> str:
    """A moment as the report writes it: UTC, to the second, with a Z."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
