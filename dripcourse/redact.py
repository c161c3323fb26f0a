"""URLs as they may be printed or logged: with any password in them replaced by ``***``.

Settings hold credentials inside URLs (``smtp://user:password@relay``,
``redis://:password@host``, ``postgresql://user:password@db``, or ``?password=`` in the
query). Anything the project prints or logs goes through ``redact_url`` first, so a terminal
scroll-back, a log file or an error report never carries one.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

HIDDEN = "***"
# Query parameters that carry a secret in the URLs we take (psycopg, redis-py, kombu).
_SECRET_PARAMS = {"password", "passwd", "pass", "secret", "token", "access_token"}


def _unencoded_password_hidden(url: str) -> str:
    """``url`` with a password holding an unencoded ``/``, ``?`` or ``#`` hidden.

    Such a password ends the authority early for a URL parser (``imaps://u:Hunter2/xyz@host``
    reads as host ``u``, port ``Hunter2``), which then finds no password at all. Everything
    from the first ``:`` after the user up to the last ``@`` is taken for the password: a
    stray ``@`` further on hides more than needed, never less.
    """
    scheme, sep, rest = url.partition("://")
    user, colon, _ = rest.partition(":")
    at = rest.rfind("@")
    if not sep or not colon or at < len(user) or any(c in user for c in "/?#@"):
        return url
    return f"{scheme}://{user}:{HIDDEN}{rest[at:]}"


def redact_url(url: str) -> str:
    """``url`` with the password of its user part and of any secret parameter hidden."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        # Not parseable as a URL (a bad port, stray brackets): show only its scheme.
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://{HIDDEN}" if scheme.isalnum() else HIDDEN
    out = url
    if has_password:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        out = out.replace(f"//{parts.netloc}", f"//{user}:{HIDDEN}@{hostport}", 1)
    else:
        out = _unencoded_password_hidden(out)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
        query = urlencode(
            [(k, HIDDEN if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        out = f"{out.partition('?')[0]}?{query}{fragment}"
    return out
