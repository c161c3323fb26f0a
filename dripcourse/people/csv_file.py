"""Reading a cohort's CSV file: every line checked, every problem named by line and column.

This pass reads the file alone and writes nothing; ``importing`` then checks the rows against
the database and enrolls them. It collects every bad line (line, column, reason) rather than
stopping at the first, so an operator fixes the file once rather than once per error, and it
reads the files spreadsheets write: UTF-8 or UTF-16, commas, semicolons or tabs, the header's
usual spellings.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dripcourse.errors import FieldErrors, InputError
from dripcourse.people.signup import Signup, check_signup

CSV_COLUMNS = ("email", "name", "timezone", "greeting", "country")  # the last two optional
# Header spellings people and spreadsheets use, compared without case, spaces, "-" or "_".
HEADER_NAMES = {
    "email": "email",
    "emailaddress": "email",
    "mail": "email",
    "name": "name",
    "fullname": "name",
    "displayname": "name",
    "timezone": "timezone",
    "tz": "timezone",
    "zone": "timezone",
    "greeting": "greeting",
    "salutation": "greeting",
    "country": "country",
    "countrycode": "country",
}
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
SAVE_AS_UTF8 = (
    'save it as UTF-8: in Excel, "Save As" and pick "CSV UTF-8 (Comma delimited)"; in '
    'LibreOffice, tick "Edit filter settings" and pick "Unicode (UTF-8)"'
)
CHUNK = 2000  # rows per INSERT; also how often progress is reported
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Row:
    """One checked line of the file. ``signup.timezone`` is "" when the line gave none and no
    default applies: fine for someone already on record (they keep theirs), an error otherwise."""

    line: int
    signup: Signup


@dataclass
class CsvFile:
    path: Path
    rows: list[Row]
    problems: list[tuple[int, str]]  # (line, "column: reason"): a line may have several
    ignored_columns: list[str]
    repeated: list[tuple[int, int]] = field(default_factory=list)  # (line, same as line)
    delimiter: str = ","

    @property
    def errors(self) -> list[str]:
        """Each problem as ``FILE:LINE: COLUMN: reason``."""
        return [located(self.path, line, problem) for line, problem in self.problems]


def chunks(items: Sequence[Row], size: int = CHUNK) -> Iterator[Sequence[Row]]:
    """``items`` a statement's worth at a time."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_csv(
    path: Path,
    default_timezone: str | None = None,
    progress: Progress | None = None,
    delimiter: str | None = None,
) -> CsvFile:
    """Read and check every line of a CSV file: UTF-8 (with or without BOM) or UTF-16 with
    its BOM (a spreadsheet's "Unicode text"), any line endings, separated by commas,
    semicolons or tabs (found from the header line unless ``delimiter`` is given).

    A problem with the file as a whole (unreadable, no email column) raises InputError; each
    problem with a line is collected in ``problems`` as (line, "column: reason"). A line that
    repeats an earlier one exactly is imported once and listed in ``repeated``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    text = _decode(path, raw)
    delimiter = delimiter or _delimiter(text)
    records = _records(path, text, delimiter)
    _start, first = next(records, (1, []))
    written = [h.strip() for h in first]
    header = [HEADER_NAMES.get(_plain_header(h), h.lower()) for h in written]
    if "email" not in header:
        raise InputError(_no_email_column(path, written, text, delimiter))
    out = CsvFile(
        path,
        [],
        [],
        [w for w, h in zip(written, header, strict=True) if h not in CSV_COLUMNS],
        delimiter=delimiter,
    )
    seen: dict[str, int] = {}
    exact: dict[tuple[str, ...], int] = {}
    for count, (line, fields) in enumerate(records, start=1):
        if progress and count % CHUNK == 0:
            progress(CHUNK)
        if len(fields) > len(header):
            out.problems.append((line, "more fields than the header has columns"))
            continue
        if not any(v.strip() for v in fields):
            continue  # a blank line, or one of only commas
        key = tuple(f.strip() for f in fields) + ("",) * (len(header) - len(fields))
        if key in exact:
            out.repeated.append((line, exact[key]))
            continue
        exact[key] = line
        values = dict(zip(header, fields, strict=False))
        row = _check_row(line, values, default_timezone, out.problems)
        if row is None:
            continue
        if row.signup.email in seen:
            out.problems.append(
                (line, f"email: {row.signup.email} is also on line {seen[row.signup.email]}")
            )
            continue
        seen[row.signup.email] = line
        out.rows.append(row)
    if not out.rows and not out.problems:
        raise InputError(f"{path}: no rows to import")
    return out


def located(path: Path, line: int, problem: str) -> str:
    """A problem with the place it is at, as an editor jumps to it: ``FILE:LINE: problem``."""
    return f"{path}:{line}: {problem}"


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(f"{path}: not readable as UTF-16 text; {SAVE_AS_UTF8}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; {SAVE_AS_UTF8}") from None


def _delimiter(text: str) -> str:
    """The separator of the header line: the one of comma, semicolon and tab it holds most of
    outside quotes (Excel in much of Europe writes semicolons, "Unicode text" tabs)."""
    header = next(csv.reader(io.StringIO(text, newline=""), delimiter="\x00"), [""])
    line = re.sub(r'"[^"]*"', "", header[0] if header else "")
    counts = {d: line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _plain_header(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _no_email_column(path: Path, header: list[str], text: str, delimiter: str) -> str:
    """The error for a header without an email column, naming the column that holds
    addresses when there is one, and the separator it was read with."""
    message = f"{path}:1: the header needs an email column ({','.join(CSV_COLUMNS)})"
    rows = list(
        itertools.islice(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1, 6)
    )
    for index, name in enumerate(header):
        if any(index < len(r) and "@" in r[index] for r in rows):
            return f"{message}; column {name!r} holds addresses: name it email"
    if len(header) == 1:
        return (
            f"{message}; the header was read as one column: is it separated by something "
            "other than commas, semicolons or tabs? (--delimiter)"
        )
    return message


def _records(path: Path, text: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on, counted from 1 as an editor shows it.

    A quoted field may hold line breaks, so a record can span lines; the csv module counts
    the lines read so far, which is where a record ends. Every line belongs to exactly one
    record (a blank line is an empty one), so the next record starts on the line after. A
    record the csv module cannot read (a quote never closed, swallowing the rest of the file
    into one field) is an InputError at the line it starts on.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{path}:{start}: {exc}") from None


def _check_row(
    line: int, values: dict[str, str], default: str | None, problems: list[tuple[int, str]]
) -> Row | None:
    zone = (values.get("timezone") or "").strip() or default or ""
    try:
        # With no zone, the other fields are still checked now; the zone once we know
        # whether the person is on record already.
        signup = check_signup(
            values.get("email") or "",
            values.get("name"),
            zone or "UTC",
            values.get("greeting"),
            values.get("country"),
        )
    except FieldErrors as exc:
        problems.extend((line, problem) for problem in exc.problems)
        return None
    return Row(
        line,
        Signup(
            email=signup.email,
            name=signup.name,
            timezone=zone and signup.timezone,
            greeting=signup.greeting,
            country=signup.country,
        ),
    )
