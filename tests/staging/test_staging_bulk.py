"""The writer's bulk statements (``BulkStatement``: compiled once, run through
``exec_driver_sql``) store exactly what ``Connection.execute`` stores, on both backends:
the same text, times, JSON (None is the JSON null, as before), booleans; and the start
checkpoints they write answer the attempts and still name an action they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Text, cast, insert, select

from syncengine.domain import IdentityLink
from syncengine.errors import StagingError
from syncengine.staging.models import AuditEntryRow, IdentityLinkRow
from syncengine.staging.repository import AuditEntry, NewAction, Repository
from syncengine.staging.repository.bulk import BulkStatement

T0 = datetime(2026, 1, 5, 9, 0, 0, 120000, tzinfo=UTC)
COLUMNS = [c.name for c in AuditEntryRow.__table__.c if c.name != "id"]


def stored(repo: Repository) -> list[tuple[object, ...]]:
    """Every audit row as the database holds it (JSON and times as text), in id order."""
    columns = [cast(c, Text) if c.name in ("diffs", "at") else c
               for c in AuditEntryRow.__table__.c if c.name != "id"]  # fmt: skip
    with repo.engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(AuditEntryRow.id)).all()
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    "row",
    [
        {"at": T0, "result": "done", "diffs": None, "email": "a@example.com", "attempts": 1},
        {"at": T0.astimezone(timezone(timedelta(hours=8))), "result": "ok",
         "diffs": {"name": ["张三", "李四"], "n": 2}, "call": "create_user", "attempt": 1,
         "errcode": "60102", "errmsg": "userid exists", "duration_ms": 21},
    ],
)  # fmt: skip
def test_a_bulk_insert_stores_what_execute_stores(staging_repo: Repository, row: dict) -> None:  # type: ignore[type-arg]
    full = {name: row.get(name) for name in COLUMNS}
    with staging_repo.engine.begin() as conn:
        conn.execute(insert(AuditEntryRow), [full])
        assert BulkStatement(insert(AuditEntryRow), COLUMNS).run(conn, [full]) == 1
    first, second = stored(staging_repo)
    assert first == second
    assert (first[COLUMNS.index("diffs")] is None) is False  # None went in as the JSON null


def test_shared_values_are_converted_once_and_equal_per_row_values(
    staging_repo: Repository,
) -> None:
    entries = [AuditEntry(result="ok", action_key=f"k{i}", diffs={"password": "pw"})
               for i in range(3)]  # fmt: skip
    staging_repo.append_audit_many(entries)  # no row has its own time: one shared "at"
    staging_repo.append_audit_many([AuditEntry(result="ok", action_key="k9", at=T0)])
    got = sorted(staging_repo.query_audit(), key=lambda e: e.action_key or "")
    assert [e.action_key for e in got] == ["k0", "k1", "k2", "k9"]
    assert len({e.at for e in got[:3]}) == 1 and got[0].at is not None
    assert got[0].at.tzinfo is not None and got[3].at == T0
    assert got[0].diffs == {"password": "***"}  # redacted as before


def test_links_saved_in_bulk_read_back_whole(staging_repo: Repository) -> None:
    links = [IdentityLink("E1", "a@example.com", T0, None, True),
             IdentityLink("E2", "b@example.com", T0, T0.date(), False)]  # fmt: skip
    assert staging_repo.save_links(links) == 2
    assert staging_repo.save_links([IdentityLink("E1", "c@example.com", T0)]) == 1
    got = staging_repo.load_links()
    assert got["E1"] == IdentityLink("E1", "c@example.com", T0, None, False)
    assert got["E2"] == links[1]
    with staging_repo.engine.connect() as conn:
        updated = conn.execute(select(IdentityLinkRow.updated_at)).scalars().all()
    assert all(u is not None and u.tzinfo is not None for u in updated)
    staging_repo.delete_links(["E1", "E9"])
    assert set(staging_repo.load_links()) == {"E2"}


def test_start_actions_attempts_answers_each_actions_attempts(staging_repo: Repository) -> None:
    repo = staging_repo
    plan = repo.save_plan(
        checksum="f" * 64,
        document="{}",
        actions=[NewAction(seq=i, action_key=f"create_user:w{i}@example.com",
                           kind="create_user", target=f"w{i}@example.com")
                 for i in (1, 2, 3)],
    )  # fmt: skip
    assert repo.start_actions_attempts(plan.id, [3, 1]) == [1, 1]
    assert repo.start_actions_attempts(plan.id, [1, 2], resuming=True) == [2, 1]
    with pytest.raises(StagingError, match=r"action 1 \(create_user w1@example\.com\) is running"):
        repo.start_actions_attempts(plan.id, [1])  # not resuming: refused, and named
    with pytest.raises(StagingError, match="cannot become running"):
        repo.start_actions_attempts(plan.id, [1, 2])
    assert repo.start_actions_attempts(plan.id, []) == []
    states = {a.seq: (a.status, a.attempts) for a in repo.load_actions(plan.id)}
    assert states == {1: ("running", 2), 2: ("running", 1), 3: ("running", 1)}
