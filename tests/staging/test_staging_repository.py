"""The staging repository on SQLite and PostgreSQL: snapshots, links, plans and checkpoints,
audit, hook events, cursors and runs."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from syncengine.domain import Department, Gender, IdentityLink, Person, RowProblem, Status
from syncengine.errors import StagingError
from syncengine.staging import codec
from syncengine.staging import db as staging_db
from syncengine.staging.db import make_session_factory
from syncengine.staging.models import Run
from syncengine.staging.repository import (
    AuditEntry,
    EventReplay,
    EventStored,
    NewAction,
    Repository,
    SignatureReplay,
    StoredDepartment,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def person(eid: str, name: str = "张三", **kw: object) -> Person:
    return Person(employee_id=eid, name=name, **kw)  # type: ignore[arg-type]


FULL = Person(
    employee_id="E001",
    name="欧阳娜娜",
    email="nana.ouyang@example.com",
    aliases=("nana@example.com", "ouyang@example.com"),
    departments=("研发中心/平台部", "研发中心"),
    position="工程师",
    mobile="+86-13800000000",
    tel="010-1234",
    gender=Gender.FEMALE,
    status=Status.LEAVE,
    start_date=date(2020, 2, 29),
    end_date=date(2027, 1, 1),
)


def snapshot_with(repo: Repository, people: list[Person], source: str = "test") -> int:
    run_id = repo.start_run("ingest", "cli:test")
    snap = repo.begin_snapshot(run_id, source)
    repo.add_people(snap, people)
    return snap


# --- serialisation ------------------------------------------------------------------------


def test_person_json_round_trip_and_hash_is_stable() -> None:
    data = codec.person_to_dict(FULL)
    assert codec.person_from_dict(data) == FULL
    assert data["gender"] == 2 and data["status"] == "leave" and data["start_date"] == "2020-02-29"
    assert codec.person_hash(FULL) == codec.person_hash(codec.person_from_dict(data))
    assert codec.person_hash(FULL) != codec.person_hash(person("E001", "欧阳娜"))
    # Rows written before a field existed still load, with the field's default.
    assert codec.person_from_dict({"employee_id": "E9", "name": "x"}) == person("E9", "x")


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_lifecycle_failed_ingest_keeps_last_good(staging_repo: Repository) -> None:
    repo = staging_repo
    assert repo.current_snapshot() is None

    first = snapshot_with(repo, [FULL, person("E002")])
    repo.add_departments(
        first,
        [
            StoredDepartment(Department("研发中心", "D1"), None),
            StoredDepartment(Department("研发中心/平台部", "D2"), "D1"),
            Department("销售部"),
        ],
    )
    repo.add_problems(first, [RowProblem("duplicate employee id", 7, "工号", "E002", "E002")])
    assert repo.current_snapshot() is None  # loading is not current
    done = repo.complete_snapshot(first, {"people": 2, "departments": 3, "quarantined": 1})
    assert done.is_current and done.status == "complete" and done.counts["people"] == 2

    second = snapshot_with(repo, [person("E003")])
    repo.fail_snapshot(second, "source file vanished halfway")

    current = repo.current_snapshot()
    assert current is not None and current.id == first
    failed = repo.get_snapshot(second)
    assert failed is not None and failed.status == "failed" and not failed.is_current
    assert failed.error == "source file vanished halfway"
    assert repo.load_people(second) == []  # a partial copy is not kept

    assert repo.load_people(first) == [FULL, person("E002")]
    assert repo.load_people(first, ["E002", "nobody"]) == [person("E002")]
    assert repo.load_departments(first) == [
        Department("研发中心", "D1"),
        Department("研发中心/平台部", "D2"),
        Department("销售部"),
    ]
    rows = repo.load_department_rows(first)
    assert [r.parent_hr_id for r in rows] == [None, "D1", None]
    assert repo.load_problems(first) == [
        RowProblem("duplicate employee id", 7, "工号", "E002", "E002")
    ]

    third = snapshot_with(repo, [person("E004")])
    repo.complete_snapshot(third, {"people": 1})
    current = repo.current_snapshot()
    assert current is not None and current.id == third
    first_info = repo.get_snapshot(first)
    assert first_info is not None and not first_info.is_current


def test_complete_snapshot_takes_no_more_records(staging_repo: Repository) -> None:
    snap = snapshot_with(staging_repo, [person("E1")])
    staging_repo.complete_snapshot(snap, {})
    with pytest.raises(StagingError, match="only a loading snapshot"):
        staging_repo.add_people(snap, [person("E2")])
    with pytest.raises(StagingError, match="only a loading snapshot"):
        staging_repo.complete_snapshot(snap, {})
    with pytest.raises(StagingError, match="only a loading snapshot can fail"):
        staging_repo.fail_snapshot(snap, "late failure")
    assert staging_repo.load_people(snap) == [person("E1")]
    current = staging_repo.current_snapshot()
    assert current is not None and current.id == snap


def test_duplicate_employee_in_one_snapshot_is_refused_whole(staging_repo: Repository) -> None:
    run_id = staging_repo.start_run("ingest", "cli:test")
    snap = staging_repo.begin_snapshot(run_id, "dup")
    with pytest.raises(StagingError, match="duplicate"):
        staging_repo.add_people(snap, [person("E1"), person("E2"), person("E1", "李四")])
    assert staging_repo.load_people(snap) == []  # the call is one transaction


def test_compare_counts_new_changed_gone_in_sql(staging_repo: Repository) -> None:
    repo = Repository(staging_repo.engine, batch_size=7)  # several chunks per call
    before = [person(f"E{i:03d}", f"人{i}") for i in range(50)]
    after = [
        person(f"E{i:03d}", f"人{i}" if i % 10 else f"改名{i}")  # 10, 20..40 renamed
        for i in range(5, 60)  # 0..4 gone, 50..59 new
    ]
    a = snapshot_with(repo, before)
    b = snapshot_with(repo, after)

    diff = repo.compare(a, b)

    assert diff.gone == ("E000", "E001", "E002", "E003", "E004")
    assert diff.new == tuple(f"E{i:03d}" for i in range(50, 60))
    assert diff.changed == ("E010", "E020", "E030", "E040")
    assert diff.counts() == {"new": 10, "changed": 4, "gone": 5}
    assert repo.compare(None, a).counts() == {"new": 50, "changed": 0, "gone": 0}
    assert repo.count_people(b) == 55


def test_pruning_drops_old_snapshots_rows_and_keeps_every_header(
    staging_repo: Repository,
) -> None:
    repo = staging_repo
    complete = []
    for i in range(5):
        snap = snapshot_with(repo, [person("E1"), person(f"E{i + 2}")])
        repo.add_problems(snap, [RowProblem(row=2, field="email", value="x", reason="bad")])
        repo.complete_snapshot(snap, {"people": 2})
        complete.append(snap)
    failed = snapshot_with(repo, [person("E9")])
    repo.add_problems(failed, [RowProblem(row=3, field="email", value="y", reason="bad")])
    repo.fail_snapshot(failed, "the export was cut off")  # newer, but not complete

    assert repo.prune_snapshot_rows(keep=2) == 3
    for snap in complete[:3]:
        assert repo.load_people(snap) == [] and repo.load_problems(snap) == []
        info = repo.get_snapshot(snap)
        assert info is not None and info.counts == {"people": 2}  # the header stays
    for i, snap in enumerate(complete[3:], start=3):
        assert [p.employee_id for p in repo.load_people(snap)] == ["E1", f"E{i + 2}"]
        assert len(repo.load_problems(snap)) == 1
    assert len(repo.load_problems(failed)) == 1  # newer than the cutoff: kept
    current = repo.current_snapshot()
    assert current is not None and current.id == complete[-1]
    assert repo.prune_snapshot_rows(keep=2) == 0  # nothing left to prune
    assert len(repo.list_snapshots(limit=100)) == 6


# --- identity links -----------------------------------------------------------------------


def test_links_upsert_swap_and_conflict(staging_repo: Repository) -> None:
    repo = staging_repo
    a = IdentityLink("E1", "a@example.com", T0)
    b = IdentityLink("E2", "b@example.com", T0, generated=True)
    assert repo.save_links([a, b]) == 2
    assert repo.load_links() == {"E1": a, "E2": b}

    # Update: the same employee, a new address and a disable date.
    a2 = IdentityLink("E1", "a.new@example.com", T0, disabled_since=date(2026, 4, 1))
    repo.save_links([a2])
    assert repo.load_links()["E1"] == a2

    # Two links swap addresses in one call.
    s1 = IdentityLink("E1", "b@example.com", T0)
    s2 = IdentityLink("E2", "a.new@example.com", T0, generated=True)
    repo.save_links([s1, s2])
    assert repo.load_links() == {"E1": s1, "E2": s2}

    # An address linked to someone else is refused, and nothing of the call is saved.
    with pytest.raises(StagingError, match="linked to two employees"):
        repo.save_links(
            [IdentityLink("E3", "c@example.com", T0), IdentityLink("E4", "b@example.com", T0)]
        )
    assert set(repo.load_links()) == {"E1", "E2"}

    assert repo.load_links(["E2", "E9"]) == {"E2": s2}
    assert repo.delete_link("E1") is True
    assert repo.delete_link("E1") is False
    assert set(repo.load_links()) == {"E2"}


def test_datetimes_come_back_aware_utc_and_naive_ones_are_refused(
    staging_repo: Repository,
) -> None:
    beijing = timezone(timedelta(hours=8))
    seen = datetime(2026, 3, 1, 16, 30, 15, 123456, tzinfo=beijing)
    staging_repo.save_links([IdentityLink("E1", "a@example.com", seen)])
    back = staging_repo.load_links()["E1"].first_seen
    assert back == seen and back.tzinfo is not None and back.utcoffset() == timedelta(0)
    assert back.hour == 8 and back.microsecond == 123456
    with pytest.raises(Exception, match="naive datetime"):
        staging_repo.save_links([IdentityLink("E2", "b@example.com", datetime(2026, 3, 1))])


# --- plans and action checkpoints ---------------------------------------------------------


def save_sample_plan(repo: Repository, checksum: str = "c" * 64) -> int:
    actions = [
        NewAction(1, "dept:研发中心", "create_department", "研发中心"),
        NewAction(2, "user:E1", "create_user", "a@example.com", "E1", depends_on=(1,)),
        NewAction(3, "user:E2", "create_user", "b@example.com", "E2", depends_on=(1,)),
        NewAction(4, "disable:E3", "disable_user", "c@example.com", "E3"),
    ]
    plan = repo.save_plan(
        checksum=checksum,
        document='{"schema": 1}',
        actions=actions,
        config_fingerprint="f" * 64,
        state_fingerprint="s" * 64,
        blocked=True,
        block_reasons=["deletes 40% of managed mailboxes (limit 10%)"],
    )
    return plan.id


def test_plan_save_is_idempotent_by_checksum(staging_repo: Repository) -> None:
    plan_id = save_sample_plan(staging_repo)
    again = staging_repo.save_plan(checksum="c" * 64, document="other", actions=[])
    assert again.id == plan_id and again.document == '{"schema": 1}'
    loaded = staging_repo.load_plan(plan_id)
    assert loaded == staging_repo.load_plan("c" * 64)
    assert loaded is not None and loaded.blocked and loaded.status == "saved"
    assert loaded.block_reasons == ("deletes 40% of managed mailboxes (limit 10%)",)
    actions = staging_repo.load_actions(plan_id)
    assert [a.seq for a in actions] == [1, 2, 3, 4]
    assert actions[1].depends_on == (1,) and actions[1].employee_id == "E1"
    assert {a.status for a in actions} == {"pending"}
    assert staging_repo.load_plan(999999) is None


def test_action_checkpoints_follow_the_lifecycle(staging_repo: Repository) -> None:
    repo = staging_repo
    plan_id = save_sample_plan(repo)

    started = repo.start_action(plan_id, 1)
    assert started.status == "running" and started.attempts == 1 and started.started_at
    done = repo.finish_action(plan_id, 1, "done")
    assert done.status == "done" and done.finished_at is not None

    # A done action is never started again.
    with pytest.raises(StagingError, match="never applied twice"):
        repo.start_action(plan_id, 1)
    with pytest.raises(StagingError, match="is done"):
        repo.finish_action(plan_id, 1, "failed")

    repo.start_action(plan_id, 2)
    repo.finish_action(plan_id, 2, "failed", error="60102 user exists")
    repo.finish_action(plan_id, 3, "skipped", error="depends on a failed action")
    with pytest.raises(StagingError, match="is pending"):
        repo.finish_action(plan_id, 4, "done")  # done only from running

    # A run killed mid-call leaves a running action: it is still to do; only an explicit
    # resume restarts it, and that counts a second attempt.
    assert repo.unfinished_plans() == []  # saved for review only: never resumed by accident
    repo.set_plan_status(plan_id, "applying")
    repo.start_action(plan_id, 4)
    assert [(a.seq, a.status) for a in repo.pending_actions(plan_id)] == [(4, "running")]
    with pytest.raises(StagingError, match="is running"):
        repo.start_action(plan_id, 4)
    assert repo.start_action(plan_id, 4, resuming=True).attempts == 2

    assert repo.action_counts(plan_id) == {"done": 1, "failed": 1, "skipped": 1, "running": 1}
    full = [(a.action_key, a.seq, a.status) for a in repo.load_actions(plan_id)]
    assert repo.action_states(plan_id) == full  # what an apply reads of its checkpoints
    assert [status for _, _, status in full] == ["done", "failed", "skipped", "running"]
    assert [p.id for p in repo.unfinished_plans()] == [plan_id]
    repo.finish_action(plan_id, 4, "done")
    assert repo.unfinished_plans() == []

    assert repo.reset_actions(plan_id) == 2
    assert [a.seq for a in repo.pending_actions(plan_id)] == [2, 3]
    with pytest.raises(StagingError, match="never reset"):
        repo.reset_actions(plan_id, ["done"])
    repo.set_plan_status(plan_id, "applied")
    plan = repo.load_plan(plan_id)
    assert plan is not None and plan.status == "applied"
    assert repo.unfinished_plans() == []
    with pytest.raises(ValueError):
        repo.set_plan_status(plan_id, "nonsense")


def test_duplicate_action_key_is_refused(staging_repo: Repository) -> None:
    with pytest.raises(StagingError, match="unique"):
        staging_repo.save_plan(
            checksum="d" * 64,
            document="{}",
            actions=[NewAction(1, "k", "create_user", "a"), NewAction(2, "k", "create_user", "b")],
        )
    assert staging_repo.load_plan("d" * 64) is None


# --- audit log ----------------------------------------------------------------------------


def test_audit_queries_by_run_employee_email_and_time(staging_repo: Repository) -> None:
    repo = staging_repo
    run1 = repo.start_run("apply", "cli:alice")
    run2 = repo.start_run("hook", "hook:d-42")
    plan_id = save_sample_plan(repo)
    repo.append_audit(
        AuditEntry(
            "done",
            at=T0,
            run_id=run1,
            actor="cli:alice",
            plan_id=plan_id,
            action_key="user:E1",
            kind="create_user",
            target="a@example.com",
            employee_id="E1",
            email="A@Example.com",
            diffs={"name": [None, "张三"], "password": "S3cret!", "nested": {"token": "t"}},
            attempts=1,
            duration_ms=35,
            call="user/create",
        )
    )
    repo.append_audit_many(
        [
            AuditEntry(
                "retry",
                at=T0 + timedelta(hours=1),
                run_id=run1,
                employee_id="E2",
                errcode=-1,
                errmsg="system busy",
                attempt=1,
                call="user/create",
            ),
            AuditEntry(
                "done",
                at=T0 + timedelta(days=1),
                run_id=run2,
                employee_id="E1",
                email="a@example.com",
                kind="update_user",
            ),
        ]
    )

    e1 = repo.query_audit(employee_id="E1")
    assert [e.run_id for e in e1] == [run1, run2]
    first = e1[0]
    assert first.email == "a@example.com" and first.at == T0 and first.id is not None
    assert first.diffs == {"name": [None, "张三"], "password": "***", "nested": {"token": "***"}}
    assert len(repo.query_audit(email="A@EXAMPLE.COM")) == 2
    assert [e.result for e in repo.query_audit(run_id=run1)] == ["done", "retry"]
    retry = repo.query_audit(employee_id="E2")[0]
    assert retry.errcode == "-1" and retry.errmsg == "system busy"
    assert [e.run_id for e in repo.query_audit(since=T0 + timedelta(minutes=30))] == [run1, run2]
    assert len(repo.query_audit(since=T0, until=T0 + timedelta(hours=2))) == 2
    assert [e.result for e in repo.query_audit(limit=1)] == ["done"]
    assert repo.query_audit(employee_id="E1", run_id=run2)[0].kind == "update_user"
    assert repo.query_audit(plan_id=plan_id)[0].employee_id == "E1"


# --- hook events --------------------------------------------------------------------------


def test_used_signatures_are_single_use_until_they_expire(staging_url: str) -> None:
    now = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    repo = Repository(staging_db.make_engine(staging_url), clock=lambda: now[0])
    try:
        soon = now[0] + timedelta(seconds=60)
        stored = repo.store_event("d-1", "terminate", {"employee_id": "E1"},
                                  signature=("hook:aa", soon))  # fmt: skip
        assert isinstance(stored, EventStored)
        # Same signed request under a new delivery id: refused, nothing written.
        again = repo.store_event("d-2", "terminate", {"employee_id": "E1"},
                                 signature=("hook:aa", soon))  # fmt: skip
        assert isinstance(again, SignatureReplay)
        assert repo.get_event_by_delivery("d-2") is None
        # Same delivery id, signed afresh: a delivery replay as before.
        resent = repo.store_event("d-1", "terminate", {}, signature=("hook:bb", soon))
        assert isinstance(resent, EventReplay) and resent.event.id == stored.event.id
        assert repo.claim_signature("hook:bb", soon)  # rolled back with the replayed event

        assert repo.claim_signature("sso:cc", soon)
        assert not repo.claim_signature("sso:cc", soon)
        repo.release_signature("sso:cc")
        assert repo.claim_signature("sso:cc", soon)
        # Past their expiry (and the once-a-minute purge), keys are forgotten.
        now[0] += timedelta(minutes=5)
        assert repo.claim_signature("sso:dd", now[0] + timedelta(seconds=60))
        assert repo.claim_signature("sso:cc", now[0] + timedelta(seconds=60))
    finally:
        repo.close()


def test_hook_events_store_replay_retry_and_apply(staging_repo: Repository) -> None:
    repo = staging_repo
    stored = repo.store_event(
        "d-1", "upsert", {"employee_id": "E1", "name": "张三"}, employee_id="E1"
    )
    assert isinstance(stored, EventStored) and not stored.replay
    ev = stored.event
    assert ev.status == "received" and ev.attempts == 0 and ev.payload["name"] == "张三"

    replay = repo.store_event("d-1", "terminate", {"employee_id": "E1"})
    assert isinstance(replay, EventReplay) and replay.replay
    assert replay.event.id == ev.id and replay.event.kind == "upsert"  # nothing rewritten

    second = repo.store_event("d-2", "terminate", {"employee_id": "E2"}, employee_id="E2")
    assert isinstance(second, EventStored)
    now = repo.now()
    assert [e.delivery_id for e in repo.next_events(now=now)] == ["d-1", "d-2"]
    stats = repo.event_queue_stats()
    assert stats.depth == 2 and stats.oldest_received_at == ev.received_at

    later = now + timedelta(seconds=30)
    retried = repo.mark_event(ev.id, "received", error="503 from Exmail", next_attempt_at=later)
    assert retried.attempts == 1 and retried.last_error == "503 from Exmail"
    assert [e.delivery_id for e in repo.next_events(now=now)] == ["d-2"]
    assert [e.delivery_id for e in repo.next_events(now=later)] == ["d-1", "d-2"]

    run_id = repo.start_run("hook", "hook:d-1")
    applied = repo.mark_event(ev.id, "applied", run_id=run_id)
    assert applied.status == "applied" and applied.applied_at is not None
    assert applied.attempts == 2 and applied.run_id == run_id and applied.last_error is None
    failed = repo.mark_event(second.event.id, "failed", error="unknown department D9")
    assert failed.status == "failed" and failed.next_attempt_at is None
    assert repo.next_events(now=later) == []
    assert repo.event_queue_stats().depth == 0
    assert repo.get_event(ev.id) == applied
    assert [e.delivery_id for e in repo.list_events()] == ["d-2", "d-1"]
    assert [e.delivery_id for e in repo.list_events(status="failed")] == ["d-2"]
    with pytest.raises(StagingError, match="does not exist"):
        repo.mark_event(424242, "applied")


# --- runs and cursors ---------------------------------------------------------------------


def test_runs_and_watch_cursors(staging_repo: Repository) -> None:
    repo = staging_repo
    run_id = repo.start_run("sync", "schedule", config_fingerprint="f" * 64)
    run = repo.get_run(run_id)
    assert run is not None and run.status == "running" and run.finished_at is None
    repo.finish_run(run_id, "partial", {"done": 3, "failed": 1})
    run = repo.get_run(run_id)
    assert run is not None and run.status == "partial" and run.summary == {"done": 3, "failed": 1}
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert [r.id for r in repo.list_runs()] == [run_id]
    with pytest.raises(ValueError):
        repo.start_run("dance", "cli:x")

    assert repo.get_cursor("mail.watch.version") is None
    repo.set_cursor("mail.watch.version", "1700000000000")
    repo.set_cursor("mail.watch.version", "1700000000999")
    assert repo.get_cursor("mail.watch.version") == "1700000000999"


def test_only_one_of_two_concurrent_starts_wins(staging_repo: Repository) -> None:
    plan_id = save_sample_plan(staging_repo)
    barrier = threading.Barrier(4, timeout=30)
    outcomes: list[str] = []

    def start() -> None:
        barrier.wait()
        try:
            staging_repo.start_action(plan_id, 2)
            outcomes.append("won")
        except StagingError:
            outcomes.append("refused")

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    assert staging_repo.load_actions(plan_id)[1].attempts == 1


def test_orm_session_reads_what_the_repository_wrote(staging_repo: Repository) -> None:
    """The typed models work through an ORM session too (for ad-hoc tools and reports)."""
    run_id = staging_repo.start_run("plan", "cli:bob")
    factory = make_session_factory(staging_repo.engine)
    with factory() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.actor == "cli:bob" and run.kind == "plan"
        assert run.started_at.tzinfo is not None
        assert session.scalars(select(Run.id)).all() == [run_id]
