"""The run lock on SQLite and PostgreSQL: one holder, a clear refusal, dead holders taken over.

Liveness is checked with real processes: a short-lived child that has exited (its pid is
dead), and a sleeping child that is alive for the test's duration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from syncengine.errors import LockHeldError
from syncengine.staging.repository import Repository, holder_is_dead, process_started_at

HOST = socket.gethostname()
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def dead_pid() -> int:
    """The pid of a real child process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_second_acquire_is_refused_naming_the_holder(
    staging_repo: Repository, live_pid: int
) -> None:
    held = staging_repo.acquire_lock("apply:demo", pid=live_pid, command="syncengine apply")
    assert held.pid == live_pid and held.hostname == HOST

    with pytest.raises(LockHeldError) as err:
        staging_repo.acquire_lock("apply:demo", command="syncengine sync")
    message = str(err.value)
    assert f"pid {live_pid}" in message and HOST in message
    assert "syncengine apply" in message and "since" in message

    # Another lock name is independent; the holder can heartbeat and release it.
    staging_repo.acquire_lock("apply:other", command="x")
    assert staging_repo.heartbeat("apply:demo", pid=live_pid) is True
    assert staging_repo.release_lock("apply:demo", pid=os.getpid()) is False  # not ours
    assert staging_repo.release_lock("apply:demo", pid=live_pid) is True
    assert staging_repo.get_lock("apply:demo") is None
    assert staging_repo.acquire_lock("apply:demo").pid == os.getpid()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(staging_repo: Repository) -> None:
    gone = dead_pid()
    staging_repo.acquire_lock("apply:demo", pid=gone, command="syncengine apply")

    mine = staging_repo.acquire_lock("apply:demo", command="syncengine apply --resume")

    assert mine.pid == os.getpid()
    current = staging_repo.get_lock("apply:demo")
    assert current is not None and current.pid == os.getpid()
    assert current.command == "syncengine apply --resume"
    # The old holder has lost it: its heartbeat says so.
    assert staging_repo.heartbeat("apply:demo", pid=gone) is False


def test_reused_pid_is_recognised_as_a_dead_holder(staging_repo: Repository, live_pid: int) -> None:
    """A pid alive now, but started after the lock was taken, is not the holder."""
    old = Repository(staging_repo.engine, clock=lambda: LONG_AGO)
    old.acquire_lock("apply:demo", pid=live_pid, command="old run")
    started = process_started_at(live_pid)
    assert started is not None and started > LONG_AGO

    assert staging_repo.acquire_lock("apply:demo").pid == os.getpid()


def test_other_hosts_lock_is_kept_unless_its_heartbeat_is_stale(staging_repo: Repository) -> None:
    gone = dead_pid()
    old = Repository(staging_repo.engine, clock=lambda: LONG_AGO)
    old.acquire_lock("apply:demo", pid=gone, hostname="elsewhere", command="nightly")
    holder = staging_repo.get_lock("apply:demo")
    assert holder is not None and not holder_is_dead(holder, HOST)

    with pytest.raises(LockHeldError, match="elsewhere"):
        staging_repo.acquire_lock("apply:demo")
    with pytest.raises(LockHeldError):
        staging_repo.acquire_lock("apply:demo", stale_after=timedelta(days=36500))

    taken = staging_repo.acquire_lock("apply:demo", stale_after=timedelta(hours=1))
    assert taken.hostname == HOST


def test_only_one_of_many_concurrent_acquirers_wins(staging_repo: Repository) -> None:
    """Racers on "other hosts" (never taken over) all try at once: exactly one gets it."""
    barrier = threading.Barrier(8, timeout=30)
    won: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def contender(i: int) -> None:
        host = f"host-{i}"
        try:
            barrier.wait()
            staging_repo.acquire_lock("apply:race", hostname=host, command=f"run {i}")
            won.append(host)
        except LockHeldError:
            refused.append(host)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(won) == 1 and len(refused) == 7
    holder = staging_repo.get_lock("apply:race")
    assert holder is not None and holder.hostname == won[0]


def test_locked_block_holds_then_releases(staging_repo: Repository) -> None:
    with staging_repo.locked("apply", command="syncengine sync") as info:
        assert info.pid == os.getpid()
        held = staging_repo.get_lock("apply")
        assert held is not None and held.command == "syncengine sync"
        with pytest.raises(LockHeldError, match="syncengine sync"):
            staging_repo.acquire_lock("apply", command="syncengine apply")
    assert staging_repo.get_lock("apply") is None


HOLDER = """
import sys, time
from syncengine.staging.db import make_engine
from syncengine.staging.repository import Repository
repo = Repository(make_engine(sys.argv[1]))
repo.acquire_lock("apply", command="syncengine sync (child)")
print("held", flush=True)
time.sleep(60)
"""


def test_lock_of_a_process_killed_with_sigkill_is_taken_over(
    staging_repo: Repository, staging_url: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, staging_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"  # bounded by the child's own sleep
        with pytest.raises(LockHeldError, match=f"pid {child.pid}"):
            staging_repo.acquire_lock("apply", command="syncengine sync")
    finally:
        child.kill()  # SIGKILL: no chance to release the lock
        child.wait(timeout=30)

    taken = staging_repo.acquire_lock("apply", command="syncengine sync")
    assert taken.pid == os.getpid()
