"""The executor against the emulator over real HTTP, checkpointing into a real staging
database (SQLite and PostgreSQL): dependency failures, the retry cap, "already exists",
resuming a ``running`` action, links, and the concurrency bound."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from syncengine import service
from syncengine.config import parse_config
from syncengine.domain import Gender, IdentityLink, Mailbox, UserUpdate
from syncengine.emulator.harness import RunningEmulator
from syncengine.executor import ExecutionResult, Executor, ExecutorSettings
from syncengine.passwords import FilePasswordDelivery
from syncengine.plan import Action, ActionKind, LinkRecord, PasswordPolicy, Plan, make_plan
from syncengine.providers.base import MailboxProvider
from syncengine.staging.repository import Repository

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
FAST = ExecutorSettings(concurrency=3, max_attempts=6, backoff_initial=0.01, backoff_max=0.05,
                        jitter=0.01, max_retry_seconds=30)  # fmt: skip


def dept(path: str, *deps: str) -> Action:
    return Action(f"create_department:{path}", ActionKind.CREATE_DEPARTMENT, path,
                  f"HR has {path}", depends_on=deps)  # fmt: skip


def new_user(email: str, eid: str, name: str, departments: Sequence[str] = (), *deps: str,
             **fields: Any) -> Action:  # fmt: skip
    mailbox = Mailbox(email, name, eid, tuple(departments), **fields)
    return Action(f"create_user:{email}", ActionKind.CREATE_USER, email, "a new hire",
                  employee_id=eid, depends_on=deps, mailbox=mailbox,
                  link=LinkRecord(eid, email, generated=False),
                  password=PasswordPolicy(delivery="file"))  # fmt: skip


def plan_of(actions: Sequence[Action]) -> Plan:
    return make_plan(created_at=T0, config_fingerprint="cfg", state_fingerprint="state",
                     actions=actions)  # fmt: skip


@dataclass
class Bench:
    emu: RunningEmulator
    repo: Repository
    provider: MailboxProvider
    tmp: Path

    def run(self, plan: Plan, settings: ExecutorSettings = FAST,
            statuses: dict[str, str] | None = None,
            sleep: Callable[[float], None] | None = None,
            provider: MailboxProvider | None = None,
            progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None,
            lane: bool | None = None,
            ) -> tuple[ExecutionResult, int]:  # fmt: skip
        rows, seqs = service.checkpoint_rows(plan)
        record = self.repo.save_plan(checksum=plan.checksum, document=plan.to_json(),
                                     actions=rows)  # fmt: skip
        for key, status in (statuses or {}).items():
            if status == "running":
                self.repo.start_action(record.id, seqs[key])  # a killed run left it running
        run_id = self.repo.start_run("apply", "schedule")
        sink = service.StagingSink(self.repo, record.id, seqs, run_id, "schedule")
        prov = provider or self.provider
        executor = Executor(prov, sink, settings=settings, sleep=sleep or (lambda s: None),
                            passwords=FilePasswordDelivery(self.tmp / "pw.jsonl"),
                            department_exists=self.provider.department_exists,
                            progress=progress, stop=stop, lane=lane)  # fmt: skip
        return executor.run(plan, statuses), record.id

    def status(self, plan_id: int) -> dict[str, str]:
        return {a.action_key: a.status for a in self.repo.load_actions(plan_id)}

    def passwords(self) -> list[dict[str, Any]]:
        path = self.tmp / "pw.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(params=["v1", "v2"])
def bench(request: pytest.FixtureRequest, staging_repo: Repository, tmp_path: Path,
          emulator_factory: Callable[..., RunningEmulator]) -> Iterator[Bench]:  # fmt: skip
    emu = emulator_factory(request.param)
    provider = service.build_provider(
        parse_config({"exmail": emu.exmail_config(), "apply": {"rate_per_second": 0}})
    )
    yield Bench(emu, staging_repo, provider, tmp_path)
    provider.close()


def test_a_failure_skips_only_its_dependants(bench: Bench) -> None:
    u1 = new_user("u1@example.com", "N1", "一号", ["甲"], "create_department:甲")
    u2 = new_user("u2@example.com", "N2", "二号", ["缺失/乙"], "create_department:缺失/乙")
    link2 = Action("link:N2", ActionKind.LINK, "u2@example.com", "adopt", employee_id="N2",
                   depends_on=(u2.key,), link=LinkRecord("N2", "u2@example.com"))  # fmt: skip
    u3 = new_user("u3@example.com", "N3", "三号")
    plan = plan_of([dept("甲"), u1, dept("缺失/乙"), u2, link2, u3])
    ticks: list[tuple[int, int]] = []
    result, plan_id = bench.run(plan, progress=lambda d, t: ticks.append((d, t)))
    assert ticks[-1] == (6, 6)  # skipped actions count as finished work too
    assert bench.status(plan_id) == {
        "create_department:甲": "done", u1.key: "done", "create_department:缺失/乙": "failed",
        u2.key: "skipped", "link:N2": "skipped", u3.key: "done",
    }  # fmt: skip
    reasons = {o.key: o.detail for o in result.failures}
    assert "create_department:缺失/乙" in reasons[u2.key]
    assert u2.key in reasons["link:N2"] and "was skipped" in reasons["link:N2"]
    users = {u["userid"] for u in bench.emu.state()["users"]}
    assert {"u1@example.com", "u3@example.com"} <= users and "u2@example.com" not in users
    assert set(bench.repo.load_links()) == {"N1", "N3"}
    rows = [r for r in bench.repo.query_audit(plan_id=plan_id) if r.call is None]
    assert sorted((r.action_key, r.result) for r in rows) == sorted(bench.status(plan_id).items())
    # Passwords went out for the two created mailboxes, each one works.
    handed = {p["email"]: p["password"] for p in bench.passwords() if "password" in p}
    assert set(handed) == {"u1@example.com", "u3@example.com"}
    assert all(bench.emu.check_password(e, pw) for e, pw in handed.items())


def test_retries_stop_at_the_attempt_cap_and_the_time_cap(bench: Bench) -> None:
    bench.emu.set_faults(fail_rate=1.0)
    slept: list[float] = []
    result, plan_id = bench.run(plan_of([dept("重试部")]), sleep=slept.append)
    (outcome,) = result.outcomes
    assert outcome.status.value == "failed" and "gave up after 6 tries (6 call(s)" in outcome.detail
    attempts = [r for r in bench.repo.query_audit(plan_id=plan_id) if r.call]
    assert [r.attempt for r in attempts] == [1, 2, 3, 4, 5, 6]
    assert all(r.result == "retry" for r in attempts)
    assert attempts[0].call == "create_department"  # then: look before redoing it
    assert {r.call for r in attempts[1:]} == {"department_exists"}
    assert len(slept) == 5 and all(0 < s <= 0.06 for s in slept)
    # A time cap smaller than the attempts allow: stops when the next sleep would pass it.
    slept.clear()
    capped = ExecutorSettings(max_attempts=50, backoff_initial=0.5, backoff_max=10, jitter=0,
                              max_retry_seconds=4.0)  # fmt: skip
    result, _ = bench.run(plan_of([dept("封顶部")]), settings=capped, sleep=slept.append)
    assert result.outcomes[0].status.value == "failed"
    assert slept == [0.5, 1.0, 2.0] and sum(slept) <= 4.0


def test_create_that_exists_counts_only_when_it_matches(bench: Bench) -> None:
    seed = Mailbox("zhangsan@example.com", "张三", "E0001", ("研发中心/平台部",),
                   ("san.zhang@example.com",), "高级工程师", "010-62000001", "13800000001",
                   Gender.MALE)  # fmt: skip
    same = Action("create_user:zhangsan@example.com", ActionKind.CREATE_USER, seed.email,
                  "hire", employee_id="E0001", mailbox=seed,
                  link=LinkRecord("E0001", seed.email))  # fmt: skip
    result, _ = bench.run(plan_of([same]))
    assert result.outcomes[0].status.value == "done"
    assert "already existed as asked" in result.outcomes[0].detail
    assert bench.repo.load_links()["E0001"].email == seed.email
    lines = bench.passwords()  # the password handed over is void: not this mailbox's
    assert lines[-1]["void"] is True and lines[-1]["email"] == seed.email
    other = new_user("lisi@example.com", "E0002", "李斯", ["研发中心/移动部"])
    result, _ = bench.run(plan_of([other]))
    (outcome,) = result.outcomes
    assert outcome.status.value == "failed"
    assert "exists but is not the one asked for" in outcome.detail and "name" in outcome.detail
    assert bench.passwords()[-1]["void"] is True


def test_a_running_action_is_rechecked_not_redone(bench: Bench) -> None:
    bench.provider.update_user("lisi@example.com", UserUpdate(aliases=("si.li@example.com",)))
    bench.provider.swap_alias("lisi@example.com", "si.li@example.com")  # the killed run did it
    swap = Action("swap_primary:lisi@example.com", ActionKind.SWAP_PRIMARY, "lisi@example.com",
                  "address change", employee_id="E0002", alias="si.li@example.com",
                  link=LinkRecord("E0002", "si.li@example.com"))  # fmt: skip
    fresh = new_user("new@example.com", "N9", "新人")  # left running, but never sent
    plan = plan_of([swap, fresh])
    mark = len(bench.emu.calls())
    _, plan_id = bench.run(plan, statuses={swap.key: "running", fresh.key: "running"})
    assert bench.status(plan_id) == {swap.key: "done", fresh.key: "done"}
    endpoints = [c["endpoint"] for c in bench.emu.calls(mark)]
    assert not any("swapalias" in e for e in endpoints)  # swapping again would undo it
    users = {u["userid"]: u for u in bench.emu.state()["users"]}
    assert users["si.li@example.com"]["slaves"] == ["lisi@example.com"]
    assert "new@example.com" in users
    rows = bench.repo.query_audit(plan_id=plan_id)
    assert [r.call for r in rows if r.action_key == swap.key and r.call] == ["get_user"]
    actions = {a.action_key: a for a in bench.repo.load_actions(plan_id)}
    assert actions[swap.key].attempts == 2  # the killed start and this one


def test_links_follow_disable_and_delete(bench: Bench) -> None:
    bench.repo.save_links([IdentityLink("E0004", "zhaoliu@example.com", T0)])
    disable = Action("disable_user:wangwu@example.com", ActionKind.DISABLE_USER,
                     "wangwu@example.com", "left", employee_id="E0003",
                     update=UserUpdate(enabled=False),
                     link=LinkRecord("E0003", "wangwu@example.com",
                                     disabled_since=date(2026, 11, 1)))  # fmt: skip
    delete = Action(
        "delete_user:zhaoliu@example.com",
        ActionKind.DELETE_USER,
        "zhaoliu@example.com",
        "grace period over",
        employee_id="E0004",
    )
    result, _ = bench.run(plan_of([disable, delete]))
    assert result.ok, result.failures
    links = bench.repo.load_links()
    assert links["E0003"].disabled_since == date(2026, 11, 1) and "E0004" not in links
    users = {u["userid"]: u for u in bench.emu.state()["users"]}
    assert int(users["wangwu@example.com"]["enable"]) == 0
    assert "zhaoliu@example.com" not in users


class CountingProvider:
    """Delegates to the real provider and records how many writes were in flight at once."""

    def __init__(self, inner: MailboxProvider) -> None:
        self.inner = inner
        self.api = inner.api
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def create_department(self, path: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            self.inner.create_department(path)
        finally:
            with self._lock:
                self.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_concurrency_is_bounded(bench: Bench) -> None:
    bench.emu.set_faults(latency_ms=40)
    counting = CountingProvider(bench.provider)
    plan = plan_of([dept(f"并发{i:02d}") for i in range(12)])
    result, _ = bench.run(plan, provider=counting)  # type: ignore[arg-type]
    assert result.ok and result.counts()["done"] == 12
    assert counting.peak == 3


def test_killed_after_its_outcome_row_is_not_audited_twice(bench: Bench) -> None:
    """A run killed between the ``done`` audit row and the ``done`` checkpoint: the resumed
    run closes the checkpoint without a call and without a second outcome row."""
    from syncengine.staging.repository import AuditEntry

    action = dept("已审计部")
    plan = plan_of([action])
    bench.provider.create_department("已审计部")
    rows, _ = service.checkpoint_rows(plan)
    record = bench.repo.save_plan(checksum=plan.checksum, document=plan.to_json(), actions=rows)
    bench.repo.append_audit(AuditEntry(result="done", plan_id=record.id,
                                       action_key=action.key, attempts=1))  # fmt: skip
    mark = len(bench.emu.calls())
    result, plan_id = bench.run(plan, statuses={action.key: "running"})
    assert plan_id == record.id and result.outcomes[0].status.value == "done"
    assert bench.emu.calls(mark) == []
    outcome_rows = [r for r in bench.repo.query_audit(plan_id=plan_id) if r.call is None]
    assert [r.result for r in outcome_rows] == ["done"]


def test_a_link_that_cannot_be_stored_fails_only_its_action(bench: Bench) -> None:
    """The outcome, its audit rows and the link are one write: a link refused (the address is
    another employee's) leaves the action failed with one failed outcome row and no done
    checkpoint, while the actions written alongside it keep theirs."""
    bench.repo.save_links([IdentityLink("OTHER", "u2@example.com", T0)])
    users = [new_user(f"u{i}@example.com", f"N{i}", f"{i}号") for i in (1, 2, 3)]
    result, plan_id = bench.run(plan_of(users))
    assert bench.status(plan_id) == {
        users[0].key: "done", users[1].key: "failed", users[2].key: "done"
    }  # fmt: skip
    (failure,) = result.failures
    assert (
        "was made in Exmail, but storing the identity link or owned group failed" in failure.detail
    )
    assert "linked to two employees" in failure.detail
    outcomes = [r for r in bench.repo.query_audit(plan_id=plan_id) if r.call is None]
    assert sorted((r.action_key, r.result) for r in outcomes) == sorted(
        bench.status(plan_id).items()
    )
    links = {k: v.email for k, v in bench.repo.load_links().items()}
    assert links == {"OTHER": "u2@example.com", "N1": "u1@example.com", "N3": "u3@example.com"}


def test_a_stop_lets_running_actions_finish_and_starts_nothing_more(bench: Bench) -> None:
    users = [new_user(f"s{i}@example.com", f"S{i}", f"停{i}") for i in range(24)]
    stop = threading.Event()
    settings = ExecutorSettings(concurrency=3, max_attempts=2, backoff_initial=0.01,
                                backoff_max=0.05, jitter=0.01)  # fmt: skip
    result, plan_id = bench.run(
        plan_of(users), settings, progress=lambda d, t: stop.set(), stop=stop
    )
    assert result.interrupted
    states = bench.status(plan_id)
    done = sorted(k for k, v in states.items() if v == "done")
    # The action whose outcome set the stop, plus those already started then: a worker takes
    # (and starts) its next action before it settles the one it finished, whose outcome is
    # committed with that start, so each worker may hold two; at concurrency 3 there are 3
    # call slots and 2 preparing workers (5 workers: at most 10 of the 24 in all).
    assert 1 <= len(done) <= 10
    assert set(states.values()) == {"done", "pending"}  # none left running, none failed
    assert sorted(o.key for o in result.outcomes) == done
    made = {u["userid"] for u in bench.emu.state()["users"]}
    assert {k.split(":", 1)[1] for k in done} <= made
    assert len(made & {u.target for u in users}) == len(done)  # nothing started after it
