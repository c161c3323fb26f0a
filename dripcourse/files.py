"""Private files: folders 0700 and files 0600, whatever the umask, written whole or not at all.

var/ holds the signing key, the databases (with people's reflections) and the outbox (with
working links). A 0644 file in a 0755 folder is readable by every account on the machine, and
the umask is the operator's, not ours: so modes are given when a file is created, and fixed
with chmod afterwards when something else (SQLite, dbm) has created it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700; returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is 0600, keeping what it holds; returns it.

    For files another library writes (SQLite, dbm): created here first with our mode, they
    keep it, and SQLite gives its -wal and -shm files the mode of the database file.

    An existing file is never opened, only changed by name: closing any descriptor of a file
    drops every POSIX lock this process holds on it, and SQLite keeps its locks that way. A
    second engine in a process that already has the database open (``dripcourse run`` serves
    the pages with one of its own) would otherwise make SQLite think nobody has the file open,
    and the next connection to close would delete the write-ahead log under the others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        if path.stat().st_uid == os.geteuid():  # another account's file keeps its modes
            os.chmod(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
    finally:
        os.close(fd)
    return path


def private_sqlite_file(path: Path) -> Path:
    """Make a SQLite database file 0600 before SQLite opens it, its folder 0700 if new.

    SQLite gives the -wal, -shm and -journal files it makes beside a database the database
    file's own mode, so they are private too.
    """
    if not path.parent.exists():
        private_dir(path.parent)
    return private_file(path)


def write_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` whole, 0600, unless ``path`` exists; True if this call wrote it.

    The data goes to a temporary file in the same folder, is flushed to disk, and is then
    linked under its name: a reader sees either no file or all of it, never an empty one, and
    a crash leaves at most a stray temporary file. Linking (unlike renaming) never replaces a
    file that another process published first, so two processes starting together agree.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_replacing(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole, 0600, replacing what was there (rename last)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
