"""The executor's lane (one thread sending the single-call writes through libcurl's multi
interface) against the Gen 2 emulator over real HTTP, checkpointing into a real staging
database: a transient answer mid-batch, an expired token mid-batch, a stop mid-batch, the
emulator gone mid-batch. Each action is done exactly once (the emulator's call log)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.harness import RunningEmulator
from syncengine.executor import ExecutionSink, Executor, ExecutorSettings
from syncengine.executor.core import LANE_FROM
from syncengine.executor.lane import DirectWrites
from syncengine.plan import Action
from syncengine.staging.repository import Repository
from tests.contract.test_executor import Bench, new_user, plan_of

pytestmark = pytest.mark.timeout(60)

SETTINGS = ExecutorSettings(concurrency=8, max_attempts=6, backoff_initial=0.01,
                            backoff_max=0.05, jitter=0.01, max_retry_seconds=30)  # fmt: skip


@pytest.fixture
def bench(
    staging_repo: Repository, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> Iterator[Bench]:
    emu = emulator_factory("v2", latency_ms=5)
    provider = service.build_provider(
        parse_config({"exmail": emu.exmail_config(), "apply": {"rate_per_second": 0}})
    )
    # These tests are about the lane: the provider's writes must be able to take it.
    assert isinstance(provider, DirectWrites) and provider.multi_poster() is not None
    yield Bench(emu, staging_repo, provider, tmp_path)
    provider.close()


def creates(n: int, prefix: str = "l") -> list[Action]:
    return [new_user(f"{prefix}{i}@example.com", f"E{prefix}{i}", f"道{i}") for i in range(n)]


def create_calls(emu: RunningEmulator) -> list[dict[str, Any]]:
    """The ``user/create`` requests the emulator received (its call log)."""
    return [c for c in emu.calls() if str(c["endpoint"]).endswith("user/create")]


def took_effect(call: dict[str, Any]) -> bool:
    """A create that made its mailbox: answered 0, or cut off after taking effect."""
    return bool(call["dropped"]) or (call["status"] == 200 and call["errcode"] in (0, None))


def test_the_lane_is_taken_from_lane_from_calls_at_once(bench: Bench) -> None:
    def lane(concurrency: int, **kw: Any) -> bool:
        ex = Executor(bench.provider, cast(ExecutionSink, None),
                      settings=ExecutorSettings(concurrency=concurrency), **kw)  # fmt: skip
        return ex.direct_writes is not None

    assert lane(LANE_FROM) and lane(LANE_FROM + 16)
    assert not lane(LANE_FROM - 1) and not lane(4)
    assert lane(4, lane=True) and not lane(LANE_FROM, lane=False)


def test_every_create_goes_once_and_is_audited_once(bench: Bench) -> None:
    users = creates(40)
    result, plan_id = bench.run(plan_of(users), SETTINGS, lane=True)
    assert result.ok and result.counts()["done"] == 40
    assert set(bench.status(plan_id).values()) == {"done"}
    calls = create_calls(bench.emu)
    assert len(calls) == 40 and all(c["status"] == 200 for c in calls)
    rows = bench.repo.query_audit(plan_id=plan_id)
    attempts = Counter(r.action_key for r in rows if r.call == "create_user")
    outcomes = Counter(r.action_key for r in rows if r.call is None and r.result == "done")
    assert attempts == outcomes == Counter({u.key: 1 for u in users})
    handed = {p["email"]: p["password"] for p in bench.passwords() if "password" in p}
    assert set(handed) == {u.target for u in users}
    assert all(bench.emu.check_password(e, pw) for e, pw in list(handed.items())[:5])
    assert set(bench.repo.load_links()) == {u.employee_id for u in users}


def test_a_transient_answer_mid_batch_is_retried_and_done_once(bench: Bench) -> None:
    # One call in ten answers 503 before taking effect, one in ten is cut off after taking
    # effect: each is "may have happened", looked at, and done exactly once.
    bench.emu.set_faults(fail_rate=0.1, drop_rate=0.1, drop_when="after", rng_seed=7)
    users = creates(40, "t")
    patient = ExecutorSettings(concurrency=8, max_attempts=12, backoff_initial=0.01,
                               backoff_max=0.02, jitter=0.01, max_retry_seconds=30)  # fmt: skip
    result, plan_id = bench.run(plan_of(users), patient, lane=True)
    assert result.ok, result.failures
    rows = bench.repo.query_audit(plan_id=plan_id)
    retried = {r.action_key for r in rows if r.call == "create_user" and r.result == "retry"}
    assert retried, "no transient answer came: the faults did not apply"
    for key in retried:  # after the transient answer: a look (get_user) before any redo
        made = [r.call for r in sorted(rows, key=lambda r: r.id or 0)
                if r.action_key == key and r.call]  # fmt: skip
        assert made[0] == "create_user" and made[1] == "get_user", made
    bench.emu.set_faults(fail_rate=0.0, drop_rate=0.0)
    live = {u["userid"] for u in bench.emu.state()["users"]}
    assert {u.target for u in users} <= live
    calls = create_calls(bench.emu)
    assert sum(1 for c in calls if took_effect(c)) == len(users)  # each mailbox made once
    assert not [c for c in calls if c["errcode"] == 60102]  # never sent again once made


def test_an_expired_token_mid_batch_is_refreshed_and_each_create_sent_once(
    bench: Bench,
) -> None:
    expired = threading.Event()

    def progress(done: int, _total: int) -> None:
        if done == 6 and not expired.is_set():
            expired.set()
            bench.emu.expire_tokens()

    users = creates(40, "x")
    result, plan_id = bench.run(plan_of(users), SETTINGS, progress=progress, lane=True)
    assert expired.is_set() and result.ok, result.failures
    calls = create_calls(bench.emu)
    refused = [c for c in calls if c["errcode"] == 40014]
    assert refused, "no call met the expired token"
    assert sum(1 for c in calls if took_effect(c)) == len(users)
    assert len(calls) == len(users) + len(refused)  # each refused one sent once more
    # The refusal and its resend are one call of the action: one attempt row each.
    rows = bench.repo.query_audit(plan_id=plan_id)
    attempts = Counter(r.action_key for r in rows if r.call == "create_user")
    assert set(attempts.values()) == {1}
    assert sum(1 for c in bench.emu.calls() if str(c["endpoint"]).endswith("gettoken")) >= 2


def test_a_stop_mid_batch_lets_started_creates_finish_and_starts_nothing_more(
    bench: Bench,
) -> None:
    stop = threading.Event()
    users = creates(120, "s")
    result, plan_id = bench.run(
        plan_of(users),
        SETTINGS,
        progress=lambda d, t: stop.set() if d >= 10 else None,
        stop=stop,
        lane=True,
    )
    assert result.interrupted
    states = bench.status(plan_id)
    done = {k for k, v in states.items() if v == "done"}
    assert set(states.values()) == {"done", "pending"}  # none left running, none failed
    # Started when the stop came: at most twice the concurrency on the lane.
    assert 10 <= len(done) <= 10 + 2 * SETTINGS.concurrency
    assert {o.key for o in result.outcomes} == done
    made = {u["userid"] for u in bench.emu.state()["users"]}
    assert made & {u.target for u in users} == {k.split(":", 1)[1] for k in done}


def test_the_emulator_gone_mid_batch_fails_naming_the_action_and_the_call(
    bench: Bench,
) -> None:
    gone = threading.Event()

    def progress(done: int, _total: int) -> None:
        if done == 5 and not gone.is_set():
            gone.set()
            threading.Thread(target=bench.emu.stop).start()

    settings = ExecutorSettings(concurrency=4, max_attempts=2, backoff_initial=0.01,
                                backoff_max=0.02, jitter=0.0, max_retry_seconds=5)  # fmt: skip
    users = creates(60, "g")
    result, plan_id = bench.run(plan_of(users), settings, progress=progress, lane=True)
    assert gone.is_set()
    failed = [o for o in result.outcomes if o.status.value == "failed"]
    assert failed, "every create finished before the emulator went away"
    for o in failed:
        assert o.key.startswith("create_user:") and o.target in o.detail
        assert "user/create" in o.detail or "user/get" in o.detail, o.detail
        assert "the next run will check and retry" in o.detail
    rows = bench.repo.query_audit(plan_id=plan_id)
    first = {r.action_key: r for r in sorted(rows, key=lambda r: -(r.id or 0)) if r.call}
    assert all(first[o.key].errmsg for o in failed)
