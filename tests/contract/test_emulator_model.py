"""The emulator's directory model without HTTP: invariants under random operation sequences
(hypothesis) and the state file round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine.emulator.model import ROOT_ID, ApiError, Directory, SeedError
from syncengine.emulator.seed import default_seed

pytestmark = pytest.mark.timeout(120)

NAMES = st.sampled_from(["甲", "乙", "丙", "丁", "a", "b"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), NAMES, st.integers(0, 30)),
        st.tuples(st.just("move"), st.integers(0, 30), st.integers(0, 30)),
        st.tuples(st.just("rename"), st.integers(0, 30), NAMES),
        st.tuples(st.just("delete"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("path"), st.lists(NAMES, min_size=1, max_size=7), st.just(0)),
    ),
    max_size=40,
)


def check_tree(d: Directory) -> None:
    ids = set(d.depts)
    assert d.depts[ROOT_ID].parentid == 0
    for dept in d.depts.values():
        if dept.id == ROOT_ID:
            continue
        assert dept.parentid in ids
        assert 1 <= d.depth(dept.id) <= 5  # also proves there is no cycle (depth terminates)
    for parent in ids:
        names = [c.name for c in d.children(parent)]
        assert len(names) == len(set(names)), "sibling names must be unique"
    for user in d.users.values():
        assert set(user.department) <= ids
    assert d.subtree(ROOT_ID)[0] == ROOT_ID and sorted(d.subtree(ROOT_ID)) == sorted(ids)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_department_operations_keep_the_tree_valid(ops: list[tuple[Any, Any, Any]]) -> None:
    d = Directory(default_seed())
    for op, a, b in ops:
        ids = sorted(d.depts)
        try:
            if op == "create":
                d.create_dept(a, ids[b % len(ids)])
            elif op == "move":
                d.update_dept(ids[a % len(ids)], parentid=ids[b % len(ids)])
            elif op == "rename":
                d.update_dept(ids[a % len(ids)], name=b)
            elif op == "delete":
                d.delete_dept(ids[a % len(ids)])
            else:
                path = "/".join(a)
                dept_id = d.ensure_path(path)
                assert d.path_of(dept_id) == path
                assert d.find_path(path) == dept_id
        except ApiError as exc:
            assert exc.v1 in (1100, 1310, 1311)
        check_tree(d)


def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    d = Directory(default_seed(), state_file=state_file)
    dept = d.ensure_path("新/部门")
    d.create_user(
        {
            "userid": "rt@example.com",
            "name": "往返",
            "department": [dept],
            "password": "Init#2026pass",
            "slaves": ["rt2@example.com"],
        }
    )
    d.deliver_mail("rt@example.com", "s@example.net", "hi")
    d.issue_token("v2", "contacts", 7200)
    again = Directory({"corp_id": "ignored", "domains": ["x.example"]}, state_file=state_file)
    assert again.dump_full() == d.dump_full()
    assert again.resolve("rt2@example.com") == "rt@example.com"
    again.load_seed(again.seed)  # the kept seed (passwords hashed) reseeds cleanly
    assert "rt@example.com" not in again.users and len(again.users) == 6


def test_a_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(SeedError, match="state file"):
        Directory(default_seed(), state_file=state_file)


def test_journal_versions_strictly_increase() -> None:
    d = Directory(default_seed(), clock=lambda: 1_700_000_000.0)  # a frozen clock
    for i in range(5):
        d.create_user(
            {
                "userid": f"j{i}@example.com",
                "name": "J",
                "department": [],
                "password": "Init#2026pass",
            }
        )
    versions = [v for v, _, _ in d.journal]
    assert versions == sorted(set(versions)) and versions[0] >= 1_700_000_000_000
