"""Property: on any dependency graph, with any concurrency, the executor runs an action only
after everything it depends on is done, fails exactly the actions Exmail refuses, skips
exactly their transitive dependants, and does everything else. Random department plans
against the Gen 2 emulator over real HTTP, checkpoints in a real SQLite file."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.harness import RunningEmulator, start_emulator
from syncengine.executor import Executor, ExecutorSettings
from syncengine.plan import Action, ActionKind, make_plan
from syncengine.providers.base import MailboxProvider
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository

pytestmark = pytest.mark.timeout(240)
_counter = itertools.count()


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    e = start_emulator("v2")
    yield e
    e.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    url = f"sqlite:///{tmp_path_factory.mktemp('props') / 'staging.db'}"
    staging_db.upgrade(url)
    r = Repository(staging_db.make_engine(url))
    yield r
    r.close()


@pytest.fixture(scope="module")
def provider(emu: RunningEmulator) -> Iterator[MailboxProvider]:
    p = service.build_provider(
        parse_config({"exmail": emu.exmail_config(), "apply": {"rate_per_second": 0}})
    )
    yield p
    p.close()


@st.composite
def graphs(draw: st.DrawFn) -> list[tuple[str, tuple[int, ...]]]:
    """Departments as (path, indexes of earlier departments it depends on): each one under
    an earlier one or the root; a name with ``*`` is refused by Exmail; extra edges too."""
    n = draw(st.integers(min_value=1, max_value=12))
    nodes: list[tuple[str, tuple[int, ...]]] = []
    for i in range(n):
        bad = draw(st.booleans()) and draw(st.booleans())  # about one in four
        name = f"部{i}{'*' if bad else ''}"
        parent = draw(st.none() | st.integers(min_value=0, max_value=max(0, i - 1)))
        if i == 0 or parent is None or nodes[parent][0].count("/") >= 3:
            path, deps = name, ()
        else:
            path, deps = f"{nodes[parent][0]}/{name}", (parent,)
        extra = draw(st.lists(st.integers(min_value=0, max_value=max(0, i - 1)), max_size=2))
        deps = tuple(sorted(set(deps) | ({e for e in extra if e < i} if i else set())))
        nodes.append((path, deps))
    return nodes


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(graph=graphs(), concurrency=st.integers(min_value=1, max_value=4))
def test_dependencies_failures_and_skips(
    graph: list[tuple[str, tuple[int, ...]]],
    concurrency: int,
    emu: RunningEmulator,
    repo: Repository,
    provider: MailboxProvider,
) -> None:  # fmt: skip
    emu.reset()
    actions = [
        Action(f"create_department:{path}", ActionKind.CREATE_DEPARTMENT, path, "HR has it",
               depends_on=tuple(f"create_department:{graph[d][0]}" for d in deps))
        for path, deps in graph
    ]  # fmt: skip
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_counter))
    plan = make_plan(created_at=created, config_fingerprint="c", state_fingerprint="s",
                     actions=actions)  # fmt: skip
    rows, seqs = service.checkpoint_rows(plan)
    record = repo.save_plan(checksum=plan.checksum, document=plan.to_json(), actions=rows)
    run_id = repo.start_run("apply", "schedule")
    sink = service.StagingSink(repo, record.id, seqs, run_id, "schedule")
    settings_ = ExecutorSettings(concurrency=concurrency, max_attempts=2, backoff_initial=0.001)
    Executor(provider, sink, settings=settings_, sleep=lambda s: None,
             department_exists=provider.department_exists).run(plan)  # fmt: skip

    status = {a.action_key: a.status for a in repo.load_actions(record.id)}
    expected: dict[str, str] = {}
    for a in actions:  # plan order: dependencies are decided first
        deps = [expected[d] for d in a.depends_on]
        if any(s != "done" for s in deps):
            expected[a.key] = "skipped"
        else:
            expected[a.key] = "failed" if "*" in a.target else "done"
    assert status == expected
    paths = {d["path"] for d in emu.state()["departments"]} - {""}
    seeded = {"研发中心", "研发中心/平台部", "研发中心/移动部", "市场部", "人力资源部"}
    assert paths - seeded == {a.target for a in actions if expected[a.key] == "done"}
    # Order: every row of an action comes after the outcome row of each of its dependencies.
    audit = repo.query_audit(plan_id=record.id)
    first = {}
    outcome = {}
    for r in audit:
        assert r.action_key is not None and r.id is not None
        first.setdefault(r.action_key, r.id)
        if r.call is None:
            outcome[r.action_key] = r.id
    for a in actions:
        if expected[a.key] == "skipped":
            continue
        for d in a.depends_on:
            assert outcome[d] < first[a.key]
    assert set(outcome) == set(expected)  # one outcome row per action, skipped ones too
