"""Apply under a hostile night: 503s, dropped connections (after the write took effect),
a calls-per-second limit and tokens expiring mid-run. The run must still converge with every
action done exactly once, no password and no token in the audit log. Both generations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.executor import ExecutorSettings
from tests.e2e.test_apply_support import (
    ApplyEnv,
    assert_each_action_done_once,
    assert_not_in_audit,
    base_rows,
    people,
    secrets_of,
)

pytestmark = pytest.mark.timeout(180)

FAST_RETRIES = ExecutorSettings(
    concurrency=4, max_attempts=40, backoff_initial=0.001, backoff_max=0.01, jitter=0.001,
    max_retry_seconds=60,
)  # fmt: skip


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"fail_rate": 0.2}, id="503"),
        pytest.param({"drop_rate": 0.2, "drop_when": "after"}, id="drop-after-write"),
        pytest.param({"rate_limit_per_token": 10.0}, id="rate-limit"),
    ],
)
def test_apply_converges_under_faults(
    api: str,
    faults: dict[str, object],
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory(api, rng_seed=7)
    env = ApplyEnv(tmp_path, emu)
    env.write(base_rows() + people(30))
    plan_file = env.ingest_and_plan()
    config = env.config()
    tokens: list[str] = secrets_of(emu)
    expired = []

    def progress(done: int, total: int) -> None:
        if done == 1:  # the faults start with the writes (Gen 1's read is 50 calls)
            emu.set_faults(**faults)
        if done == total // 2 and not expired:  # half way: every token dies
            emu.set_faults(fail_rate=0.0, drop_rate=0.0)
            tokens.extend(secrets_of(emu))
            emu.expire_tokens()
            emu.set_faults(**faults)
            expired.append(done)

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if "rate_limit_per_token" in faults:  # a rate limit needs time to pass
            time.sleep(seconds)

    settings = FAST_RETRIES
    if "rate_limit_per_token" in faults:
        settings = replace(FAST_RETRIES, backoff_initial=0.05, backoff_max=0.5, jitter=0.05)
    outcome = service.apply_plan(
        service.Engine(config, sleep=sleep, settings=settings),
        service.read_plan_file(plan_file), actor="schedule", progress=progress,
    )  # fmt: skip
    emu.set_faults(fail_rate=0.0, drop_rate=0.0, rate_limit_per_token=0.0)
    assert expired, "the token expiry was never injected"
    report = outcome.applied
    assert report is not None
    assert report.failures == (), report.failures
    env.assert_converged()
    assert_each_action_done_once(env, plan_file)
    assert slept, "no retry happened: the faults were not exercised"
    # Retries answered by looking first: a retried create shows a get_user attempt.
    rows = [r for r in service.query_audit(service.Engine(config)) if r.call]
    retried = {r.action_key for r in rows if r.result == "retry"}
    assert retried
    looked = {r.action_key for r in rows if r.call in ("get_user", "department_exists")}
    assert looked and looked <= retried  # looked at the live object only after a doubt
    if "drop_rate" in faults:  # writes that happened unheard were recognised, not redone
        outcomes = [r for r in service.query_audit(service.Engine(config)) if r.call is None]
        assert any("already in the wanted state" in (r.errmsg or "") for r in outcomes)
    if "rate_limit_per_token" in faults:
        assert {r.errcode for r in rows if r.result == "retry"} <= {"45009", "1002"}
    # Secrets and the generated passwords appear nowhere in the audit log.
    passwords = [
        json.loads(line)["password"]
        for line in Path(report.password_file or "").read_text(encoding="utf-8").splitlines()
        if "password" in json.loads(line)
    ]
    assert len(passwords) >= 30
    tokens.extend(secrets_of(emu))
    assert_not_in_audit(env, passwords + tokens)
    # Nothing left to do.
    mark = len(emu.calls())
    plan2 = env.ingest_and_plan("plan2.json")
    assert service.read_plan_file(plan2).actions == ()
    assert env.write_calls(since=mark) == []
