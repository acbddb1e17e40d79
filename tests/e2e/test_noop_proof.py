"""A quiet nightly ``sync`` is proved unchanged, and only when it is (service/noop_proof.py).

The real CLI (and, for the calendar, the real ``sync`` use case with a chosen clock), a real
SQLite file and the emulator over real HTTP: after a night whose plan was empty, the next
identical night re-makes that plan without a diff and reports it like a planned one; a mailbox
edited behind the engine's back, one HR row changed, a changed config, or a day past a start
date's creation window each make the engine plan in full (and find the change).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import Plan
from syncengine.service.engine import open_staging
from syncengine.service.noop_proof import MEMO_CURSOR
from tests.e2e.test_apply_support import COLUMNS, ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["v2", "v1"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory(request.param))
    e.write(base_rows() + people(12))
    return e


def sync_json(env: ApplyEnv) -> dict[str, Any]:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def quiet(env: ApplyEnv) -> dict[str, Any]:
    """Apply what HR wants, then one full empty night (which leaves the memo)."""
    first = sync_json(env)
    assert first["plan"]["has_changes"] is True
    full = sync_json(env)
    assert full["plan"]["has_changes"] is False and full["plan"]["proved_unchanged"] is False
    return full


def stored_plan(env: ApplyEnv, plan_id: int) -> Plan:
    with open_staging(env.config()) as repo:
        record = repo.load_plan(plan_id)
    assert record is not None
    return Plan.from_json(record.document)


def timeless(plan: Plan) -> dict[str, Any]:
    """A plan's document without what differs between two makings of the same plan."""
    return {k: v for k, v in plan.to_dict().items()
            if k not in {"created_at", "checksum", "signature"}}  # fmt: skip


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A sync report without its ids, times, the flag, and the read's calls (Gen 1 reads
    fewer members on a night after a night without writes, proved or not)."""
    left_out = {"run_id", "started_at", "seconds", "api_calls", "api_calls_by_call"}
    out = {k: v for k, v in report.items() if k not in left_out}
    out["plan"] = {k: v for k, v in report["plan"].items()
                   if k not in {"id", "checksum", "proved_unchanged"}}  # fmt: skip
    out["snapshot"] = {k: v for k, v in report["snapshot"].items() if k != "id"}
    return out


def test_a_quiet_night_is_proved_and_reported_as_a_planned_one(env: ApplyEnv) -> None:
    full = quiet(env)
    env.emulator.clear_calls()
    proved = sync_json(env)
    assert proved["plan"]["proved_unchanged"] is True
    assert proved["status"] == "succeeded" and proved["exit_code"] == 0
    assert comparable(proved) == comparable(full)  # same keys, same figures, same calls
    if env.emulator.api == "v2":  # the same three calls as a full quiet night
        assert proved["api_calls_by_call"] == full["api_calls_by_call"]
    assert not set(env.emulator.call_counts()) & {"user/update", "user/create", "user/sync"}
    # the plan is the full planner's, made again: a `plan` now (a full diff) says the same
    r = env.cli("plan", "--json")
    assert r.exit_code == 0, r.output
    planned = json.loads(r.stdout)
    assert timeless(stored_plan(env, proved["plan"]["id"])) == timeless(
        stored_plan(env, planned["plan_id"])
    )
    assert timeless(stored_plan(env, proved["plan"]["id"])) == timeless(
        stored_plan(env, full["plan"]["id"])
    )
    # the run rows: a plan run and a sync run, as a planned night records them
    with open_staging(env.config()) as repo:
        runs = {r.id: r for r in repo.list_runs(limit=10)}
        record = repo.load_plan(proved["plan"]["id"])
    assert record is not None and record.run_id is not None
    assert (runs[proved["run_id"]].kind, runs[proved["run_id"]].status) == ("sync", "succeeded")
    assert (runs[record.run_id].kind, runs[record.run_id].status) == ("plan", "succeeded")
    assert sync_json(env)["plan"]["proved_unchanged"] is True  # and again the next night


def test_a_mailbox_edited_behind_the_engines_back_is_planned_and_put_back(env: ApplyEnv) -> None:
    quiet(env)
    address = "t101@example.com"
    env.emulator.control("POST", "user", {"userid": address, "position": "厨师"})
    night = sync_json(env)
    assert night["plan"]["proved_unchanged"] is False
    assert night["plan"]["summary"]["update_user"] == 1
    assert night["applied"] is not None
    after = sync_json(env)  # put back: the next night is empty, planned in full (new memo)
    assert after["plan"]["has_changes"] is False and after["plan"]["proved_unchanged"] is False
    assert sync_json(env)["plan"]["proved_unchanged"] is True


def test_one_hr_row_changed_is_planned(env: ApplyEnv) -> None:
    quiet(env)
    rows = [dict(r) for r in env.rows]
    rows[-1]["position"] = "厨师"
    env.write(rows)
    night = sync_json(env)
    assert night["plan"]["proved_unchanged"] is False
    assert night["plan"]["summary"]["update_user"] == 1


def test_a_changed_config_is_planned(env: ApplyEnv) -> None:
    quiet(env)
    env.write(apply={"max_attempts": 11})  # changes no decision, but the config is another
    night = sync_json(env)
    assert night["plan"]["proved_unchanged"] is False and night["plan"]["has_changes"] is False
    assert sync_json(env)["plan"]["proved_unchanged"] is True


def test_a_lost_memo_or_plan_just_plans(env: ApplyEnv) -> None:
    quiet(env)
    with open_staging(env.config()) as repo:
        repo.set_cursor(MEMO_CURSOR, '{"version": 1, "key": 3}')  # unreadable
    assert sync_json(env)["plan"]["proved_unchanged"] is False
    assert sync_json(env)["plan"]["proved_unchanged"] is True


# --- the calendar: a future hire's creation window ----------------------------------------


def write_with_start(env: ApplyEnv, start: date) -> None:
    """The env's rows plus a future hire with a start date (and the mapping for it)."""
    env.write(mapping={"start_date": "start_date"}, lifecycle={"create_days_before_start": 7})
    hire = {c: "" for c in COLUMNS} | {
        "employee_id": "N00001", "name": "新人", "email": "xinren@example.com",
        "departments": "销售部", "status": "active",
    }  # fmt: skip
    with (env.root / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*COLUMNS, "start_date"])
        w.writeheader()
        w.writerows({**r, "start_date": ""} for r in env.rows)
        w.writerow({**hire, "start_date": start.isoformat()})


def night(env: ApplyEnv, day: date) -> service.SyncReport:
    """The nightly sync as cron runs it, on ``day`` (02:30 Beijing time)."""
    at = datetime(day.year, day.month, day.day, 18, 30, tzinfo=UTC) - timedelta(days=1)
    with service.Engine(env.config(), now=lambda: at) as engine:
        return service.sync(engine, notify=False)


def test_the_day_a_creation_window_opens_is_planned(env: ApplyEnv) -> None:
    start = date(2027, 3, 15)
    write_with_start(env, start)
    first = night(env, date(2027, 3, 1))
    assert first.plan is not None and first.plan.has_changes
    assert not any(a.employee_id == "N00001" for a in first.plan.plan.actions)  # not yet
    full = night(env, date(2027, 3, 2))
    assert full.plan is not None and not full.plan.has_changes and not full.proved_unchanged
    proved = night(env, date(2027, 3, 7))  # the last day before the window opens
    assert proved.proved_unchanged and proved.plan is not None
    opens = night(env, date(2027, 3, 8))  # 7 days before the start: the mailbox is made
    assert not opens.proved_unchanged and opens.plan is not None
    assert [a.kind.value for a in opens.plan.plan.actions if a.employee_id == "N00001"][:1] == [
        "create_user"
    ]


def test_a_read_that_fails_is_reported_after_the_ingest(env: ApplyEnv) -> None:
    """Gen 2 reads the directory while the ingest runs: its failure still ends the night as a
    failed read, after a complete ingest, with the call named (Gen 1 reads afterwards)."""
    quiet(env)
    env.emulator.stop()
    r = env.cli("sync", "--json")
    report = json.loads(r.stdout)
    assert r.exit_code != 0 and report["status"] == "failed"
    assert report["snapshot"] is not None and report["snapshot"]["source_unchanged"] is True
    assert report["plan"] is None
    assert "list" in report["error"], report["error"]
