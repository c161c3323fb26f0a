"""Errors a user can cause. Each is caught once at the edge (CLI, web) and shown as one line."""

from __future__ import annotations


class DripcourseError(Exception):
    """Base for every error that names a user's mistake rather than a bug."""


class ConfigError(DripcourseError):
    """A setting is missing or wrong."""


class CourseError(DripcourseError):
    """A course folder, lesson file or template is invalid; the message names the file.

    ``path`` and ``line`` (counted in the file, from 1) say where when it is known, and
    ``detail`` is the message without them, so ``check`` can list problems by place.
    """

    def __init__(
        self, message: str, *, path: object = None, line: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.detail = detail or message

    @classmethod
    def at(cls, path: object, line: int | None, detail: str) -> CourseError:
        """An error shown as ``file:line: detail``."""
        where = f"{path}:{line}" if line else f"{path}"
        return cls(f"{where}: {detail}", path=path, line=line, detail=detail)


class InputError(DripcourseError):
    """Bad operator input: a CSV row, an address, a time zone, a date."""


class FieldErrors(InputError):
    """Several of one person's details are wrong: ``problems`` holds each as "field: reason",
    so a CSV line lists them all; shown in one line they are joined by "; "."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class NotSetUp(DripcourseError):
    """The database has not been made yet: `dripcourse init` makes it."""


class NotFound(DripcourseError):
    """A cohort, course or subscriber named by the operator does not exist."""


class MigrationRefused(DripcourseError):
    """A schema migration would leave rows pointing at rows that are gone, or the database is
    at a revision of a newer release; nothing changed."""
