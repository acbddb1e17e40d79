"""The group writer: writes queued by many callers share one transaction, each caller learns
its own outcome (a bad write fails only its caller), and a write is committed, visible to
another connection, when ``call`` returns. Real databases (SQLite file, PostgreSQL if set)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from syncengine.domain import IdentityLink
from syncengine.errors import StagingError
from syncengine.staging import db as staging_db
from syncengine.staging.repository import GroupWriter, Merged, NewAction, Repository

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def link(eid: str, email: str) -> IdentityLink:
    return IdentityLink(employee_id=eid, email=email, first_seen=T0)


def held(writer: GroupWriter) -> threading.Event:
    """Keep the writer busy until the returned event is set, so what is queued meanwhile is
    written as one batch."""
    release, entered = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        assert release.wait(30)

    writer.submit(block)
    assert entered.wait(30)
    return release


def test_a_bad_write_in_a_batch_fails_only_its_caller(staging_repo: Repository) -> None:
    repo = staging_repo
    repo.save_links([link("E1", "a@example.com")])
    with GroupWriter(repo) as writer:
        release = held(writer)
        ok1 = writer.submit(lambda: repo.save_links([link("E2", "b@example.com")]))
        bad = writer.submit(lambda: repo.save_links([link("E3", "a@example.com")]))
        ok2 = writer.submit(lambda: repo.save_links([link("E4", "c@example.com")]))
        release.set()
        assert ok1.result(30) == 1 and ok2.result(30) == 1
        with pytest.raises(StagingError, match="linked to two employees"):
            bad.result(30)
    links = repo.load_links()
    assert {k: v.email for k, v in links.items()} == {
        "E1": "a@example.com", "E2": "b@example.com", "E4": "c@example.com"
    }  # fmt: skip


def test_writes_queued_together_share_one_transaction(staging_repo: Repository) -> None:
    repo = staging_repo
    with GroupWriter(repo) as writer:
        release = held(writer)
        futures = [
            writer.submit(lambda i=i: repo.save_links([link(f"E{i}", f"p{i}@example.com")]))
            for i in range(50)
        ]
        release.set()
        assert [f.result(30) for f in futures] == [1] * 50
        assert (writer.batches, writer.writes) == (2, 51)  # the blocker, then the 50 at once
    assert len(repo.load_links()) == 50


def test_a_checkpoint_is_committed_when_call_returns(staging_url: str) -> None:
    writing = Repository(staging_db.make_engine(staging_url))
    reading = Repository(staging_db.make_engine(staging_url))
    try:
        plan = writing.save_plan(
            checksum="c" * 64,
            document="{}",
            actions=[NewAction(seq=1, action_key="create_user:x@example.com",
                               kind="create_user", target="x@example.com")],
        )  # fmt: skip
        with GroupWriter(writing) as writer:
            started = writer.call(lambda: writing.start_action(plan.id, 1))
            assert started.status == "running" and started.attempts == 1
            # Another connection sees it before anything else happens: it is on disk.
            assert [a.status for a in reading.load_actions(plan.id)] == ["running"]
            with pytest.raises(StagingError, match="cannot become running"):
                writer.call(lambda: writing.start_action(plan.id, 1))  # never started twice
            writer.call(lambda: writing.finish_action(plan.id, 1, "done"))
            assert [a.status for a in reading.load_actions(plan.id)] == ["done"]
        with pytest.raises(StagingError, match="closed"):
            writer.submit(lambda: None)
    finally:
        writing.close()
        reading.close()


def test_an_idle_writer_gives_its_connection_back(staging_repo: Repository) -> None:
    """A writer nobody closed (a sink dropped after its run) must not keep a pooled
    connection: many of them would exhaust the pool."""
    writer = GroupWriter(staging_repo)
    writer.call(lambda: staging_repo.save_links([link("E1", "a@example.com")]))
    pool = staging_repo.engine.pool
    deadline = time.monotonic() + 10
    while pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert writer.call(lambda: staging_repo.delete_link("E1")) is True  # it starts again
    writer.close()


def test_merged_writes_queued_together_run_as_one_call(staging_repo: Repository) -> None:
    repo = staging_repo
    calls: list[list[str]] = []

    def save_many(eids: list[str]) -> list[int]:
        calls.append(list(eids))
        repo.save_links([link(e, f"{e.lower()}@example.com") for e in eids])
        return [len(e) for e in eids]

    kind: Merged[str, int] = Merged("saving links", save_many)
    with GroupWriter(repo) as writer:
        release = held(writer)
        futures = [writer.submit_merged(kind, f"E{i}") for i in range(20)]
        release.set()
        assert [f.result(30) for f in futures] == [len(f"E{i}") for i in range(20)]
        assert writer.call_merged(kind, "LATE") == 4
    assert calls == [[f"E{i}" for i in range(20)], ["LATE"]]
    assert len(repo.load_links()) == 21


def test_a_bad_merged_write_fails_only_its_caller(staging_repo: Repository) -> None:
    """One refused link makes the merged call fail: the batch is rolled back and each write
    runs again alone, so only its caller gets the error."""
    repo = staging_repo
    repo.save_links([link("E0", "taken@example.com")])
    kind: Merged[IdentityLink, None] = Merged(
        "saving links", lambda links: [repo.save_links(links) and None for _ in links]
    )
    with GroupWriter(repo) as writer:
        release = held(writer)
        ok1 = writer.submit_merged(kind, link("E1", "a@example.com"))
        bad = writer.submit_merged(kind, link("E2", "taken@example.com"))
        ok2 = writer.submit_merged(kind, link("E3", "c@example.com"))
        release.set()
        assert ok1.result(30) is None and ok2.result(30) is None
        with pytest.raises(StagingError, match="linked to two employees"):
            bad.result(30)
    assert {k: v.email for k, v in repo.load_links().items()} == {
        "E0": "taken@example.com", "E1": "a@example.com", "E3": "c@example.com"
    }  # fmt: skip


def test_many_checkpoints_at_once_change_all_or_none(staging_repo: Repository) -> None:
    repo = staging_repo
    plan = repo.save_plan(
        checksum="d" * 64,
        document="{}",
        actions=[NewAction(seq=i, action_key=f"create_user:u{i}@example.com",
                           kind="create_user", target=f"u{i}@example.com")
                 for i in range(1, 5)],
    )  # fmt: skip
    started = repo.start_actions(plan.id, [3, 1, 2])
    assert [(a.seq, a.status, a.attempts) for a in started] == [
        (3, "running", 1), (1, "running", 1), (2, "running", 1)
    ]  # fmt: skip
    with pytest.raises(StagingError, match="cannot become running"):
        repo.start_actions(plan.id, [4, 1])  # 1 is running already: 4 stays pending too
    repo.finish_actions(
        plan.id, [(1, "done", None), (2, "failed", "refused"), (4, "skipped", None)]
    )
    with pytest.raises(StagingError, match="cannot become done"):
        repo.finish_actions(plan.id, [(3, "done", None), (1, "done", None)])
    states = {a.seq: (a.status, a.error) for a in repo.load_actions(plan.id)}
    assert states == {1: ("done", None), 2: ("failed", "refused"), 3: ("running", None),
                      4: ("skipped", None)}  # fmt: skip


def test_one_checkpoint_through_the_batch_path_names_the_action_it_refuses(
    staging_repo: Repository,
) -> None:
    repo = staging_repo
    plan = repo.save_plan(
        checksum="e" * 64,
        document="{}",
        actions=[NewAction(seq=i, action_key=f"create_user:v{i}@example.com",
                           kind="create_user", target=f"v{i}@example.com")
                 for i in (1, 2)],
    )  # fmt: skip
    repo.start_actions(plan.id, [1])
    repo.finish_actions(plan.id, [(1, "done", None)])
    with pytest.raises(StagingError, match=r"create_user v2@example\.com\) is pending"):
        repo.finish_actions(plan.id, [(2, "done", None)])  # never started
    with pytest.raises(StagingError, match=r"is done; it cannot become failed"):
        repo.finish_actions(plan.id, [(1, "failed", "late")])
    states = {a.seq: (a.status, a.error) for a in repo.load_actions(plan.id)}
    assert states == {1: ("done", None), 2: ("pending", None)}
