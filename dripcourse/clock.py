"""The one place the real clock is read; everything below the edges takes ``now``."""

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
