"""The dripcourse command group: shared state, and one-line errors for a user's mistakes."""

from __future__ import annotations

import os

import click
from sqlalchemy.exc import DBAPIError

from dripcourse import db
from dripcourse.courses.course import check_slug
from dripcourse.errors import CourseError, DripcourseError
from dripcourse.runtime import Runtime
from dripcourse.settings import CONFIG_ENV, check_existing_secret_key, load_settings


class Group(click.Group):
    """Shows a user's mistake as one line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except DripcourseError as exc:
            # Several problems (every bad row of an import): each on an Error: line of its own.
            *first, last = str(exc).splitlines() or [""]
            for line in first:
                click.echo(f"Error: {line}", err=True)
            raise click.ClickException(last) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            # A file the operator named that cannot be read or written (--out into a folder
            # that does not exist, a CSV without read permission).
            raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None
        except OverflowError:
            raise click.ClickException(
                "a date or a number given is out of range (a start, --days, --until or --at "
                "beyond the calendar this tool plans in)"
            ) from None
        except DBAPIError as exc:
            # Most often a database nobody ran `init` on (a missing table), or one out of
            # reach: neither is a bug to show as a traceback.
            state = ctx.find_object(State)
            if state is None or not state.has_runtime:
                raise
            engine = state.runtime.engine
            try:
                problem = db.schema_problem(engine)
            except DBAPIError:
                problem = None  # out of reach: said below
            if problem:
                raise click.ClickException(problem) from None
            if db.is_outage(exc):
                raise click.ClickException(db.unavailable(engine, exc)) from None
            raise


class State:
    """Built on first use so --help works even with broken settings."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        if config is not None:
            # dripcourse.tasks reads its settings when imported; make it read the same file.
            os.environ[CONFIG_ENV] = config
        self._runtime: Runtime | None = None
        # Only the commands that make the database (init, run) set this, before first use:
        # any other command run before `init` says so rather than leave an empty file.
        self.creates_database = False

    @property
    def has_runtime(self) -> bool:
        return self._runtime is not None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            settings = load_settings(self.config)
            # A key file left short or empty is refused here, once, before any command claims
            # or sends: every send would otherwise fail on it and spend a subscriber's attempt.
            check_existing_secret_key(settings)
            self._runtime = Runtime(
                settings, create_database=self.creates_database, refuse_newer=True
            )
        return self._runtime


pass_state = click.make_pass_decorator(State)


def first_line(exc: BaseException) -> str:
    """An error's first line: its reason, not the SQL statement a driver error goes on with."""
    return (str(exc).splitlines() or [""])[0]


# Numbers with a floor (or a ceiling) that holds whatever the data: refused when the command
# line is read, as click's usage error (status 2), before anything is opened or started.
PORT = click.IntRange(1, 65535)
DAY_NUMBER = click.IntRange(min=1)


class CourseSlug(click.ParamType):
    """A course's folder name under emails/; anything else (a path, "..") is refused as a
    usage error naming the argument, before a path is made from it."""

    name = "slug"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            return check_slug(str(value))
        except CourseError as exc:
            self.fail(exc.detail, param, ctx)


COURSE = CourseSlug()


@click.group(cls=Group)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="DRIPCOURSE_CONFIG",
    help="TOML settings file (default: config/default.toml when present).",
)
@click.version_option(package_name="dripcourse")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Send a course one lesson a day at each subscriber's local morning."""
    ctx.obj = State(config)
    ctx.call_on_close(lambda: ctx.obj._runtime and ctx.obj._runtime.close())
