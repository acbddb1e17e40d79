"""An ingest of an unchanged source reuses the previous snapshot instead of re-reading it.

The samples (a GB18030 CSV export with quarantined rows, a department table in its own CSV)
through the real ``ingest`` command into a real database (SQLite and PostgreSQL): the same
bytes under the same config give a new snapshot sharing the previous one's rows, equal in
everything a consumer reads to what a re-read gives; one changed byte, a changed department
file or a changed config reads the source again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncengine.emulator.harness import RunningEmulator
from syncengine.holds import from_snapshot_counts
from syncengine.staging.repository import Repository
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people, person
from tests.e2e.test_ingest import (  # noqa: F401  (fixtures)
    demo,
    edit_config,
    ingest_json,
    read_export,
    repo_of,
    write_export,
)

CONSUMED = ("rows", "people", "departments", "quarantined", "problems")
"""The counts a consumer reads that do not depend on the previous snapshot."""


def touch(path: Path, seconds_later: float) -> float:
    """Give ``path`` a modification time ``seconds_later`` than it has (HR re-exported)."""
    when = path.stat().st_mtime + seconds_later
    os.utime(path, (when, when))
    return when


def same_for_consumers(repo: Repository, a: int, b: int) -> None:
    """Snapshots ``a`` and ``b`` hold the same people, departments, problems and holds."""
    assert repo.load_people(a) == repo.load_people(b)
    assert repo.load_department_rows(a) == repo.load_department_rows(b)
    assert repo.load_problems(a) == repo.load_problems(b)
    sa, sb = repo.get_snapshot(a), repo.get_snapshot(b)
    assert sa is not None and sb is not None
    assert from_snapshot_counts(sa.counts) == from_snapshot_counts(sb.counts)
    assert sa.counts["quarantined_ids"] == sb.counts["quarantined_ids"]


def reported(data: dict[str, Any]) -> dict[str, Any]:
    """An ingest report without what differs between any two ingests."""
    left_out = {"run_id", "snapshot_id", "previous_snapshot_id", "seconds", "source_unchanged"}
    out = {k: v for k, v in data.items() if k not in left_out}
    out["counts"] = {k: v for k, v in data["counts"].items() if k in CONSUMED}
    return out


def test_an_unchanged_source_is_copied_not_read(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    first = ingest_json(demo)
    assert first["source_unchanged"] is False
    assert first["problems"] and first["quarantined_ids"]  # the samples hold bad rows
    second = ingest_json(demo)
    assert second["source_unchanged"] is True
    assert second["snapshot_id"] != first["snapshot_id"]
    assert second["previous_snapshot_id"] == first["snapshot_id"]
    counts = second["counts"]
    assert isinstance(counts, dict)
    assert (counts["new"], counts["changed"], counts["gone"]) == (0, 0, 0)
    assert reported(second) == reported(first)
    repo = repo_of(demo)
    current = repo.current_snapshot()
    assert current is not None and current.id == second["snapshot_id"]
    same_for_consumers(repo, first["snapshot_id"], second["snapshot_id"])

    third = ingest_json(demo)  # a copy of a copy is still the same snapshot
    assert third["source_unchanged"] is True
    same_for_consumers(repo, first["snapshot_id"], third["snapshot_id"])


def test_the_copy_is_a_new_snapshot_with_the_new_export_time(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    """HR wrote the same bytes again tonight: freshness and the hook overlay take the new
    export time, as they would from a re-read."""
    first = ingest_json(demo)
    when = touch(demo.parent / "hr-export.csv", 3600)
    second = ingest_json(demo)
    assert second["source_unchanged"] is True
    repo = repo_of(demo)
    old, new = repo.get_snapshot(first["snapshot_id"]), repo.get_snapshot(second["snapshot_id"])
    assert old is not None and new is not None
    assert new.as_of == datetime.fromtimestamp(when, UTC)
    assert new.as_of > old.as_of and new.created_at >= old.created_at
    assert new.is_current and not old.is_current


def test_one_changed_byte_is_read_again(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    ingest_json(demo)
    rows = read_export(demo.parent)
    rows[4]["职位"] = rows[4]["职位"][:-1] + ("甲" if rows[4]["职位"][-1:] != "甲" else "乙")
    write_export(demo.parent, rows)
    second = ingest_json(demo)
    assert second["source_unchanged"] is False
    counts = second["counts"]
    assert isinstance(counts, dict)
    assert counts["changed"] == 1


def test_a_byte_that_changes_no_record_is_still_read_again(
    demo: Path,  # noqa: F811
) -> None:
    """The digest is of the bytes, not of what they mean: a trailing new line is a new file."""
    ingest_json(demo)
    path = demo.parent / "hr-export.csv"
    path.write_bytes(path.read_bytes() + b"\r\n")
    second = ingest_json(demo)
    assert second["source_unchanged"] is False
    counts = second["counts"]
    assert isinstance(counts, dict)
    assert (counts["new"], counts["changed"], counts["gone"]) == (0, 0, 0)
    assert ingest_json(demo)["source_unchanged"] is True


def test_a_changed_department_file_is_read_again(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    first = ingest_json(demo)
    path = demo.parent / "departments.csv"
    text = path.read_bytes()
    path.write_bytes(text + b"\r\n")
    second = ingest_json(demo)
    assert second["source_unchanged"] is False
    same_for_consumers(repo_of(demo), first["snapshot_id"], second["snapshot_id"])


def test_a_changed_mapping_or_config_is_read_again(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    first = ingest_json(demo)
    edit_config(demo, 'position = "职位"', 'position = "部门名称"')  # a column nobody has
    second = ingest_json(demo)
    assert second["source_unchanged"] is False
    assert second["warnings"] and not first["warnings"]
    repo = repo_of(demo)
    people = {p.employee_id: p for p in repo.load_people(second["snapshot_id"])}
    assert all(p.position in ("", None) for p in people.values())

    edit_config(demo, 'position = "部门名称"', 'position = "职位"')
    third = ingest_json(demo)
    assert third["source_unchanged"] is False  # back to the first config: read again
    fourth = ingest_json(demo)
    assert fourth["source_unchanged"] is True
    assert fourth["warnings"] == third["warnings"] == []
    same_for_consumers(repo, first["snapshot_id"], fourth["snapshot_id"])


def test_a_missing_file_still_fails_after_a_copy(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    ingest_json(demo)
    good = ingest_json(demo)
    assert good["source_unchanged"] is True
    shutil.move(demo.parent / "hr-export.csv", demo.parent / "elsewhere.csv")
    from tests.e2e.test_ingest import ingest

    result = ingest(demo)
    assert result.exit_code == 1
    assert "file not found" in result.stderr and "hr-export.csv" in result.stderr
    repo = repo_of(demo)
    current = repo.current_snapshot()
    assert current is not None and current.id == good["snapshot_id"]
    assert repo.list_snapshots(limit=1)[0].status == "failed"


def test_quiet_nights_copy_and_every_consumer_sees_the_new_snapshot(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """``sync`` on nights when HR re-exported the same file: no write, the report says
    nobody changed, ``plan`` names the newest snapshot and does not call it stale; then a
    real change in the file is read and applied."""
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows() + people(3))
    assert env.cli("sync").exit_code == 0
    mark = env.emulator.calls()[-1]["seq"]
    for night in (2, 3):
        touch(env.root / "hr.csv", 3600 * night)
        r = env.cli("sync", "--json")
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
        assert report["snapshot"]["id"] == night
        assert report["snapshot"]["source_unchanged"] is True
        assert report["snapshot"]["counts"]["changed"] == 0
        assert report["plan"]["has_changes"] is False
    assert env.write_calls(mark) == []
    plan = json.loads(env.cli("plan", "--json").stdout)
    assert plan["snapshot"]["snapshot_id"] == 3 and plan["snapshot"]["stale"] is False

    env.write([*env.rows, person("T09999", "新来的", "xinlaide@example.com", "销售部")])
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["snapshot"]["source_unchanged"] is False
    assert report["snapshot"]["counts"]["new"] == 1
    assert any(c["endpoint"].endswith("user/create") for c in env.write_calls(mark))
    env.assert_converged()


def test_the_text_output_says_the_records_were_copied(demo: Path) -> None:  # noqa: F811
    from tests.e2e.test_ingest import ingest

    first = ingest(demo)
    assert first.exit_code == 0 and "Read 301 records from CSV file" in first.stdout
    second = ingest(demo)
    assert second.exit_code == 0, second.output
    assert "is unchanged since snapshot 1 (same bytes, same config)" in second.stdout
    assert "301 records are reused, not read or copied" in second.stdout
    assert "Snapshot 2 is now current (previous: 1)" in second.stdout
    assert first.stdout.split("Problems", 1)[1] == second.stdout.split("Problems", 1)[1]


def test_an_unchanged_xlsx_or_json_lines_export_is_copied_too(
    demo: Path,  # noqa: F811
    repo_of: Callable[[Path], Repository],  # noqa: F811
) -> None:
    from_csv = ingest_json(demo)
    edit_config(
        demo,
        'type = "csv"\npath = "hr-export.csv"',
        'type = "xlsx"\npath = "hr-export.xlsx"\nsheet = "员工"',
    )
    first = ingest_json(demo)
    assert first["source_unchanged"] is False  # another source: read
    second = ingest_json(demo)
    assert second["source_unchanged"] is True and reported(second) == reported(first)
    repo = repo_of(demo)
    same_for_consumers(repo, from_csv["snapshot_id"], second["snapshot_id"])

    lines = [json.dumps(r, ensure_ascii=False) for r in read_export(demo.parent)]
    (demo.parent / "hr.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    edit_config(
        demo,
        'type = "xlsx"\npath = "hr-export.xlsx"\nsheet = "员工"',
        'type = "jsonl"\npath = "hr.jsonl"',
    )
    third = ingest_json(demo)
    assert third["source_unchanged"] is False
    assert ingest_json(demo)["source_unchanged"] is True
    (demo.parent / "hr.jsonl").write_text("\n".join(lines[:-1]) + "\n", "utf-8")
    last = ingest_json(demo)
    assert last["source_unchanged"] is False
    counts, before = last["counts"], third["counts"]
    assert isinstance(counts, dict) and isinstance(before, dict)
    assert counts["rows"] == before["rows"] - 1
