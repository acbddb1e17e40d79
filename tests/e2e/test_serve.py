"""HR hooks end to end: signed events POSTed to the receiver over loopback, worked off by the
worker into targeted syncs against the emulator, with a real SQLite staging file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import (
    get_event,
    make_env,
    post_hook,
    running_receiver,
    settled_event,
    upsert,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["v1", "v2"])
def env(request: pytest.FixtureRequest, tmp_path: Path,
        emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:  # fmt: skip
    return make_env(ApplyEnv(tmp_path, emulator_factory(request.param)))


def test_hire_creates_and_terminate_disables_the_mailbox(env: ApplyEnv) -> None:
    with running_receiver(env) as rx:
        r = post_hook(rx.client, upsert("hr-1", "H0001", "新同事", "xin.tongshi@example.com",
                                         "研发中心/平台部", position="工程师"))  # fmt: skip
        assert r.status_code == 202, r.text
        event_id = r.json()["id"]
        assert r.json()["employee_id"] == "H0001"
        event = settled_event(rx.client, event_id)
        assert event["status"] == "applied", event
        user = env.users()["xin.tongshi@example.com"]
        assert user["name"] == "新同事" and str(user["extid"]) == "H0001"
        assert int(user.get("enable", 1)) == 1

        r = post_hook(rx.client, {"kind": "terminate", "delivery_id": "hr-2",
                                  "employee_id": "H0001"})  # fmt: skip
        assert r.status_code == 202, r.text
        term_id = r.json()["id"]
        assert settled_event(rx.client, term_id)["status"] == "applied"
        assert int(env.users()["xin.tongshi@example.com"]["enable"]) == 0

        lines = rx.client.get("/metrics").text.splitlines()
        assert 'syncengine_actions_total{kind="create_user",result="done"} 1' in lines
        assert 'syncengine_actions_total{kind="disable_user",result="done"} 1' in lines
        assert 'syncengine_runs_total{kind="hook",status="succeeded"} 2' in lines
        assert 'syncengine_hook_events_total{outcome="applied"} 2' in lines
        calls = next(x for x in lines if x.startswith("syncengine_api_calls_total "))
        assert int(calls.split()[1]) >= 2
        assert "syncengine_event_queue_depth 0" in lines
        assert rx.client.get("/healthz").json()["status"] == "ok"

    # Who did it: the audit says hook:<delivery id>, and the event names the run.
    rows = service.query_audit(service.Engine(env.config()), employee_id="H0001")
    outcomes = [r for r in rows if r.call is None]
    assert {r.kind for r in outcomes} >= {"create_user", "disable_user"}
    assert {r.actor for r in outcomes if r.kind == "create_user"} == {"hook:hr-1"}
    assert {r.actor for r in outcomes if r.kind == "disable_user"} == {"hook:hr-2"}
    events = service.list_hook_events(service.Engine(env.config()))
    assert [e.status for e in events] == ["applied", "applied"]
    assert all(e.run_id is not None for e in events)


def test_department_change_moves_only_that_person(env: ApplyEnv) -> None:
    before = env.users()
    with running_receiver(env) as rx:
        r = post_hook(rx.client, {"kind": "department_change", "delivery_id": "move-1",
                                  "employee_id": "E0002", "departments": ["市场部"]})  # fmt: skip
        assert r.status_code == 202, r.text
        event_id = r.json()["id"]
        assert settled_event(rx.client, event_id)["status"] == "applied"
    after = env.users()
    assert set(after["lisi@example.com"].get("paths") or []) == {"市场部"}
    for email, user in before.items():  # nobody else changed
        if email != "lisi@example.com":
            assert after[email] == user, email


def test_a_burst_of_1000_events_is_coalesced_and_none_is_lost(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    import threading

    # Four pushers interleave people, so a batch boundary can catch a few people already
    # created: their later upserts are updates, and with 13 managed mailboxes 4 updates trip
    # the default 30 % update brake (brakes judge each hook batch; see the brake test).
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")),
                   {"policy": {"max_update_share": 1.0}})  # fmt: skip
    hires, versions = 100, 10
    answers: dict[int, int] = {}
    with running_receiver(env) as rx:

        def push(first: int) -> None:
            with httpx.Client(base_url=rx.base_url, timeout=30) as client:
                for n in range(first, hires, 4):  # each person's events in order
                    for v in range(versions):
                        doc = upsert(f"burst-{n}-{v}", f"B{n:04d}", f"突击{n}",
                                     f"burst{n}@example.com", "研发中心/平台部",
                                     position=f"职位{v}")  # fmt: skip
                        r = post_hook(client, doc)
                        answers[n * versions + v] = r.status_code

        threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(set(answers.values())) == [202] and len(answers) == hires * versions

        config = env.config()

        def settled() -> bool:
            waiting = service.list_hook_events(service.Engine(config), status="received", limit=1)
            return not waiting

        wait_until("every event worked off", settled, timeout=90)
    events = service.list_hook_events(service.Engine(env.config()), limit=5000)
    assert len(events) == hires * versions
    assert {e.status for e in events} == {"applied"}, [e for e in events if e.status != "applied"]
    users = env.users()
    for n in range(hires):
        assert users[f"burst{n}@example.com"]["position"] == f"职位{versions - 1}"
    # Coalesced: one create per person in the audit, far fewer syncs than events.
    rows = [r for r in service.query_audit(service.Engine(env.config())) if r.call is None]
    creates = [r for r in rows if r.kind == "create_user" and r.result == "done"]
    assert sorted(r.employee_id for r in creates) == [f"B{n:04d}" for n in range(hires)]
    assert all(r.actor and r.actor.startswith("hook:") for r in rows if r.run_id
               in {e.run_id for e in events})  # fmt: skip
    runs = {e.run_id for e in events}
    assert None not in runs and len(runs) < hires


def test_failures_are_retried_with_backoff_then_applied(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")))
    with running_receiver(env) as rx:
        env.emulator.set_faults(fail_rate=1.0)
        r = post_hook(rx.client, upsert("retry-1", "R0001", "重试", "retry1@example.com"))
        event_id = r.json()["id"]
        wait_until("a failed attempt", lambda: get_event(rx.client, event_id)["attempts"] >= 1)
        event = get_event(rx.client, event_id)
        assert event["status"] == "received" and event["next_attempt_at"]
        assert "503" in event["last_error"] or "HTTP" in event["last_error"], event
        env.emulator.set_faults(fail_rate=0.0)
        wait_until("applied after the retry",
                   lambda: get_event(rx.client, event_id)["status"] == "applied")  # fmt: skip
        assert get_event(rx.client, event_id)["attempts"] >= 2
    assert "retry1@example.com" in env.users()


def test_an_event_gives_up_after_max_attempts(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), max_attempts=2)
    env.emulator.set_faults(fail_rate=1.0)
    with running_receiver(env) as rx:
        r = post_hook(rx.client, upsert("doomed-1", "D0001", "失败", "doomed@example.com"))
        event_id = r.json()["id"]
        wait_until("given up", lambda: get_event(rx.client, event_id)["status"] == "failed")
        event = get_event(rx.client, event_id)
        assert event["attempts"] == 2 and event["last_error"]
    result = env.cli("events", "--status", "failed")
    assert result.exit_code == 0 and "doomed-1" in result.output, result.output


def test_a_batch_a_brake_blocks_fails_with_the_reason_and_writes_nothing(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")),
                   {"policy": {"max_disables": 0}})  # fmt: skip
    mark = len(env.emulator.calls())
    with running_receiver(env) as rx:
        r = post_hook(rx.client, {"kind": "terminate", "delivery_id": "t-1",
                                  "employee_id": "E0003", "end_date": "2020-01-31"})  # fmt: skip
        event_id = r.json()["id"]
        event = settled_event(rx.client, event_id)
    assert event["status"] == "failed" and "brake" in event["last_error"], event
    assert env.write_calls(since=mark) == []
    assert int(env.users()["wangwu@example.com"].get("enable", 1)) == 1


def test_events_wait_while_a_nightly_run_holds_the_lock(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    import time

    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")))
    repo = service.open_staging(env.config())
    try:
        repo.acquire_lock(service.SYNC_LOCK, command="syncengine sync (test)")
        with running_receiver(env) as rx:
            r = post_hook(rx.client, upsert("w-1", "W0001", "等待", "wait1@example.com"))
            event_id = r.json()["id"]
            time.sleep(1.0)  # several worker rounds (poll 0.2 s): none may touch the event
            event = get_event(rx.client, event_id)
            assert (event["status"], event["attempts"]) == ("received", 0), event
            repo.release_lock(service.SYNC_LOCK)
            assert settled_event(rx.client, event_id)["status"] == "applied"
    finally:
        repo.release_lock(service.SYNC_LOCK)
        repo.close()
    assert "wait1@example.com" in env.users()
