"""Hooks and the nightly export together: one source of truth, weighed by time.

A hook and a ``sync`` in both orders against the emulator over real HTTP, a real SQLite
staging file and the real CLI; the mailbox state in the emulator is what is checked. The
export's time is the CSV file's modification time, set with ``os.utime`` where a test needs
an export older or newer than a hook.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import (
    hooks_table,
    make_env,
    post_hook,
    running_receiver,
    seed_rows,
    settled_event,
    upsert,
)

pytestmark = pytest.mark.timeout(120)

HIRE = upsert("hire-1", "H0107", "新同事", "xin.tongshi@example.com", "研发中心/平台部",
              position="工程师")  # fmt: skip
FIRE = {"kind": "terminate", "delivery_id": "fire-1", "employee_id": "E0003"}


@pytest.fixture(params=["v1", "v2"])
def env(request: pytest.FixtureRequest, tmp_path: Path,
        emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:  # fmt: skip
    return make_env(ApplyEnv(tmp_path, emulator_factory(request.param)))


def hook(env: ApplyEnv, document: dict[str, Any]) -> None:
    with running_receiver(env) as rx:
        r = post_hook(rx.client, document)
        assert r.status_code == 202, r.text
        assert settled_event(rx.client, r.json()["id"])["status"] == "applied"


def sync(env: ApplyEnv) -> dict[str, Any]:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def enabled(env: ApplyEnv, email: str) -> bool:
    return int(env.users()[email].get("enable", 1)) == 1


def export_at(env: ApplyEnv, when: float, rows: list[dict[str, str]] | None = None) -> None:
    """HR writes its export (``rows``, else the same rows) at ``when`` (unix seconds)."""
    env.write(rows)
    os.utime(env.root / "hr.csv", (when, when))


def test_a_hire_by_hook_is_not_disabled_by_an_export_made_before_it(env: ApplyEnv) -> None:
    hook(env, HIRE)  # hook first: the export on disk was written before the hire
    assert enabled(env, "xin.tongshi@example.com")
    sync(env)
    assert enabled(env, "xin.tongshi@example.com"), "an older export must not disable a hire"
    r = env.cli("plan")
    assert r.exit_code == 0, r.output
    assert "H0107" in r.output and "hired or changed by hook" in r.output, r.output
    assert "hire-1" in r.output and "+08:00" in r.output, r.output


def test_a_termination_by_hook_is_not_undone_by_an_export_made_before_it(env: ApplyEnv) -> None:
    hook(env, FIRE)
    assert not enabled(env, "wangwu@example.com")
    sync(env)
    assert not enabled(env, "wangwu@example.com"), "an older export must not re-enable"
    r = env.cli("plan", "--json")
    conflicts = json.loads(r.stdout)["plan"]["conflicts"]
    assert [c["kind"] for c in conflicts] == ["hook_held"], conflicts
    assert "terminated by hook" in conflicts[0]["message"]


def test_sync_first_then_the_hook_then_the_same_export_again(env: ApplyEnv) -> None:
    sync(env)  # the nightly run before the day's hooks
    hook(env, HIRE)
    hook(env, FIRE)
    sync(env)  # the next night, HR's export has not caught up
    assert enabled(env, "xin.tongshi@example.com")
    assert not enabled(env, "wangwu@example.com")
    # a department change by hook the day after still finds the hired person
    hook(env, {"kind": "department_change", "delivery_id": "move-1", "employee_id": "H0107",
               "departments": ["市场部"]})  # fmt: skip
    assert env.users()["xin.tongshi@example.com"]


def test_an_export_newer_than_the_settle_period_is_the_truth_again(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), settle=0)
    hook(env, HIRE)
    hook(env, FIRE)
    export_at(env, time.time() + 5)  # HR's export written after both hooks, without them
    sync(env)
    assert not enabled(env, "xin.tongshi@example.com"), "HR reverted the hire: disabled"
    assert enabled(env, "wangwu@example.com"), "HR has E0003 active again: re-enabled"


def test_within_the_settle_period_a_newer_export_cannot_take_a_hire_away(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), settle=3600)
    hook(env, HIRE)
    rows = seed_rows()
    rows[1] = {**rows[1], "position": "高级工程师"}  # the export carries other news
    export_at(env, time.time() + 5, rows)
    sync(env)
    assert enabled(env, "xin.tongshi@example.com")
    assert env.users()["lisi@example.com"]["position"] == "高级工程师"


def test_settle_is_checked_in_the_config(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(seed_rows(), hooks=hooks_table(settle=-1))
    r = env.cli("plan")
    assert r.exit_code == 1 and "hooks.settle" in r.output, r.output
