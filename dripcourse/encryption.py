"""Reflection text sealed at rest under keys of its own (Fernet: AES-CBC with an HMAC).

The reflections key is not the link-signing ``secret_key``: a leaked signing key forges links
but opens nothing in a stolen database, and a stolen database (or a ``pg_dump`` of it) shows
no reflection without this key. Several keys may be given, comma-separated: the first seals,
every one opens, so a new key can be put first and the old rows resealed under it later
(``dripcourse reflections rekey``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from dripcourse.errors import ConfigError

KEY_FILE = "reflections_key"


class WrongReflectionsKey(ConfigError):
    """The configured keys do not open the reflections already stored."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "setting reflections_key: the key(s) given do not open the reflections already "
            "stored (a key is missing or wrong; list the old key after the new one, "
            f"comma-separated){detail}"
        )


def parse_keys(value: str) -> list[str]:
    """The keys in a ``reflections_key`` setting, each checked; ConfigError names the bad one."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ConfigError("setting reflections_key: no key given")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"setting reflections_key: key {number} of {len(keys)} is not a key "
                "(expected 44 characters of URL-safe base64, as made by "
                "`dripcourse reflections new-key`)"
            ) from None
    return keys


def new_key() -> str:
    """A fresh random key, as text for the setting."""
    return Fernet.generate_key().decode("ascii")


class ReflectionCipher:
    """Seals and opens reflection text: the first key seals, every key opens."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("setting reflections_key: no key given")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_setting(cls, value: str) -> ReflectionCipher:
        return cls(parse_keys(value))

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        """The text inside ``sealed``; WrongReflectionsKey if no configured key opens it."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise WrongReflectionsKey() from None

    def reseal(self, sealed: str) -> str:
        """The same text sealed under the first key (for rekeying)."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise WrongReflectionsKey() from None


def key_from_var(var_dir: Path) -> str:
    """The embedded set-up's key: made once, kept in ``var/reflections_key`` (mode 0600).

    Written to a temporary file, flushed to disk, then linked into place: a crash never
    leaves a half-written key (which would lock every reflection away), and of two processes
    starting together the first link wins and both use that key.
    """
    path = var_dir / KEY_FILE
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=var_dir, prefix=".reflections_key.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(new_key() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        # link, unlike rename, refuses to replace a key another process put there first.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        _fsync_dir(var_dir)
    finally:
        os.unlink(temp)
    return path.read_text(encoding="ascii").strip()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "KEY_FILE",
    "ReflectionCipher",
    "WrongReflectionsKey",
    "key_from_var",
    "new_key",
    "parse_keys",
]
