"""Secrets are read only by the commands that use them; usage errors exit 64, never 2.

The real CLI (CliRunner) on a real SQLite file and the emulator over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)

UNSET = "SYNCENGINE_TEST_UNSET_SECRET_13"


@pytest.fixture
def env(
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
) -> ApplyEnv:
    monkeypatch.delenv(UNSET, raising=False)
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows() + people(3))
    r = e.cli("sync")  # a database with runs, audit rows and a plan
    assert r.exit_code == 0, r.output
    return e


def test_local_commands_need_no_exmail_or_hook_secret(env: ApplyEnv) -> None:
    secrets = {app: f"env:{UNSET}" for app in env.emulator.seed["secrets"]}
    env.write(exmail={"secrets": secrets}, hooks={"secret": f"env:{UNSET}"})
    for args in (["audit"], ["audit", "--json"], ["db", "current"], ["events"]):
        r = env.cli(*args)
        assert r.exit_code == 0, (args, r.output)
        assert UNSET not in r.output, (args, r.output)


def test_plan_needs_exmail_but_not_the_hook_secret(env: ApplyEnv) -> None:
    env.write(hooks={"secret": f"env:{UNSET}"})
    r = env.cli("plan")
    assert r.exit_code == 0, r.output


def test_a_command_that_needs_a_missing_secret_names_it(
    env: ApplyEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write(exmail={"secrets": {"contacts": f"env:{UNSET}"}})
    r = env.cli("sync")
    assert r.exit_code == 1, r.output
    assert "exmail.secrets.contacts" in r.output and UNSET in r.output, r.output
    assert str(env.config_path) in r.output, r.output
    monkeypatch.setenv(UNSET, env.emulator.seed["secrets"]["contacts"])
    r = env.cli("sync")
    assert r.exit_code == 0, r.output
    assert env.emulator.seed["secrets"]["contacts"] not in r.output


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--detailed-exitcode", "--allow-removals", "-3"],
        ["plan", "--no-such-option"],
        ["no-such-command"],
        ["audit", "--json", "--csv"],
        ["db", "unlock"],
    ],
)
def test_usage_errors_exit_64_not_2(env: ApplyEnv, args: list[str]) -> None:
    r = env.cli(*args)
    assert r.exit_code == 64, r.output  # EX_USAGE, as the README's table says
    assert "Usage" in r.output or "Error" in r.output or "error" in r.output, r.output


def test_sync_checks_the_notification_secret_before_any_work(env: ApplyEnv) -> None:
    env.write(
        notifications={"webhooks": [{"url": "http://127.0.0.1:9/x", "secret": f"env:{UNSET}"}]}
    )
    before = len(env.emulator.calls())
    r = env.cli("sync", "--json")
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)  # the run is still reported, saying why it stopped
    assert report["status"] == "failed", report
    assert "notifications.webhooks[0].secret" in report["error"] and UNSET in report["error"]
    (note,) = report["notifications"]  # and the notification it could not sign failed alone
    assert note["ok"] is False and UNSET in note["error"], note
    assert len(env.emulator.calls()) == before, "nothing was read or written"
    r = env.cli("sync", "--dry-run")  # a dry run sends no notification: it needs no secret
    assert r.exit_code == 0, r.output
