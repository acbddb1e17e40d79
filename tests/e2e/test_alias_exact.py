"""``alias_mode = "exact"`` and an address change: the old address survives as an alias.

The plan says "old address kept as alias"; exact mode sets the aliases to HR's list, which
does not carry the old address. Mail to it must still arrive, in this run and every later one
(the audit log remembers the swap). Real CLI, real SQLite, the emulator over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows
from tests.e2e.test_sync_readings import sync

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_exact_mode_keeps_the_old_address_across_runs(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory(api))
    env.write(base_rows(), policy={"alias_mode": "exact", "min_existing": 1000})
    assert env.users()["lisi@example.com"]["slaves"] == []  # E0002 before: lisi@
    sync(env)  # E0002: lisi@example.com -> si.li@example.com
    assert "lisi@example.com" in env.users()["si.li@example.com"]["slaves"]
    sync(env)  # a later run, HR unchanged: exact mode must not take it away now either
    assert "lisi@example.com" in env.users()["si.li@example.com"]["slaves"]
    r = env.cli("plan", "--detailed-exitcode")
    assert r.exit_code == 0, r.output  # converged: nothing more to do
