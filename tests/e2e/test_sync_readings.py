"""A full ``syncengine sync`` under each reading of the protocol the sources leave open.

The emulator plays the alternative (protocol-decisions.md, "Robustness"); the real CLI, a
real SQLite file, the emulator over real HTTP. Each run starts from the default seed with a
dozen new hires in new nested departments, then changes one field of one person, and must
converge both times with every field of every person as HR has it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(180)

READINGS = [
    pytest.param("v1", {}, id="v1-as-decided"),
    pytest.param("v1", {"invalid_token_answer": "error"}, id="v1-token-refused-by-error-only"),
    pytest.param("v1", {"invalid_token_answer": "http401"}, id="v1-token-refused-by-http401"),
    pytest.param("v1", {"listen_ver": "separate", "listen_hold": 0.0}, id="v1-listen-readings"),
    pytest.param("v1", {"user_mod": "reset"}, id="v1-mod-resets-omitted-fields"),
    pytest.param("v1", {"dept_visible_after": 1.0}, id="v1-new-department-not-yet-visible"),
    pytest.param("v2", {}, id="v2-as-decided"),
    pytest.param("v2", {"invalid_token_answer": "http401"}, id="v2-token-refused-by-http401"),
    pytest.param("v2", {"newcount_dates": "required"}, id="v2-newcount-dates-required"),
    pytest.param("v2", {"dept_visible_after": 1.0}, id="v2-new-department-not-yet-visible"),
]


@contextmanager
def tokens_expiring(emu: RunningEmulator, after_calls: tuple[int, ...] = (10,)) -> Iterator[None]:
    """Expire every token once the sync has made each of ``after_calls`` calls: the next call
    of each provider is refused and must refresh (a real token dies at some point mid-run)."""
    stop = threading.Event()

    def run() -> None:
        pending = list(after_calls)
        while pending and not stop.wait(0.01):
            if len(emu.calls()) >= pending[0]:
                emu.expire_tokens()
                pending.pop(0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sync(env: ApplyEnv) -> dict[str, Any]:
    r = env.cli("sync", "--json")
    out: dict[str, Any] = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    assert r.exit_code == 0, r.output
    assert out["status"] == "succeeded" and out["failures"] == [], out
    return out


def assert_fields_as_hr(env: ApplyEnv) -> None:
    """Beyond assert_converged: position, mobile, gender and aliases too."""
    env.assert_converged()
    users = env.users()
    for row in env.rows:
        u = users[row["email"]]
        assert u["position"] == row["position"], (u, row)
        assert u["mobile"] == row["mobile"], (u, row)
        if row["gender"]:
            assert int(u["gender"]) == (1 if row["gender"] == "男" else 2), (u, row)
        if row["aliases"]:
            assert set(row["aliases"].split(";")) <= set(u["slaves"]), (u, row)


@pytest.mark.parametrize(("api", "reading"), READINGS)
def test_full_sync_converges_under_each_reading(
    api: str,
    reading: dict[str, Any],
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory(api, latency_ms=20, **reading)
    env = ApplyEnv(tmp_path, emu)
    env.write(base_rows() + people(12))
    with tokens_expiring(emu):
        sync(env)
    assert_fields_as_hr(env)
    refused = [c for c in emu.calls() if c["status"] == 401 or c["errcode"] in (1200, 40014)]
    assert refused, "no token was refused during the sync: the test proves nothing"

    rows = [dict(r) for r in env.rows]
    rows[0]["position"] = "首席架构师"  # one field of one person changes
    env.write(rows)
    sync(env)
    assert_fields_as_hr(env)
