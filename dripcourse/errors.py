"""Errors a user can cause. Each is caught once at the edge (CLI, web) and shown as one line."""


class DripcourseError(Exception):
    """Base for every error that names a user's mistake rather than a bug."""


class ConfigError(DripcourseError):
    """A setting is missing or wrong."""


class CourseError(DripcourseError):
    """A course folder, lesson file or template is invalid; the message names the file."""


class InputError(DripcourseError):
    """Bad operator input: a CSV row, an address, a time zone, a date."""


class NotFound(DripcourseError):
    """A cohort, course or subscriber named by the operator does not exist."""
