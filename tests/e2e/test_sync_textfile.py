"""A cron-run ``sync`` writes its metrics for the node exporter's textfile collector: the real
CLI as a subprocess (as cron runs it), the emulator over HTTP, a real SQLite file."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_sync_leaves_prometheus_textfile_metrics(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    (tmp_path / "textfile").mkdir()
    env.write(base_rows() + people(4), metrics={"textfile": "textfile/syncengine.prom"})
    proc = env.subprocess("sync", "--scheduled")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, (out, err)
    prom = tmp_path / "textfile" / "syncengine.prom"
    text = prom.read_text(encoding="utf-8")
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert not list(prom.parent.glob(".syncengine-*")), "no temporary file left behind"
    got = samples(text)
    assert got['syncengine_sync_status{status="succeeded"}'] == 1
    assert got['syncengine_sync_status{status="blocked"}'] == 0
    assert got["syncengine_sync_exit_code"] == 0
    assert got['syncengine_sync_actions{kind="create_user",result="done"}'] == 4
    assert got["syncengine_sync_people"] == 7
    success = got["syncengine_sync_last_success_timestamp_seconds"]
    assert success == got["syncengine_sync_last_run_timestamp_seconds"]
    assert "# TYPE syncengine_sync_actions gauge" in text
    assert not re.search(r"@|secret|password", text), text

    # a blocked run keeps the last success time and says blocked
    env.write([], metrics={"textfile": "textfile/syncengine.prom"})  # an empty export
    proc = env.subprocess("sync", "--scheduled")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode in (1, 3), (out, err)
    got = samples(prom.read_text(encoding="utf-8"))
    assert got["syncengine_sync_last_success_timestamp_seconds"] == success
    assert got['syncengine_sync_status{status="succeeded"}'] == 0
    assert got["syncengine_sync_exit_code"] == proc.returncode


def test_textfile_must_be_a_prom_file(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows(), metrics={"textfile": "metrics.txt"})
    r = env.cli("sync")
    assert r.exit_code == 1 and "metrics.textfile" in r.output and ".prom" in r.output
