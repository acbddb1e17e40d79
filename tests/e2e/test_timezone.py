"""The company's calendar (``[general] timezone``, default Asia/Shanghai) decides every date.

Through the real CLI against the emulator over real HTTP, with the clock set by
``time_machine`` (a real clock, moved; nothing of ours is patched) to 00:30 and 23:30 Beijing
time, the two sides of the day boundary where UTC's date differs from the company's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from syncengine.domain import Person
from syncengine.emulator.harness import RunningEmulator
from syncengine.policy import Lifecycle, Policy, lifecycle
from tests.e2e.test_apply_support import COLUMNS, ApplyEnv, _toml, base_rows, person

pytestmark = pytest.mark.timeout(180)

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 12, 1)
AFTER_MIDNIGHT = datetime(2026, 12, 1, 0, 30, tzinfo=SHANGHAI)  # 2026-11-30 16:30 UTC
BEFORE_MIDNIGHT = datetime(2026, 11, 30, 23, 30, tzinfo=SHANGHAI)  # 2026-11-30 15:30 UTC
DATED = [*COLUMNS, "start_date", "end_date"]


class DatedEnv(ApplyEnv):
    """An ApplyEnv whose HR export also has start and end dates."""

    def write(self, rows: list[dict[str, str]] | None = None, **extra: Any) -> None:
        if rows is not None:
            self.rows = rows
        self.extra.update(extra)
        with (self.root / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=DATED, restval="")
            w.writeheader()
            w.writerows(self.rows)
        self.config_path.write_text(_toml(self._config_data()), encoding="utf-8")

    def _config_data(self) -> dict[str, Any]:
        data = super()._config_data()
        data["mapping"] = {**data["mapping"], "start_date": "start_date", "end_date": "end_date"}
        return data


def _rows() -> list[dict[str, str]]:
    """A leaver whose last day is 1 December and a hire starting 8 December (window 7 days)."""
    return [
        *base_rows(),
        {**person("E0003", "王五", "wangwu@example.com", "研发中心/平台部"),
         "end_date": DAY.isoformat()},
        {**person("T00900", "新人", "xinren@example.com", "销售部"),
         "start_date": (DAY + timedelta(days=7)).isoformat()},
    ]  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> DatedEnv:
    e = DatedEnv(tmp_path, emulator_factory("v2"))
    e.write(_rows(), lifecycle={"create_days_before_start": 7})
    return e


def _sync_at(env: DatedEnv, when: datetime) -> dict[str, Any]:
    with time_machine.travel(when, tick=True):
        r = env.cli("sync", "--json", "--force", "--report", str(env.root / "sync-{date}.json"))
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_after_midnight_in_shanghai_the_leaver_is_disabled_and_the_hire_created(
    env: DatedEnv,
) -> None:
    out = _sync_at(env, AFTER_MIDNIGHT)
    users = env.users()
    assert int(users["wangwu@example.com"]["enable"]) == 0, "1 December has begun in Shanghai"
    assert "xinren@example.com" in users, "the start window (7 days before 8 Dec) is open"
    assert (env.root / "sync-2026-12-01.json").exists(), sorted(p.name for p in env.root.iterdir())
    assert out["started_at"].endswith("+08:00"), out["started_at"]


def test_before_midnight_in_shanghai_nothing_is_early(env: DatedEnv) -> None:
    _sync_at(env, BEFORE_MIDNIGHT)
    users = env.users()
    assert int(users["wangwu@example.com"].get("enable", 1)) == 1, "still 30 November"
    assert "xinren@example.com" not in users, "the window opens on 1 December"
    assert (env.root / "sync-2026-11-30.json").exists(), sorted(p.name for p in env.root.iterdir())


def test_syncengine_tz_overrides_the_config(env: DatedEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCENGINE_TZ", "UTC")  # UTC's date at 00:30 Shanghai is 30 November
    _sync_at(env, AFTER_MIDNIGHT)
    assert int(env.users()["wangwu@example.com"].get("enable", 1)) == 1
    assert (env.root / "sync-2026-11-30.json").exists()


def test_config_timezone_is_used_and_checked(env: DatedEnv) -> None:
    env.write(general={"timezone": "Europe/Berlin"})  # 00:30 Shanghai = 17:30 Berlin, 30 Nov
    _sync_at(env, AFTER_MIDNIGHT)
    assert int(env.users()["wangwu@example.com"].get("enable", 1)) == 1
    env.write(general={"timezone": "Asia/Beijing"})  # not an IANA name
    r = env.cli("audit")
    assert r.exit_code == 1
    assert "general.timezone" in r.output and "Asia/Beijing" in r.output, r.output


def test_audit_and_plan_show_times_in_the_company_zone(env: DatedEnv) -> None:
    _sync_at(env, AFTER_MIDNIGHT)
    r = env.cli("audit", "--employee", "E0003")
    assert r.exit_code == 0, r.output
    assert "+08:00" in r.output and "+00:00" not in r.output, r.output
    with time_machine.travel(AFTER_MIDNIGHT, tick=True):
        r = env.cli("plan")
    assert r.exit_code == 0, r.output
    assert "made 2026-12-01 00:30" in r.output and "+08:00" in r.output, r.output
    # --since takes a date on the company's calendar: 1 December from 00:00 Shanghai time
    r = env.cli("audit", "--since", "2026-12-01", "--json")
    assert json.loads(r.stdout), "the 00:30 rows are on 1 December in Shanghai"


@pytest.mark.parametrize(
    ("when", "expected"),
    [(AFTER_MIDNIGHT, Lifecycle.LEAVER), (BEFORE_MIDNIGHT, Lifecycle.ACTIVE)],
)
def test_policy_today_is_the_company_day(when: datetime, expected: Lifecycle) -> None:
    policy = Policy(timezone=SHANGHAI)
    now = when.astimezone(UTC)  # the engine's clock is UTC; both instants are 30 Nov in UTC
    assert now.date() == date(2026, 11, 30)
    state, _ = lifecycle(Person("E1", "张三", end_date=DAY), policy, policy.today(now))
    assert state is expected
