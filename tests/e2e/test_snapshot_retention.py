"""Old snapshots lose their rows, not their meaning (``[database] keep_snapshots``).

Every ingest stores a whole export; without housekeeping the staging database grows by one
export a night, forever (10,000 people: 3.65 million rows a year). Ingest now deletes the rows
(people, departments, problems) of snapshots older than the newest ``keep_snapshots`` complete
ones and keeps their header rows (counts, times) for the shrink brake and the history.

Shown through the real CLI on real SQLite files against the emulator: two companies with the
same HR history, one keeping the fewest snapshots allowed and one keeping all, get the same
plan every night (a leaver, a department rename, a truncated export blocked by the same
baseline), while the first one's database holds the rows of 21 snapshots only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.config import MIN_KEEP_SNAPSHOTS, DatabaseConfig
from syncengine.emulator.harness import RunningEmulator
from syncengine.review import NAME_SNAPSHOTS
from syncengine.service.planning import PREVIOUS_SNAPSHOTS_FOR_MOVES
from syncengine.staging.repository.snapshots import ROWS_FROM
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(300)

NIGHTS = 26


def test_the_minimum_covers_every_window_a_plan_reads() -> None:
    assert MIN_KEEP_SNAPSHOTS >= PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1
    assert MIN_KEEP_SNAPSHOTS >= NAME_SNAPSHOTS
    assert DatabaseConfig().keep_snapshots >= MIN_KEEP_SNAPSHOTS


def hr_on(night: int) -> list[dict[str, str]]:
    """The HR export of ``night``: a leaver on night 4, a department renamed on night 9,
    an export cut to a few rows on the last night."""
    rows = base_rows() + people(30)
    if night >= 4:
        rows = [r for r in rows if r["employee_id"] != "T00100"]
    if night >= 9:
        for r in rows:
            r["departments"] = r["departments"].replace("销售部", "市场销售部")
    if night == NIGHTS:
        rows = rows[:5]
    return rows


def plan_of(env: ApplyEnv, night: int) -> dict[str, Any]:
    path = env.root / f"plan-{night}.json"
    r = env.cli("plan", "--out", str(path))
    assert r.exit_code in (0, 3), r.output
    document = json.loads(path.read_text(encoding="utf-8"))
    return {k: document[k] for k in ("actions", "blocked_reasons", "conflicts", "protected",
                                     "quarantined", "unmanaged", "summary")}  # fmt: skip


def rows_by_snapshot(db: Path) -> tuple[list[int], dict[int, int], set[int]]:
    """Every snapshot header id; the id whose rows each one reads (itself, or the snapshot
    whose rows an unchanged export's snapshot shares); the ids that still have people rows."""
    with sqlite3.connect(db) as conn:
        headers = [i for (i,) in conn.execute("SELECT id FROM snapshots ORDER BY id")]
        owners = {
            i: json.loads(counts or "{}").get(ROWS_FROM, i)
            for i, counts in conn.execute("SELECT id, counts FROM snapshots")
        }
        with_rows = {i for (i,) in conn.execute("SELECT DISTINCT snapshot_id FROM snapshot_people")}
    return headers, owners, with_rows


def test_pruned_and_unpruned_databases_plan_the_same_every_night(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emulator = emulator_factory("v2")
    envs = {}
    for name, keep in (("pruned", MIN_KEEP_SNAPSHOTS), ("kept", 1000)):
        (tmp_path / name).mkdir()
        env = ApplyEnv(tmp_path / name, emulator)
        env.write(hr_on(1), database={"keep_snapshots": keep},
                  policy={"min_existing": 1})  # fmt: skip
        envs[name] = env
    # The first night is applied (the baseline the shrink brake keeps): the first company
    # makes the mailboxes, the second adopts them (links only); then plans only.
    for env in envs.values():
        r = env.cli("apply", str(env.ingest_and_plan()), "--yes", "--force")
        assert r.exit_code == 0, r.output
    for night in range(2, NIGHTS + 1):
        plans = {}
        for name, env in envs.items():
            env.write(hr_on(night))
            r = env.cli("ingest")
            assert r.exit_code == 0, f"{name}, night {night}: {r.output}"
            plans[name] = plan_of(env, night)
        assert plans["pruned"] == plans["kept"], f"night {night}"
    assert plans["pruned"]["blocked_reasons"], "the truncated export is blocked"

    headers, owners, with_rows = rows_by_snapshot(envs["pruned"].db_path)
    assert len(headers) == NIGHTS  # every header stays
    # The rows left are exactly those the newest 21 snapshots read (the quiet nights after
    # the rename share the rename night's rows).
    assert with_rows == {owners[i] for i in headers[-MIN_KEEP_SNAPSHOTS:]}
    assert len(with_rows) < MIN_KEEP_SNAPSHOTS
    headers, owners, with_rows = rows_by_snapshot(envs["kept"].db_path)
    assert with_rows == set(owners.values())


def test_keeping_fewer_snapshots_than_a_plan_reads_is_a_config_error(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows(), database={"keep_snapshots": 5})
    r = env.cli("ingest")
    assert r.exit_code != 0
    assert "database.keep_snapshots" in r.output and str(MIN_KEEP_SNAPSHOTS) in r.output
