"""``syncengine apply`` / ``audit`` end to end: the real CLI, a real SQLite file and the
emulator over real HTTP, in both API generations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_BLOCKED, EXIT_ERROR, EXIT_FAILED_ACTIONS
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["v1", "v2"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> ApplyEnv:
    emu = emulator_factory(request.param)
    e = ApplyEnv(tmp_path, emu)
    e.write(base_rows() + people(12))
    return e


def test_full_apply_then_second_run_writes_nothing(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    applied = out["applied"]
    assert applied["status"] == "applied" and applied["failures"] == []
    assert applied["counts"]["done"] == applied["counts"]["actions"] > 12
    env.assert_converged()
    users = env.users()
    assert "zhangsan@example.com" in users and users["zhangsan@example.com"]["position"] == "架构师"
    assert users["si.li@example.com"]["slaves"] == ["lisi@example.com"]  # old address kept

    # Passwords: one line per new mailbox, mode 0600, each one works in Exmail.
    pw_file = Path(applied["password_file"])
    assert pw_file.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(x) for x in pw_file.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 12 == applied["passwords_delivered"]
    for line in lines:
        assert env.emulator.check_password(line["email"], line["password"])

    # Second round: a fresh plan has no actions, and applying it makes no write call.
    mark = len(env.emulator.calls())
    plan2 = env.ingest_and_plan("plan2.json")
    r = env.cli("apply", str(plan2), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["status"] == "no-changes"
    assert env.write_calls(since=mark) == []


def test_stale_saved_plan_is_refused_and_writes_nothing(env: ApplyEnv) -> None:
    from syncengine import service
    from syncengine.domain import UserUpdate

    plan_file = env.ingest_and_plan()
    provider = service.build_provider(env.config())
    try:  # someone changes Exmail by hand after the plan was reviewed
        provider.update_user("wangwu@example.com", UserUpdate(position="销售总监"))
    finally:
        provider.close()
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(plan_file))
    assert r.exit_code == EXIT_ERROR
    assert "stale plan" in r.output and "syncengine plan" in r.output
    assert env.write_calls(since=mark) == []
    assert "t100@example.com" not in env.users()
    # Applying the same file again stays refused (the plan is abandoned, never resumed).
    r = env.cli("apply", str(plan_file))
    assert r.exit_code == EXIT_ERROR and env.write_calls(since=mark) == []


def test_checksum_and_config_must_match(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(plan_file), "--checksum", "0" * 64)
    assert r.exit_code == EXIT_ERROR and "not the reviewed" in r.output
    edited = plan_file.read_text(encoding="utf-8").replace("测试员100", "测试员999")
    plan_file.with_name("edited.json").write_text(edited, encoding="utf-8")
    r = env.cli("apply", str(plan_file.with_name("edited.json")))
    assert r.exit_code == EXIT_ERROR and "checksum mismatch" in r.output
    env.write(apply={"concurrency": 2})  # another config: the plan's rules no longer hold
    r = env.cli("apply", str(plan_file))
    assert r.exit_code == EXIT_ERROR and "another configuration" in r.output
    assert env.write_calls(since=mark) == []


def test_failed_action_fails_only_its_chain_and_exits_4(env: ApplyEnv) -> None:
    from syncengine import service
    from syncengine.providers.base import MailGroup

    plan_file = env.ingest_and_plan()
    provider = service.build_provider(env.config())
    try:  # a group takes a planned address (groups are not part of the state fingerprint)
        provider.create_group(
            MailGroup(address="t101@example.com", name="抢注", members=("lisi@example.com",))
        )
    finally:
        provider.close()
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == EXIT_FAILED_ACTIONS, r.output
    out = json.loads(r.output)["applied"]
    failed = {f["key"]: f for f in out["failures"]}
    assert failed["create_user:t101@example.com"]["status"] == "failed"
    assert all(f["employee_id"] == "T00101" for f in failed.values())
    assert out["counts"]["done"] == out["counts"]["actions"] - len(failed)
    users = env.users()
    assert "t100@example.com" in users and "t102@example.com" in users
    text = env.cli("apply", str(plan_file))  # the same plan is not applied twice
    assert text.exit_code == EXIT_FAILED_ACTIONS and "applied before" in text.output
    assert "t101@example.com" in text.output
    # The failed create's password was voided in the password file.
    lines = [json.loads(x) for x in Path(out["password_file"]).read_text("utf-8").splitlines()]
    assert any(x.get("void") and x["email"] == "t101@example.com" for x in lines)


def test_blocked_plan_writes_nothing_without_the_release(env: ApplyEnv) -> None:
    env.write(policy={"min_existing": 0, "max_disable_share": 0.1, "max_shrink_share": 1.0})
    first = env.ingest_and_plan()
    assert env.cli("apply", str(first), "--force").exit_code == 0  # the first import
    env.write(env.rows[:6])  # 9 of 15 people leave: far over the 10% disable brake
    blocked = env.ingest_and_plan("blocked.json")
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(blocked))
    assert r.exit_code == EXIT_BLOCKED and "--allow-removals 9" in r.output
    assert env.write_calls(since=mark) == []
    r = env.cli("apply", str(blocked), "--allow-removals", "8")
    assert r.exit_code == EXIT_BLOCKED and env.write_calls(since=mark) == []
    r = env.cli("apply", str(blocked), "--allow-removals", "9", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["counts"]["done"] >= 9
    users = env.users()
    assert int(users["t105@example.com"]["enable"]) == 0
    assert int(users["t100@example.com"]["enable"]) == 1


def test_apply_without_file_asks_and_yes_skips(env: ApplyEnv) -> None:
    assert env.cli("ingest").exit_code == 0
    mark = len(env.emulator.calls())
    r = env.cli("apply")  # CliRunner's stdin is no terminal: refuse, write nothing
    assert r.exit_code == EXIT_ERROR and "--yes" in r.output
    assert env.write_calls(since=mark) == []
    r = env.cli("apply", "--yes")
    assert r.exit_code == 0, r.output
    assert "Plan " in r.output and "applied" in r.output
    env.assert_converged()
    r = env.cli("apply", "--yes")
    assert r.exit_code == 0 and "nothing to do" in r.output


def test_audit_answers_what_happened_to_a_person(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    assert env.cli("apply", str(plan_file)).exit_code == 0
    r = env.cli("audit", "--employee", "E0002", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    outcomes = [x for x in rows if x["call"] is None]
    assert [x["kind"] for x in outcomes] == ["add_alias", "swap_primary"]
    assert all(x["result"] == "done" and x["actor"].startswith("cli:") for x in outcomes)
    attempts = [x for x in rows if x["call"]]
    assert {x["call"] for x in attempts} == {"update_user", "swap_alias"}
    assert all(x["attempt"] == 1 and x["duration_ms"] is not None for x in attempts)
    assert outcomes[0]["diffs"]  # old -> new address
    run_id = outcomes[0]["run_id"]
    r = env.cli("audit", "--email", "t100@example.com", "--csv")
    lines = r.output.splitlines()
    assert lines[0].startswith("id,at,run_id,actor") and len(lines) >= 3
    assert "create_user:t100@example.com" in r.output
    r = env.cli("audit", "--run", str(run_id))
    assert r.exit_code == 0 and "swap_primary" in r.output and "-> done" in r.output
    r = env.cli("audit", "--since", "2999-01-01")
    assert r.exit_code == 0 and "no audit rows" in r.output
    r = env.cli("audit", "--since", "yesterday")
    assert r.exit_code == 64 and "--since" in r.output


@pytest.mark.parametrize("command", ["apply", "audit"])
def test_commands_have_help(command: str) -> None:
    from click.testing import CliRunner

    from syncengine.cli import main

    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output and "--json" in r.output


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_apply_into_an_empty_directory(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    from syncengine.emulator.seed import default_seed

    seed = default_seed()
    seed["departments"], seed["groups"] = [], []
    seed["users"] = [u for u in seed["users"] if u["userid"] == "admin@example.com"]
    env = ApplyEnv(tmp_path, emulator_factory(api, seed))
    env.write(people(20))
    plan_file = env.ingest_and_plan()
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    counts = json.loads(r.output)["applied"]["counts"]
    assert counts["done"] == counts["actions"] == 20 + 7  # 7 departments, parents first
    env.assert_converged()
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(env.ingest_and_plan("again.json")), "--json")
    assert json.loads(r.output)["applied"]["status"] == "no-changes"
    assert env.write_calls(since=mark) == []


def test_plan_killed_after_its_last_action_counts_as_applied(env: ApplyEnv) -> None:
    from syncengine.staging import db as staging_db
    from syncengine.staging.repository import Repository

    plan_file = env.ingest_and_plan()
    assert env.cli("apply", str(plan_file)).exit_code == 0
    with Repository(staging_db.make_engine(f"sqlite:///{env.db_path}")) as repo:
        (record,) = [p for p in [repo.load_plan(1)] if p is not None]
        repo.set_plan_status(record.id, "applying")  # the kill came before this was set
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["status"] == "already-applied"
    assert env.emulator.calls(since=mark) == []  # not even a state read
