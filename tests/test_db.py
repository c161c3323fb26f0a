"""Database errors never carry statement parameters (a reflection's text) into messages or logs."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from dripcourse import db
from dripcourse.models import Subscriber
from tests.conftest import utc


def test_a_failed_statement_does_not_echo_its_parameters(database_url: str) -> None:
    engine = db.make_engine(database_url)
    row = {
        "email": "dup@example.org",
        "name": "Private Words",
        "timezone": "UTC",
        "created_at": utc(2026, 1, 1),
    }
    with engine.begin() as conn:
        conn.execute(insert(Subscriber), row)
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert(Subscriber), row)
    assert "Private Words" not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
    engine.dispose()
