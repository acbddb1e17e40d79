"""A plan's document lives apart from its row (migration 0007): a status change does not
write the document again, and the migration moves the documents there and back."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import inspect, text

from syncengine.staging import db as staging_db
from syncengine.staging.models import PlanAction, PlanRow
from syncengine.staging.repository import NewAction, Repository

BEFORE = "0006_groups"
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def _columns(url: str, table: str) -> set[str]:
    engine = staging_db.make_engine(url)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def test_a_status_change_does_not_write_the_document_again(tmp_path: Path) -> None:
    """SQLite rewrites a whole row on UPDATE: with the document in the plan row, each status
    change (two per apply) wrote the whole plan file to the write-ahead log again."""
    path = tmp_path / "staging.db"
    url = f"sqlite:///{path}"
    staging_db.upgrade(url)
    engine = staging_db.make_engine(url)
    repo = Repository(engine)
    try:
        keys = ",".join(f'{{"key": "{i:06d}"}}' for i in range(200_000))
        document = '{"actions": [' + keys + "]}"  # ~3 MB
        action = NewAction(0, "k0", "create_user", "x@example.com")
        record = repo.save_plan(checksum="a" * 64, document=document, actions=[action])
        wal = Path(f"{path}-wal")
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        assert os.path.getsize(wal) == 0

        repo.set_plan_status(record.id, "applying")
        repo.set_plan_status(record.id, "applied")

        written = os.path.getsize(wal)
        assert written < len(document) // 10, f"{written:,} bytes written for two status changes"
        again = repo.load_plan(record.checksum)
        assert again is not None and again.status == "applied" and again.document == document
    finally:
        engine.dispose()


def test_the_header_and_the_document_read_apart(staging_repo: Repository) -> None:
    record = staging_repo.save_plan(checksum="b" * 64, document='{"x": 1}', actions=[],
                                    state_fingerprint="s" * 64)  # fmt: skip
    header = staging_repo.plan_header("b" * 64)
    assert header is not None and not hasattr(header, "document")
    assert (header.id, header.status, header.state_fingerprint) == (record.id, "saved", "s" * 64)
    assert staging_repo.plan_header(record.id) == header
    assert staging_repo.plan_header("c" * 64) is None
    assert staging_repo.plan_document(record.id) == '{"x": 1}'
    assert staging_repo.save_plan(checksum="b" * 64, document="other", actions=[]) == record


def test_0007_moves_the_documents_out_and_back_keeping_every_plan(database_url: str) -> None:
    staging_db.upgrade(database_url, BEFORE)
    assert "document" in _columns(database_url, "plans")
    # The plans table as 0006 left it, for the insert (the models are at head).
    plans_0006 = sa.table("plans", *(sa.column(c.name, c.type) for c in PlanRow.__table__.c),
                          sa.column("document", sa.Text()))  # fmt: skip
    engine = staging_db.make_engine(database_url)
    try:
        with engine.begin() as conn:
            for i, doc in enumerate(['{"plan": "一"}', '{"plan": "two"}'], start=1):
                conn.execute(sa.insert(plans_0006).values(
                    id=i, created_at=T0, run_id=None, checksum=f"{i}" * 64,
                    config_fingerprint=None, state_fingerprint=None, blocked=False,
                    block_reasons=[], document=doc, status="applying"))  # fmt: skip
                conn.execute(sa.insert(PlanAction).values(
                    plan_id=i, seq=0, action_key=f"k{i}", kind="create_user", target="t",
                    employee_id=None, depends_on=[], status="done", attempts=1))  # fmt: skip
    finally:
        engine.dispose()

    staging_db.upgrade(database_url)

    assert "document" not in _columns(database_url, "plans")
    engine = staging_db.make_engine(database_url)
    repo = Repository(engine)
    try:
        one, two = repo.load_plan(1), repo.load_plan("2" * 64)
        assert one is not None and two is not None
        assert (one.document, one.status, two.document) == ('{"plan": "一"}', "applying",
                                                            '{"plan": "two"}')  # fmt: skip
        assert [a.action_key for a in repo.load_actions(1)] == ["k1"]  # not cascaded away
        assert [a.action_key for a in repo.load_actions(2)] == ["k2"]
    finally:
        engine.dispose()

    staging_db.downgrade(database_url, BEFORE)

    assert "document" in _columns(database_url, "plans")
    engine = staging_db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            assert "plan_documents" not in inspect(conn).get_table_names()
            docs = conn.execute(text("SELECT id, document FROM plans ORDER BY id")).all()
            actions = conn.execute(text("SELECT plan_id, action_key FROM plan_actions")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in docs] == [(1, '{"plan": "一"}'), (2, '{"plan": "two"}')]
    assert sorted(tuple(r) for r in actions) == [(1, "k1"), (2, "k2")]
