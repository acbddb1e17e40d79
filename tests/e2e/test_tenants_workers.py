"""Several ``serve`` workers sharing twenty tenants on one real PostgreSQL (issue 15).

Three ``syncengine serve`` processes run on one config of twenty tenants (one schema each in
one database), each tenant's Exmail an emulator of its own corp over real HTTP with a latency
on every call so that an apply takes seconds. Every tenant's schedule fires each minute; the
first firing finds twelve new hires per tenant. While applies run, the worker holding an apply
lock is killed with SIGKILL. Then: every tenant converges, every scheduled run was claimed by
exactly one worker, the killed worker's tenants were taken over (a resumed apply) and no
action ran twice (each create reached Exmail exactly once, and none was refused as existing).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncengine.emulator.app import CLIENT_CLOSED
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import COLUMNS, PYTHON, REPO, _endpoint, _toml, people
from tests.e2e.test_tenants import corp_seed, hook_secret
from tests.fixtures.databases import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(420)]

TENANTS = [f"corp{i:02d}" for i in range(20)]
HIRES = 12
WORKERS = 3
DEPARTMENTS = 7  # 工程部, its 后端组 and 前端组, 销售部, 财务部, 会计组, 总账


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"workers_{uuid.uuid4().hex[:10]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def write_config(root: Path, url: str, emulators: dict[str, RunningEmulator]) -> Path:
    tenants: dict[str, Any] = {}
    for i, name in enumerate(TENANTS):
        with (root / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(people(HIRES, start=100 + 100 * i))
        tenants[name] = {
            "exmail": {**emulators[name].exmail_config(), "timeout": 10},
            "source": {"type": "csv", "path": f"{name}.csv"},
            "hooks": {"secret": hook_secret(name)},
        }
    shared: dict[str, Any] = {
        "database": {"url": url},
        "mapping": {"email": "email", "departments": {"field": "departments", "split": ";"},
                    "position": "position", "status": "status"},
        "apply": {"concurrency": 1, "rate_per_second": 0, "backoff_initial": 0.05,
                  "backoff_max": 0.2, "max_attempts": 6},
        "hooks": {"schedule": "* * * * *", "lease_seconds": 10, "poll_interval": 0.5,
                  "coalesce_window": 0.1, "access_log": False},
    }  # fmt: skip
    path = root / "syncengine.toml"
    path.write_text(_toml({**shared, "tenants": tenants}), encoding="utf-8")
    return path


def start_worker(config: Path, root: Path, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(Path(PYTHON).parent / "syncengine"), "--config", str(config), "serve",
         "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    wait_for("a worker listening", lambda: "listening on" in log.read_text(errors="replace"), 60)
    return proc


def mid_apply(url: str) -> set[int]:
    """The pids holding a tenant's apply lock while its plan is part done, part pending."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        pids: set[int] = set()
        for name in TENANTS:
            s = f"tenant_{name}"
            row = conn.execute(
                f"SELECT l.pid FROM {s}.run_lock l WHERE l.name = 'apply' AND EXISTS ("  # type: ignore[arg-type]
                f"SELECT 1 FROM {s}.plan_actions a WHERE a.status = 'done') AND EXISTS ("
                f"SELECT 1 FROM {s}.plan_actions a WHERE a.status = 'pending')"
            ).fetchone()
            if row:
                pids.add(int(row[0]))
        return pids


def converged(emulator: RunningEmulator, name: str) -> bool:
    users = {u["userid"].lower() for u in emulator.state()["users"]}
    i = TENANTS.index(name)
    return all(f"t{100 + 100 * i + k}@example.com" in users for k in range(HIRES))


def test_three_workers_share_twenty_tenants_and_survive_a_sigkill_mid_apply(
    tmp_path: Path, database: str, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emulators = {n: emulator_factory("v2", corp_seed(n), latency_ms=120) for n in TENANTS}
    config = write_config(tmp_path, database, emulators)
    from click.testing import CliRunner

    from syncengine.cli import main

    r = CliRunner().invoke(main, ["--config", str(config), "db", "upgrade", "--all"])
    assert r.exit_code == 0, r.output
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    workers = [start_worker(config, tmp_path, log) for log in logs]
    try:
        # the first firing (the next minute) starts twenty syncs across the three workers
        wait_for("an apply half done", lambda: bool(mid_apply(database)), 120)
        holders = mid_apply(database)
        victim = next(w for w in workers if w.pid in holders)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        for name in TENANTS:
            wait_for(f"{name} converged", lambda n=name: converged(emulators[n], n), 180)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    # no action ran twice: each create reached Exmail once, and none was refused (a request
    # of the killed worker that the emulator logged as 499, its client gone before the body
    # was read, did nothing: it did not reach the directory)
    for name, emu in emulators.items():
        calls = [c for c in emu.calls() if _endpoint(c) in {"user/create", "department/create"}
                 and c["status"] != CLIENT_CLOSED]  # fmt: skip
        creates = Counter(_endpoint(c) for c in calls)
        assert creates == {"user/create": HIRES, "department/create": DEPARTMENTS}, (
            name,
            creates,
            [(c["endpoint"], c["status"], c["errcode"], c["at"]) for c in calls],
            [(c["endpoint"], c["status"], c["errcode"], c["at"]) for c in emu.calls()][-80:],
        )
        refused = [c for c in emu.calls() if _endpoint(c) in {"user/create", "department/create"}
                   and c["errcode"] not in (0, None)]  # fmt: skip
        assert not refused, (name, refused)
    with psycopg.connect(database.replace("postgresql+psycopg", "postgresql")) as conn:
        resumed = 0
        for name in TENANTS:
            schema = f"tenant_{name}"
            slots = conn.execute(
                f"SELECT name FROM {schema}.worker_leases WHERE name LIKE 'slot:%'"  # type: ignore[arg-type]
            ).fetchall()
            syncs = conn.execute(
                f"SELECT count(*) FROM {schema}.runs WHERE kind = 'sync'"  # type: ignore[arg-type]
            ).fetchone()
            # a firing time runs at most once (the killed worker may have died between its
            # claim and the run's start: then that night is finished by the next firing)
            assert syncs is not None and 1 <= syncs[0] <= len(slots), (name, syncs, slots)
            row = conn.execute(
                f"SELECT count(*) FROM {schema}.runs WHERE actor LIKE 'worker:%'"  # type: ignore[arg-type]
            ).fetchone()
            resumed += row[0] if row else 0
            # every apply that started was finished (resumed by a taker-over or the next run);
            # a plan the killed worker only saved (killed between saving its nightly plan
            # and starting it) stays `saved` like a plan made for review, and is superseded:
            # a later plan of that tenant was applied
            plans = conn.execute(
                f"SELECT p.id, p.status, count(a.seq), count(a.seq) FILTER (WHERE a.status "  # type: ignore[arg-type]
                f"IN ('pending', 'running')) FROM {schema}.plans p LEFT JOIN "
                f"{schema}.plan_actions a ON a.plan_id = p.id GROUP BY p.id, p.status "
                "ORDER BY p.id"
            ).fetchall()
            assert not [p for p in plans if p[3] and p[1] != "saved"], (name, plans)
            for plan_id, status, actions, still_open in plans:
                if status == "saved" and actions:  # never started; superseded by an applied one
                    assert still_open == actions, (name, plans)
                    assert any(p[0] > plan_id and p[1] == "applied" for p in plans), (name, plans)
    assert resumed >= 1, "no tenant of the killed worker was taken over"
    taken_over = sum("took over the work of worker" in log.read_text(errors="replace")
                     for log in logs)  # fmt: skip
    assert taken_over >= 1
    survivors_lines = "".join(log.read_text(errors="replace") for log in logs)
    assert not re.search(r"Traceback", survivors_lines), survivors_lines[-3000:]
