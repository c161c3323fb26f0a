"""The operator log: one line per operator action that reads or removes subscribers' data.

Reading reflections is something only operators can do, so each time it happens is written
down: when, who (the operating-system account and host), and what. The file is
``var/operator.log``, readable by its owner only, appended to and never rewritten; each line
also goes to the ``dripcourse.operator`` logger for whoever collects logs centrally.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import socket
from pathlib import Path

LOG_FILE = "operator.log"

log = logging.getLogger("dripcourse.operator")


def operator() -> str:
    """Who is running this command: ``account@host``."""
    try:
        account = getpass.getuser()
    except (KeyError, OSError):
        account = f"uid {os.getuid()}"
    return f"{account}@{socket.gethostname()}"


def record(var_dir: Path, action: str, now: dt.datetime, who: str | None = None) -> str:
    """Append one line saying who did ``action`` and when; returns the line."""
    stamp = now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = f"{stamp} {who or operator()} {action}"
    var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(var_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    log.info("%s", line)
    return line
