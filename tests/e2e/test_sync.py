"""``syncengine sync`` end to end: the real CLI, a real SQLite file, the emulator over real HTTP
(both API generations) and a real Starlette receiver for the signed notifications."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_BLOCKED, EXIT_ERROR
from tests.e2e.test_apply_support import ApplyEnv, _endpoint, base_rows, people
from tests.fixtures.notify_receiver import Receiver, notification_receiver

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with notification_receiver() as rx:
        yield rx


def write(
    env: ApplyEnv, rows: list[dict[str, str]], rx: Receiver | None = None, **extra: Any
) -> None:
    """The env's config and CSV, plus a [notifications] webhook to ``rx``."""
    env.write(rows, **extra)
    if rx is not None:
        with env.config_path.open("a", encoding="utf-8") as fh:
            fh.write(
                "\n[notifications]\nbackoff = 0.01\nbackoff_max = 0.05\nattempts = 4\n"
                f'[[notifications.webhooks]]\nurl = "{rx.url}"\nsecret = "{rx.secret}"\n'
                'name = "ops"\n'
            )


@pytest.fixture(params=["v1", "v2"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory(request.param))
    write(e, base_rows() + people(12))
    return e


def run_json(env: ApplyEnv, *args: str) -> tuple[int, dict[str, Any]]:
    r = env.cli("sync", "--json", *args)
    try:
        return r.exit_code, json.loads(r.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"exit {r.exit_code}: {r.output}") from None


def write_endpoints(env: ApplyEnv, since: int = 0) -> Counter[str]:
    return Counter(_endpoint(c) for c in env.write_calls(since))


def last_seq(env: ApplyEnv) -> int:
    calls = env.emulator.calls()
    return int(calls[-1]["seq"]) if calls else 0


def test_sync_from_empty_then_again_makes_no_write_call(env: ApplyEnv, receiver: Receiver) -> None:
    write(env, env.rows, receiver)
    receiver.answer_with(503)  # the first POST fails: the notifier tries again
    report_file = env.root / "reports" / "sync-{date}-{run}.json"
    code, out = run_json(env, "--report", str(report_file))
    assert code == 0, out
    assert out["status"] == "succeeded" and out["failures"] == []
    env.assert_converged()
    kinds = out["counts"]
    assert kinds["create_user"] == {"planned": 12, "done": 12, "failed": 0, "skipped": 0}
    assert sum(k["done"] for k in kinds.values()) == out["applied"]["counts"]["actions"]
    assert out["snapshot"]["counts"]["people"] == 15

    # The report file: the same document, under the dated name, with the notification.
    written = list((env.root / "reports").glob("sync-*.json"))
    assert len(written) == 1
    doc = json.loads(written[0].read_text(encoding="utf-8"))
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the company's day
    assert written[0].name == f"sync-{today}-{doc['run_id']}.json"
    assert doc["counts"] == kinds and doc["status"] == "succeeded"
    assert doc["notifications"] == [
        {
            "channel": "webhook",
            "target": "ops",
            "ok": True,
            "attempts": 2,
            "status": 200,
            "error": None,
        }
    ]

    got = receiver.wait_for(2)
    assert [g.answered for g in got] == [503, 200]
    assert all(g.signature_ok for g in got)
    assert got[1].document["event"] == "finished"
    assert got[1].document["summary"]["counts"] == kinds
    assert got[0].body == got[1].body  # the same delivery, retried

    mark = last_seq(env)
    code, out = run_json(env)
    assert code == 0, out
    assert out["plan"]["has_changes"] is False and out["applied"] is None
    assert write_endpoints(env, mark) == Counter()
    assert receiver.wait_for(3)[2].document["summary"]["status"] == "succeeded"


def test_dry_run_writes_nothing_and_lists_the_calls_a_real_run_makes(env: ApplyEnv) -> None:
    mark = last_seq(env)
    r = env.cli("sync", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "sync dry run, nothing applied" in r.stdout
    assert write_endpoints(env, mark) == Counter()
    assert service.query_audit(service.Engine(env.config())) == []

    code, out = run_json(env, "--dry-run")
    assert code == 0 and out["status"] == "dry-run" and out["applied"] is None
    listed = out["would_call"]
    assert {a["kind"] for a in listed} >= {"create_user", "create_department", "update_user"}
    for a in listed:
        assert a["target"] and all(c.split()[0] in ("GET", "POST") for c in a["calls"])
    promised = Counter(c.split()[1].split("/", 2)[2] for a in listed for c in a["calls"])
    assert write_endpoints(env, mark) == Counter()

    code, out = run_json(env)
    assert code == 0, out
    assert write_endpoints(env, mark) == promised  # exactly the calls the dry run listed


def test_blocked_sync_writes_nothing_and_notifies_the_reason(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], receiver: Receiver
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    rows = base_rows() + people(40)
    write(env, rows, receiver)
    code, out = run_json(env)
    assert code == 0, out
    receiver.wait_for(1)

    write(env, rows[:8], receiver)  # a truncated export: most people "gone"
    mark = last_seq(env)
    r = env.cli("sync")
    assert r.exit_code == EXIT_BLOCKED, r.output
    assert "sync BLOCKED, nothing applied" in r.stdout
    assert "--allow-removals" in r.stdout
    assert write_endpoints(env, mark) == Counter()
    note = receiver.wait_for(2)[1]
    assert note.signature_ok and note.document["event"] == "blocked"
    reasons = note.document["summary"]["blocked_reasons"]
    assert reasons and all(r["how_to_release"] for r in reasons)
    assert note.document["summary"]["applied"] is None

    # Released after review: the disables go through.
    needed = max(int(x) for x in " ".join(r["how_to_release"] for r in reasons).split()
                 if x.isdigit())  # fmt: skip
    code, dry = run_json(env, "--dry-run", "--allow-removals", str(needed))
    assert code == 0 and dry["status"] == "dry-run", dry
    promised = Counter(c.split()[1].split("/", 2)[2] for a in dry["would_call"]
                       for c in a["calls"])  # fmt: skip
    mark = last_seq(env)
    code, out = run_json(env, "--allow-removals", str(needed))
    assert code == 0, out
    assert out["counts"]["disable_user"]["done"] == out["counts"]["disable_user"]["planned"] > 0
    assert write_endpoints(env, mark) == promised == {"user/update": len(rows) - 8}


def test_a_failing_source_is_reported_and_notified(env: ApplyEnv, receiver: Receiver) -> None:
    write(env, env.rows, receiver)
    (env.root / "hr.csv").unlink()
    mark = last_seq(env)
    code, out = run_json(env)
    assert code == EXIT_ERROR
    assert out["status"] == "failed" and "hr.csv" in out["error"]
    assert write_endpoints(env, mark) == Counter()
    note = receiver.wait_for(1)[0]
    assert note.document["event"] == "failed" and "hr.csv" in note.document["summary"]["error"]
    for secret in env.emulator.exmail_config().get("secrets", {}).values():
        assert secret not in note.body.decode()


def test_a_second_sync_is_refused_while_one_holds_the_lock(env: ApplyEnv) -> None:
    repo = service.open_staging(env.config())
    try:
        repo.acquire_lock(service.SYNC_LOCK, pid=os.getppid(), command="the nightly sync")
        r = env.cli("sync")
        assert r.exit_code == EXIT_ERROR, r.output
        assert "another run holds the lock" in r.stdout and "the nightly sync" in r.stdout
        assert env.write_calls() == []
    finally:
        repo.release_lock(service.SYNC_LOCK, pid=os.getppid())
        repo.close()
    assert env.cli("sync").exit_code == 0


def test_a_killed_sync_is_resumed_by_the_next_one(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2", latency_ms=40))
    write(env, base_rows() + people(30), apply={"concurrency": 1})
    proc = env.subprocess("sync")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(env.write_calls()) >= 8:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sync finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    code, out = run_json(env)
    assert code == 0, out
    assert len(out["resumed"]) == 1 and out["resumed"][0]["status"] == "applied"
    assert out["plan"]["has_changes"] is False  # the resume finished everything
    env.assert_converged()
    outcome_rows = [r for r in service.query_audit(service.Engine(env.config()))
                    if r.call is None and r.result == "done"]  # fmt: skip
    per_action = Counter((r.plan_id, r.action_key) for r in outcome_rows)
    assert per_action and set(per_action.values()) == {1}
    creates = Counter(_endpoint(c) for c in env.write_calls() if not c.get("errcode"))
    assert creates["user/create"] == 30


def test_an_unreachable_database_is_reported_and_notified(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], receiver: Receiver
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    gone = tmp_path / "no-such-folder" / "staging.db"
    write(env, base_rows(), receiver, database={"url": f"sqlite:///{gone}"})
    code, out = run_json(env, "--report", str(tmp_path / "report.json"))
    assert code == EXIT_ERROR and out["status"] == "failed" and out["run_id"] is None
    assert str(gone.parent) in out["error"]
    note = receiver.wait_for(1)[0]
    assert note.document["event"] == "failed"
    assert note.document["summary"]["error"] == out["error"]
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "failed"
    assert env.write_calls() == []


def test_conflicts_are_reported_and_the_rest_is_applied(env: ApplyEnv) -> None:
    from tests.e2e.test_apply_support import person

    # lisi@example.com belongs to E0002 in Exmail (its ext id): HR gives it to someone else.
    intruder = person("E0999", "冒名", "lisi@example.com", "研发中心/平台部")
    write(env, [*base_rows()[:1], intruder, *people(3)])
    r = env.cli("sync")
    assert r.exit_code == 0, r.output
    assert "conflict(s) the engine will not guess about" in r.stdout
    code, out = run_json(env)
    assert code == 0
    assert any("E0999" in c["employee_ids"] for c in out["conflicts"])
    users = env.users()
    assert users["lisi@example.com"].get("extid") == "E0002"
    assert {f"t{n}@example.com" for n in range(100, 103)} <= set(users)


def test_every_writing_action_kind_has_its_request_listed() -> None:
    from dataclasses import replace

    from syncengine.plan import Action, ActionKind
    from syncengine.providers.exmail_v1 import ExmailV1Provider
    from syncengine.providers.exmail_v2 import ExmailV2Provider

    for kind in ActionKind:
        action = Action(key=f"{kind.value}:x", kind=kind, target="x", reason="r")
        for provider, prefix in ((ExmailV1Provider, "/openapi/"), (ExmailV2Provider, "/cgi-bin/")):
            calls = provider.planned_calls(None, action)  # type: ignore[arg-type]
            if kind in (ActionKind.LINK, ActionKind.UNLINK):
                assert calls == ()
            elif kind is ActionKind.ADOPT_GROUP:  # Gen 2 only, and only when it changes it
                assert calls == ()
                if provider is ExmailV2Provider:
                    changed = replace(action, changes={"added": ((), ("a@x",))})
                    got = provider.planned_calls(None, changed)  # type: ignore[arg-type]
                    assert [c.path for c in got] == ["/cgi-bin/group/update"]
            else:
                assert calls and all(c.path.startswith(prefix) for c in calls), (prefix, kind)


def test_a_report_that_cannot_be_written_does_not_hide_the_outcome(env: ApplyEnv) -> None:
    blocker = env.root / "not-a-folder"
    blocker.write_text("a file where the report folder should be")
    r = env.cli("sync", "--report", str(blocker / "sync-{date}.json"))
    assert r.exit_code == 0, r.output
    assert "sync succeeded" in r.stdout and "report NOT written" in r.stdout
    env.assert_converged()
    before = len(env.emulator.calls())
    r = env.cli("sync", "--report", str(env.root / "r-{nope}.json"))
    assert r.exit_code == EXIT_ERROR and "{date}, {datetime} or {run}" in r.output
    # Refused before any work: not even the Gen 2 early read of the directory was started.
    assert len(env.emulator.calls()) == before


READS = {
    "v1": "/openapi/user/list",  # one per directory read (Ver=0, or the stored cursor)
    "v2": "/cgi-bin/user/list",  # one per whole-directory read
}


def test_a_sync_reads_the_directory_once(env: ApplyEnv) -> None:
    """The plan was made from a state read moments ago under the sync lock: apply trusts it
    instead of reading the whole directory a second time (on Gen 1 that is one call per
    member). The executor still looks before it redoes anything."""
    # Either generation lists the accounts once per directory read (Gen 1: user/list).
    per_read = 1
    start = last_seq(env)
    code, out = run_json(env)
    assert code == 0, out
    assert out["counts"]["create_user"]["done"] > 0
    reads = Counter(c["endpoint"] for c in env.emulator.calls() if int(c["seq"]) > start)
    assert reads[READS[env.emulator.api]] == per_read, reads
    env.assert_converged()
