"""The dripcourse command, one module per audience: operators (cohorts, progress), program
staff (courses), and the serving commands. Each command is a thin adapter over a core function."""

from __future__ import annotations

from dripcourse.cli import (  # noqa: F401  (they register)
    circle,
    cohorts,
    inbound,
    people,
    privacy,
    progress,
    report,
    serving,
    staff,
    suppressions,
)
from dripcourse.cli.base import cli


def main() -> None:
    cli(prog_name="dripcourse")


__all__ = ["cli", "main"]
