"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic import command

from dripcourse import db


def test_migrations_match_the_models(database_url: str) -> None:
    engine = db.make_engine(database_url)
    cfg = db.alembic_config(database_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if autogenerate would find any difference
    engine.dispose()


def test_upgrade_is_repeatable_and_downgrade_removes_everything(database_url: str) -> None:
    engine = db.make_engine(database_url)
    db.upgrade(engine)  # already at head: nothing to do, no error
    cfg = db.alembic_config(database_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        tables = set(engine.dialect.get_table_names(conn)) - {"alembic_version"}
    assert tables == set()
    db.upgrade(engine)
    engine.dispose()
