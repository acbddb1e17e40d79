"""Worker leases on both backends: one holder at a time, expiry and take-over, the heartbeat,
a scheduled slot claimed once, and (PostgreSQL) a lease row locked by another worker's take
skipped at once rather than waited for."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock_repo(staging_url: str) -> tuple[Repository, Clock]:
    clock = Clock()
    repo = Repository(staging_db.make_engine(staging_url), clock=clock)
    yield repo, clock  # type: ignore[misc]
    repo.close()


def test_one_holder_at_a_time_and_an_expired_lease_is_taken_over(
    clock_repo: tuple[Repository, Clock],
) -> None:
    repo, clock = clock_repo
    a = repo.take_lease("run", "host-a:11:aaaa", 30)
    assert a is not None and a.previous is None
    assert repo.take_lease("run", "host-b:22:bbbb", 30) is None  # A holds it
    clock.now += timedelta(seconds=25)
    assert repo.renew_lease("run", "host-a:11:aaaa", 30)  # the heartbeat
    clock.now += timedelta(seconds=25)
    assert repo.take_lease("run", "host-b:22:bbbb", 30) is None  # renewed: still A's
    clock.now += timedelta(seconds=6)  # A stopped beating 31 s ago
    b = repo.take_lease("run", "host-b:22:bbbb", 30)
    assert b is not None and b.previous == "host-a:11:aaaa"
    assert not repo.renew_lease("run", "host-a:11:aaaa", 30)  # A (back?) learns it lost it
    assert not repo.release_lease("run", "host-a:11:aaaa")
    again = repo.take_lease("run", "host-b:22:bbbb", 30)  # B again: no take-over
    assert again is not None and again.previous is None
    assert repo.release_lease("run", "host-b:22:bbbb")
    assert repo.lease_holder("run") is None
    assert repo.take_lease("run", "host-a:11:aaaa", 30) is not None  # free: anyone


def test_a_scheduled_slot_is_claimed_once_and_old_claims_are_purged(
    clock_repo: tuple[Repository, Clock],
) -> None:
    repo, clock = clock_repo
    assert repo.claim_slot("sync:2026-12-01T02:30+08:00", "w1")
    assert not repo.claim_slot("sync:2026-12-01T02:30+08:00", "w2")
    clock.now += timedelta(days=31)
    assert repo.claim_slot("sync:2027-01-01T02:30+08:00", "w2")
    assert repo.lease_holder("slot:sync:2026-12-01T02:30+08:00") is None  # purged
    assert repo.lease_holder("slot:sync:2027-01-01T02:30+08:00") is not None


def test_racing_workers_get_the_lease_exactly_once(staging_url: str) -> None:
    repos = [Repository(staging_db.make_engine(staging_url)) for _ in range(6)]
    won: list[str] = []
    start = threading.Barrier(len(repos))

    def race(i: int) -> None:
        start.wait()
        if repos[i].take_lease("run", f"h:{i}:x", 30) is not None:
            won.append(f"h:{i}:x")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(repos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in repos:
        r.close()
    assert len(won) == 1, won


@pytest.mark.postgres
@pytest.mark.parametrize("staging_url", ["postgresql"], indirect=True)
def test_a_lease_row_locked_by_another_take_is_skipped_not_waited_for(staging_url: str) -> None:
    repo = Repository(staging_db.make_engine(staging_url))
    try:
        assert repo.take_lease("run", "h:1:a", 0.001) is not None
        time.sleep(0.01)  # expired: free to take over, but another worker is taking it now
        dsn = staging_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as other:
            other.execute("SELECT * FROM worker_leases WHERE name = 'run' FOR UPDATE")
            started = time.monotonic()
            assert repo.take_lease("run", "h:2:b", 30) is None
            assert time.monotonic() - started < 5  # it did not queue behind the lock
            other.rollback()
        taken = repo.take_lease("run", "h:2:b", 30)
        assert taken is not None and taken.previous == "h:1:a"
    finally:
        repo.close()
