"""``syncengine serve`` as a real process: events stored before a ``kill -9`` are worked off
when it starts again; the nightly schedule runs in the same process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.hooks.schedule import CronSchedule
from syncengine.hooks.worker import Scheduler
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import make_env, post_hook, upsert, wait_until

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(env: ApplyEnv, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = env.subprocess("serve", "--port", str(port))
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read() if proc.stderr else ''!r}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until("serve answers /healthz", healthy, timeout=30)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_events_waiting_at_a_kill_9_are_applied_after_the_restart(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    # A long coalesce window keeps the worker waiting while the events arrive.
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), coalesce_window=60)
    port = free_port()
    with serve_process(env, port) as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for n in range(3):
                r = post_hook(client, upsert(f"k-{n}", f"K000{n}", f"重启{n}",
                                             f"restart{n}@example.com"))  # fmt: skip
                assert r.status_code == 202, r.text
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    config = env.config()
    assert [e.status for e in service.list_hook_events(service.Engine(config))] == ["received"] * 3
    assert not any(u.startswith("restart") for u in env.users())

    with serve_process(env, port):
        wait_until("the stored events applied", lambda: not service.list_hook_events(
            service.Engine(config), status="received"), timeout=60)  # fmt: skip
    assert [e.status for e in service.list_hook_events(service.Engine(config))] == ["applied"] * 3
    users = env.users()
    assert all(f"restart{n}@example.com" in users for n in range(3))
    result = env.cli("events", "--json")
    assert result.exit_code == 0 and '"status": "applied"' in result.output


def test_the_scheduler_runs_its_job_at_the_cron_minute() -> None:
    now = datetime.now().astimezone()
    # A clock that says "0.3 s before the next minute" from now on.
    offset = now.replace(second=59, microsecond=700_000) - now
    ran = threading.Event()
    scheduler = Scheduler(CronSchedule.parse("* * * * *"), ran.set,
                          clock=lambda: datetime.now().astimezone() + offset)  # fmt: skip
    scheduler.start()
    try:
        assert ran.wait(10), "the job did not run"
        assert scheduler.next_run is not None
        assert scheduler.next_run.second == 0
    finally:
        scheduler.stop()
    assert not scheduler.alive


def test_the_scheduled_job_is_the_nightly_sync(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), schedule="30 2 * * *")
    night = dict(env.rows[0], employee_id="N0001", name="夜班", email="night@example.com",
                 aliases="")  # fmt: skip
    rows = [*env.rows, night]
    env.write(rows)
    backend = service.HookBackend(service.Engine(env.config()))
    try:
        backend.scheduled_sync()
        assert backend.metrics.value("syncengine_runs_total", kind="sync",
                                     status="succeeded") == 1  # fmt: skip
    finally:
        backend.close()
    assert "night@example.com" in env.users()
    rows_ = service.query_audit(service.Engine(env.config()), employee_id="N0001")
    assert {r.actor for r in rows_} == {"schedule:serve"}


@pytest.mark.parametrize("command", [["serve"], ["events"], ["mail", "watch"]])
def test_the_commands_have_help(command: list[str]) -> None:
    from click.testing import CliRunner

    from syncengine.cli import main

    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    if command == ["mail", "watch"]:
        assert "--forward" in result.output
