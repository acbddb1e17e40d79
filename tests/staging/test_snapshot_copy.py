"""``copy_snapshot``: the set-wise copy an unchanged source's ingest makes (both backends)."""

from __future__ import annotations

import pytest

from syncengine.domain import Department, Person, RowProblem
from syncengine.errors import StagingError
from syncengine.staging.repository import Repository, StoredDepartment


def filled(repo: Repository) -> int:
    snap = repo.begin_snapshot(None, "test")
    repo.add_people(snap, [Person("E2", "乙", "b@example.com"), Person("E1", "甲", "a@x.com")])
    repo.add_departments(snap, [StoredDepartment(Department("总部/研发", "D2"), "D1")])
    repo.add_problems(snap, [RowProblem("bad mobile", 4, "mobile", "12", "E3"),
                             RowProblem("no id", 5)])  # fmt: skip
    repo.complete_snapshot(snap, {"people": 2})
    return snap


def test_the_copy_holds_the_same_rows(staging_repo: Repository) -> None:
    source = filled(staging_repo)
    target = staging_repo.begin_snapshot(None, "test")
    staging_repo.copy_snapshot(source, target)
    assert staging_repo.count_people(target) == 2
    assert staging_repo.load_people(target) == staging_repo.load_people(source)
    assert staging_repo.load_department_rows(target) == staging_repo.load_department_rows(source)
    assert staging_repo.load_problems(target) == staging_repo.load_problems(source)
    assert staging_repo.compare(source, target).counts() == {"new": 0, "changed": 0, "gone": 0}


def test_only_a_loading_snapshot_takes_a_copy(staging_repo: Repository) -> None:
    source = filled(staging_repo)
    with pytest.raises(StagingError, match=f"snapshot {source} is complete"):
        staging_repo.copy_snapshot(source, source)
