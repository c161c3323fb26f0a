"""The header values of the mail we send: From, To, Subject, List-Id, written for the wire.

Plain ASCII goes out as written; anything else as one RFC 2047 encoded word, and a value with
a line break in it is refused before it can open a header of its own.
"""

from __future__ import annotations

from email.charset import QP, Charset
from email.header import Header
from email.policy import compat32
from email.utils import formataddr, parseaddr
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dripcourse.courses.course import Course
    from dripcourse.courses.render import Personal

# CRLF as on the wire, and no ">From" mangling of lines that start with "From ".
WIRE_POLICY = compat32.clone(linesep="\r\n", mangle_from_=False)


def check_header_values(subject: str, who: Personal) -> None:
    """Refuse a value that would break out of its header line (both message paths call this)."""
    for name, value in (("Subject", subject), ("To", who.name), ("To", who.email)):
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in the {name} header: {value!r}")


def subject_header(subject: str) -> str | Header:
    """The Subject value: as written when it is plain, else encoded (RFC 2047)."""
    return subject if _plain(subject) else Header(subject, "utf-8")


def sender_header(sender: str) -> str:
    """The From value for a course's ``sender`` ("Name <address>")."""
    return _address(*parseaddr(sender))


def list_id(course: Course) -> str:
    """The course's List-Id (RFC 2919): its title and ``<slug.sender-domain>``, one per course,
    so a reader's mail program can sort or filter a course's lessons as one list."""
    domain = parseaddr(course.sender)[1].rpartition("@")[2] or "localhost"
    return _address(course.title, f"{course.slug}.{domain}")


def to_header(who: Personal) -> str:
    """The To value for one recipient."""
    return _address(who.name, who.email)


def _address(name: str, addr: str) -> str:
    # One encoded word for a non-ASCII name: some readers put spaces between the words of a
    # folded name. Names are at most 100 characters (enroll checks), so the line stays legal.
    if not name:
        return addr
    if _plain(name):
        return formataddr((name, addr))
    return f"{_UTF8_WORDS.header_encode(name)} <{addr}>"


def _plain(value: str) -> bool:
    """Whether header text can go out as written: ASCII, and nothing a reader would decode.

    ASCII text holding "=?" could read as an encoded word (``=?utf-8?q?x?=`` shows as "x"),
    so it is encoded like non-ASCII text.
    """
    return value.isascii() and "=?" not in value


_UTF8_WORDS = Charset("utf-8")


def _qp_utf8() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return charset


# Bodies as quoted-printable UTF-8: every line under 998 octets and the text readable in the
# source (the lessons' parts and the small notices alike).
QP_UTF8 = _qp_utf8()
