"""``plan`` says which HR snapshot it used and how old it is, warns when the export on disk is
newer, and ``--refresh`` ingests first. Real CLI, real SQLite file, the emulator over HTTP."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people, person

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows() + people(2))
    assert e.cli("sync").exit_code == 0
    return e


def new_export(env: ApplyEnv) -> None:
    env.write([*env.rows, person("T09999", "新来的", "xinlaide@example.com", "销售部")])
    later = time.time() + 10  # HR wrote it after the last ingest
    os.utime(env.root / "hr.csv", (later, later))


def test_plan_names_its_snapshot_and_its_age(env: ApplyEnv) -> None:
    r = env.cli("plan")
    assert r.exit_code == 0, r.output
    assert "HR snapshot #1" in r.output and "ingested" in r.output, r.output
    assert "+08:00" in r.output and "just now" in r.output, r.output
    assert "warning" not in r.output


def test_a_newer_export_is_said_out_loud_and_refresh_reads_it(env: ApplyEnv) -> None:
    new_export(env)
    r = env.cli("plan")
    assert r.exit_code == 0, r.output
    assert "warning: the HR export changed at" in r.output, r.output
    assert "plan --refresh" in r.output and "xinlaide" not in r.output
    data = json.loads(env.cli("plan", "--json").stdout)
    assert data["snapshot"]["stale"] is True and data["snapshot"]["snapshot_id"] == 1

    r = env.cli("plan", "--refresh")
    assert r.exit_code == 0, r.output
    assert "ingested snapshot #2" in r.output and "HR snapshot #2" in r.output, r.output
    assert "xinlaide@example.com" in r.output and "warning" not in r.output, r.output
