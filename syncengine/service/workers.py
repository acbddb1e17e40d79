"""Several ``serve`` processes sharing the tenants' work on one PostgreSQL staging database.

Every ``serve`` started on the same config receives hooks for every tenant (behind a load
balancer, on one host or many) and runs every tenant's worker and schedule threads. Before a
thread does a tenant's work (a batch of hook events, a scheduled sync) it takes the tenant's
``run`` lease (:mod:`syncengine.staging.repository.leases`, ``SELECT ... FOR UPDATE SKIP
LOCKED``), and gives it back when done, so:

* a tenant's run executes on exactly one worker at a time; the work goes to whichever worker
  got there first (the one that received the hook, or the next to poll);
* a scheduled run is claimed once per firing time (``slot:sync:<time>``), by the first worker;
* one heartbeat thread per process pushes on the expiry of every lease it holds (five times
  per ``[hooks] lease_seconds``). A worker that dies (SIGKILL, a lost host) stops renewing; the
  next worker to look after ``lease_seconds`` takes the lease over, clears the run locks the
  dead worker left (which no other host could prove dead) and resumes its interrupted apply
  with the apply checkpoints, so no action runs twice: done actions are not repeated, and an
  action left ``running`` is checked against the live directory before it is redone.

Each tenant has its own lease, worker thread and schedule thread, so one tenant's long run
never delays another's. On SQLite (one process) ``serve`` keeps its single-process behaviour.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from syncengine.errors import LockHeldError
from syncengine.service.applying import APPLY_LOCK, resume_apply
from syncengine.service.engine import Engine
from syncengine.service.nightly import SYNC_LOCK
from syncengine.staging.repository import holder_is_dead

log = logging.getLogger(__name__)

RUN_LEASE = "run"
SCHEDULE_WAIT = 600.0
"""Seconds a claimed scheduled run waits for the tenant's lease (a long hook batch)."""


def worker_id() -> str:
    """This process among the workers: ``host:pid:random`` (the random part tells a restarted
    process with a reused pid from the one that died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _host_pid(holder: str) -> tuple[str, int] | None:
    host_pid = holder.rpartition(":")[0]
    host, _, pid = host_pid.rpartition(":")
    return (host, int(pid)) if pid.isascii() and pid.isdigit() else None


class Heartbeat:
    """One thread per process renewing every lease it holds (see the module docstring)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._held: dict[int, SharedTenant] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def add(self, tenant: SharedTenant) -> None:
        with self._lock:
            self._held[id(tenant)] = tenant

    def remove(self, tenant: SharedTenant) -> None:
        with self._lock:
            self._held.pop(id(tenant), None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._held.values())
            for tenant in held:
                tenant.renew()


class SharedTenant:
    """One tenant's work in this process when several ``serve`` processes share it."""

    def __init__(self, name: str, engine: Engine, backend: Any, holder: str,
                 heartbeat: Heartbeat) -> None:  # fmt: skip
        self.name = name
        self.engine = engine
        self.backend = backend  # service.hooks.HookBackend
        self.holder = holder
        self.heartbeat = heartbeat
        self.ttl = engine.config.hooks.lease_seconds
        self._local = threading.Lock()  # this process's worker and schedule: one at a time
        self.takeovers = 0
        self._holding = False

    def renew(self) -> None:
        if not self._holding:  # released since the heartbeat looked
            return
        try:
            renewed = self.engine.repo.renew_lease(RUN_LEASE, self.holder, self.ttl)
            if not renewed and self._holding:
                log.error("tenant %s: the run lease was taken over by another worker while "
                          "this one worked (raise [hooks] lease_seconds)", self.name)  # fmt: skip
        except Exception:  # the next beat tries again; the lease outlives a few misses
            log.warning("tenant %s: renewing the run lease failed", self.name, exc_info=True)

    @contextmanager
    def held(
        self, wait: float = 0.0, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[bool]:
        """Hold the tenant's run lease for the block (True), or False when another worker
        holds it (after trying for ``wait`` seconds)."""
        with self._local:
            repo = self.engine.repo
            deadline = time.monotonic() + wait
            while True:
                taken = repo.take_lease(RUN_LEASE, self.holder, self.ttl)
                if taken is not None or time.monotonic() >= deadline:
                    break
                sleep(min(1.0, self.ttl / 4))
            if taken is None:
                yield False
                return
            self._holding = True
            self.heartbeat.add(self)
            try:
                if taken.previous is not None and not self._take_over(taken.previous):
                    yield False
                    return
                yield True
            finally:
                self._holding = False
                self.heartbeat.remove(self)
                repo.release_lease(RUN_LEASE, self.holder)

    def _take_over(self, previous: str) -> bool:
        """The lease of a worker that stopped renewing it: clear the run locks it left and
        finish the apply it was in the middle of. False when that worker is still at work
        after all (alive on this host, holding the apply lock): the lease was lost to a
        stalled heartbeat, not to a death, and this worker leaves the tenant alone for now."""
        repo = self.engine.repo
        dead = _host_pid(previous)
        here = socket.gethostname()
        for lock_name in (APPLY_LOCK, SYNC_LOCK):
            lock = repo.get_lock(lock_name)
            if lock is None or dead != (lock.hostname, lock.pid):
                continue
            if lock.hostname == here and not holder_is_dead(lock, here):
                log.warning("the lease of worker %s expired, but it is alive and holds the %r "
                            "lock: leaving it the tenant (raise [hooks] lease_seconds)",
                            previous, lock_name)  # fmt: skip
                return False
            repo.release_lock(lock_name, pid=lock.pid, hostname=lock.hostname)
        self.takeovers += 1
        log.warning("took over the work of worker %s (its lease expired): resuming", previous)
        try:
            outcome = resume_apply(self.engine, actor=f"worker:{self.holder}")
        except LockHeldError as exc:  # a CLI apply or sync of an admin: it finishes its plan
            log.warning("resuming later: %s", exc)
            return False
        for report in outcome.resumed:
            log.warning("resumed plan %s of worker %s: %s", report.checksum[:12], previous,
                        report.status)  # fmt: skip
        return True

    def process(self) -> int:
        """The hook worker's round, when this worker holds the tenant's lease (else 0)."""
        with self.held() as mine:
            if not mine:
                return 0
            taken: int = self.backend.process()
            return taken

    def scheduled_sync(self) -> None:
        """The scheduled sync, run by the one worker that claims this firing time."""
        scheduler = self.backend.scheduler
        when = scheduler.next_run if scheduler is not None else None
        slot = "sync:" + (when.isoformat(timespec="minutes") if when else "now")
        if not self.engine.repo.claim_slot(slot, self.holder):
            log.info("scheduled sync %s: another worker claimed it", slot)
            return
        with self.held(wait=SCHEDULE_WAIT) as mine:
            if not mine:
                log.error("scheduled sync %s: the tenant stayed busy on another worker for "
                          "%g s; skipped", slot, SCHEDULE_WAIT)  # fmt: skip
                return
            self.backend.scheduled_sync()
