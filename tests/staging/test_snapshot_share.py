"""``share_snapshot_rows``: an unchanged source's snapshot reads the rows of the one before
it by reference (both backends): every reader sees what a copy would hold, a shared snapshot
takes no rows of its own, and pruning keeps rows as long as a kept snapshot reads them."""

from __future__ import annotations

import pytest

from syncengine.domain import Department, Person, RowProblem
from syncengine.errors import StagingError
from syncengine.staging.repository import Repository, StoredDepartment


def filled(repo: Repository, *people: Person) -> int:
    snap = repo.begin_snapshot(None, "test")
    repo.add_people(snap, people or [Person("E2", "乙", "b@example.com"),
                                     Person("E1", "甲", "a@x.com")])  # fmt: skip
    repo.add_departments(snap, [StoredDepartment(Department("总部/研发", "D2"), "D1")])
    repo.add_problems(snap, [RowProblem("bad mobile", 4, "mobile", "12", "E3"),
                             RowProblem("no id", 5)])  # fmt: skip
    repo.complete_snapshot(snap, {"people": 2})
    return snap


def shared(repo: Repository, source: int, counts: dict[str, object] | None = None) -> int:
    target = repo.begin_snapshot(None, "test")
    repo.share_snapshot_rows(source, target)
    repo.complete_snapshot(target, counts or {"people": 2})
    return target


def reads(repo: Repository, snap: int) -> tuple[object, ...]:
    """Everything a consumer reads of a snapshot's rows."""
    return (
        repo.count_people(snap),
        repo.load_people(snap),
        repo.load_people(snap, ["E1"]),
        repo.load_people_bulk(snap),
        repo.load_department_rows(snap),
        repo.load_problems(snap),
        repo.snapshot_digest(snap),
        repo.department_keys([snap]),
    )


def table_rows(repo: Repository, table: str) -> int:
    from sqlalchemy import text

    with repo._engine.connect() as conn:  # what is stored, not what is read
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_a_shared_snapshot_reads_like_a_copy_and_stores_no_row(staging_repo: Repository) -> None:
    repo = staging_repo
    source = filled(repo)
    stored = table_rows(repo, "snapshot_people"), table_rows(repo, "snapshot_problems")
    target = repo.begin_snapshot(None, "test")
    assert repo.share_snapshot_rows(source, target) == source
    assert reads(repo, target) == reads(repo, source)  # while loading, too
    info = repo.complete_snapshot(target, {"people": 2})
    assert info.is_current
    assert reads(repo, target) == reads(repo, source)
    assert repo.compare(source, target).counts() == {"new": 0, "changed": 0, "gone": 0}
    assert (table_rows(repo, "snapshot_people"), table_rows(repo, "snapshot_problems")) == stored
    # A share of a share reads the first snapshot's rows (never a chain).
    third = shared(repo, target)
    assert repo.get_snapshot(third).counts == repo.get_snapshot(target).counts  # type: ignore[union-attr]
    assert reads(repo, third) == reads(repo, source)


def test_a_changed_snapshot_after_a_shared_one_is_seen(staging_repo: Repository) -> None:
    repo = staging_repo
    first = filled(repo)
    quiet = shared(repo, first)
    changed = filled(repo, Person("E1", "甲", "a@x.com"), Person("E3", "丙", "c@x.com"))
    diff = repo.compare(quiet, changed)
    assert (diff.new, diff.changed, diff.gone) == (("E3",), (), ("E2",))
    assert repo.snapshot_digest(changed) != repo.snapshot_digest(quiet)
    assert repo.department_keys([quiet, changed]) == {("总部/研发", "D2")}


def test_the_reference_is_the_headers_own_not_one_carried_in_counts(
    staging_repo: Repository,
) -> None:
    repo = staging_repo
    first = filled(repo)
    quiet = shared(repo, first)
    carried = repo.get_snapshot(quiet).counts  # type: ignore[union-attr]
    # A snapshot read again, completed with the counts of a shared one, owns its rows.
    own = repo.begin_snapshot(None, "test")
    repo.add_people(own, [Person("E7", "丁", "d@x.com")])
    repo.complete_snapshot(own, carried)
    assert [p.employee_id for p in repo.load_people(own)] == ["E7"]
    assert repo.get_snapshot(own).counts == {"people": 2}  # type: ignore[union-attr]


def test_only_a_loading_snapshot_without_rows_shares(staging_repo: Repository) -> None:
    repo = staging_repo
    source = filled(repo)
    with pytest.raises(StagingError, match=f"snapshot {source} is complete"):
        repo.share_snapshot_rows(source, source)
    target = repo.begin_snapshot(None, "test")
    with pytest.raises(StagingError, match="does not exist"):
        repo.share_snapshot_rows(source + 1000, target)
    repo.add_people(target, [Person("E9", "戊", "e@x.com")])
    with pytest.raises(StagingError, match="has people of its own"):
        repo.share_snapshot_rows(source, target)
    other = repo.begin_snapshot(None, "test")
    repo.share_snapshot_rows(source, other)
    with pytest.raises(StagingError, match="shares another snapshot's rows"):
        repo.add_people(other, [Person("E9", "戊", "e@x.com")])


def test_pruning_keeps_rows_a_kept_snapshot_shares(staging_repo: Repository) -> None:
    repo = staging_repo
    first = filled(repo)
    quiet = [shared(repo, first) for _ in range(3)]
    # Every snapshot but the newest two loses its rows, but the newest read the first one's.
    assert repo.prune_snapshot_rows(keep=2) == 0
    assert reads(repo, quiet[-1]) == reads(repo, first)
    # Once the kept snapshots have rows of their own, the shared rows go.
    changed = filled(repo, Person("E1", "甲", "a@x.com"))
    again = filled(repo, Person("E1", "甲", "a@x.com"))
    assert repo.prune_snapshot_rows(keep=2) == 1
    assert repo.load_people(first) == [] and repo.load_people(quiet[0]) == []
    assert [p.employee_id for p in repo.load_people(changed)] == ["E1"]
    assert [p.employee_id for p in repo.load_people(again)] == ["E1"]
