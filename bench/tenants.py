"""Benchmark: the no-op night of many tenants, on 1 ``serve`` worker against 3 of them.

``--tenants`` corps of ``--people`` mailboxes each (default 50 x 2,000), one emulator per corp
(hosted by ``--emulator-processes`` helper processes, so the emulators are not one GIL), one
PostgreSQL database with a schema per tenant. Set-up (not timed as a night): ``db upgrade
--all``, then ``sync --all`` adopts every directory (link records only, no Exmail write).
Then, for each repetition and worker count (interleaved: 1, 3, 1, 3...), that many
``syncengine serve`` processes run with ``[hooks] schedule = "* * * * *"``: the next minute's
firing is claimed once per tenant among the workers, and the night is timed from that minute
to the last tenant's finished sync (read from each tenant's ``runs`` table). CPU is the user +
system seconds the worker processes spent over the night (/proc; the emulators and PostgreSQL
are not counted). Every night must be a no-op (0 write calls); the script checks it.

    .venv/bin/python bench/tenants.py [--tenants 50] [--people 2000] [--workers 1,3]
                                      [--repeat 2] [--database-url postgresql://...]

Without ``--database-url`` a throwaway PostgreSQL cluster is started from Debian's binaries
(``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when run as root.
"""

from __future__ import annotations

import argparse
import csv
import glob
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SYNCENGINE = str(Path(sys.executable).parent / "syncengine")
WRITES = {"department/create", "department/update", "department/delete", "user/create",
          "user/update", "user/delete", "user/swapalias"}  # fmt: skip


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """A server URL (``postgresql://user@host:port``): the one given, or a throwaway cluster."""
    if url:
        yield url.rstrip("/")
        return
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        sys.exit("no PostgreSQL binaries: apt-get install postgresql, or pass --database-url")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "--no-sync"]), check=True,
                   capture_output=True)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
               "-c synchronous_commit=off -c max_connections=400")  # fmt: skip
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                 str(root / "log"), "-o", options, "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                     "immediate", "stop"]), capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def tenant_seed(i: int, people: int) -> dict[str, Any]:
    from syncengine.emulator.seed import big_seed

    seed = big_seed(people, max(10, people // 50))
    seed["corp_id"] = f"wwbench{i:04d}"
    seed["secrets"] = {app: f"bench-{i}-{app}" for app in seed["secrets"]}
    return seed


def _host_emulators(seeds: list[dict[str, Any]], pipe: Connection) -> None:
    """A helper process serving a few emulators until told to stop; reports their URLs and
    answers "writes" with their write-call counts."""
    from syncengine.emulator.app import create_app
    from syncengine.emulator.server import start_in_thread

    apps = [create_app("v2", seed) for seed in seeds]
    servers = [start_in_thread(app) for app in apps]
    pipe.send([s.base_url for s in servers])
    while True:
        message = pipe.recv()
        if message == "writes":
            counts = []
            for app in apps:
                calls = app.state.emulator.calls_since(0)["calls"]
                counts.append(sum(1 for c in calls if c["endpoint"].split("/", 2)[-1] in WRITES))
            pipe.send(counts)
        else:
            break
    for s in servers:
        s.stop()


def write_hr(path: Path, seed: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position", "gender",
                    "status"])  # fmt: skip
        for u in seed["users"]:
            w.writerow([u["extid"], u["name"], u["userid"], u["department"][0], u["position"],
                        "男" if u["gender"] == "1" else "女", "在职"])  # fmt: skip


def write_config(folder: Path, url: str, seeds: list[dict[str, Any]], bases: list[str]) -> Path:
    lines = [
        "[database]", f'url = "{url}"',
        "[mapping]", 'employee_id = "employee_id"', 'name = "name"', 'email = "email"',
        'departments = "departments"', 'position = "position"', 'gender = "gender"',
        'status = "status"',
        "[apply]", "concurrency = 8", "rate_per_second = 0",
        "[passwords]", 'delivery = "none"',
        "[hooks]", 'schedule = "* * * * *"', "access_log = false", "poll_interval = 5",
    ]  # fmt: skip
    for i, (seed, base) in enumerate(zip(seeds, bases, strict=True)):
        name = f"t{i:03d}"
        write_hr(folder / f"{name}.csv", seed)
        secrets = ", ".join(f'{k} = "{v}"' for k, v in seed["secrets"].items())
        lines += [
            f"[tenants.{name}.exmail]", 'api = "v2"', f'base_url = "{base}"', "timeout = 60",
            f'sso_url = "{base}/cgi-bin/login"', 'domains = ["example.com"]',
            f'corp_id = "{seed["corp_id"]}"', f"secrets = {{ {secrets} }}",
            f"[tenants.{name}.source]", 'type = "csv"', f'path = "{name}.csv"',
        ]  # fmt: skip
    path = folder / "syncengine.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def night(config: Path, dsn: str, names: list[str], workers: int) -> tuple[float, float]:
    """(wall seconds, worker CPU seconds) of one scheduled no-op night on ``workers``."""
    procs = []
    for w in range(workers):
        log = config.parent / f"worker{w}.log"
        procs.append(subprocess.Popen([SYNCENGINE, "--config", str(config), "serve", "--port",
                                       "0"], stdout=subprocess.DEVNULL,
                                      stderr=log.open("wb"), cwd=config.parent))  # fmt: skip
    try:
        for w in range(workers):
            log = config.parent / f"worker{w}.log"
            while "listening on" not in log.read_text(errors="replace"):
                if procs[w].poll() is not None:
                    sys.exit(f"worker {w} died:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        now = datetime.now(UTC)
        slot = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (slot - now).total_seconds() < 3:
            slot += timedelta(minutes=1)
        time.sleep(max(0.0, (slot - datetime.now(UTC)).total_seconds() - 1))
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        last = None
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                ends = []
                for name in names:
                    row = conn.execute(
                        f"SELECT max(finished_at) FROM tenant_{name}.runs WHERE kind = 'sync' "  # type: ignore[arg-type]
                        "AND started_at >= %s AND finished_at IS NOT NULL",
                        (slot,),
                    ).fetchone()
                    if row is None or row[0] is None:
                        break
                    ends.append(row[0])
                else:
                    last = max(ends)
                    break
                time.sleep(0.5)
        cpu_after = sum(cpu_seconds(p.pid) for p in procs)
        assert last is not None
        return (last - slot).total_seconds(), cpu_after - cpu_before
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--workers", default="1,3")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--emulator-processes", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a server URL (CREATE DATABASE)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    seeds = [tenant_seed(i, args.people) for i in range(args.tenants)]
    names = [f"t{i:03d}" for i in range(args.tenants)]
    hosts: list[tuple[multiprocessing.Process, Connection]] = []
    bases: list[str] = []
    share = -(-args.tenants // args.emulator_processes)
    for k in range(0, args.tenants, share):
        mine, theirs = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=_host_emulators, args=(seeds[k:k + share], theirs),
                                       daemon=True)  # fmt: skip
        proc.start()
        hosts.append((proc, mine))
    for _proc, pipe in hosts:
        bases += pipe.recv()
    with postgres(args.database_url) as server, tempfile.TemporaryDirectory() as tmp:
        dbname = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server + "/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')  # type: ignore[arg-type]
        dsn = f"{server}/{dbname}"
        config = write_config(Path(tmp), dsn, seeds, bases)
        started = time.perf_counter()
        subprocess.run([SYNCENGINE, "--config", str(config), "db", "upgrade", "--all"],
                       check=True, capture_output=True)  # fmt: skip
        print(f"set-up: {args.tenants} schemas migrated in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        adopt = subprocess.run([SYNCENGINE, "--config", str(config), "sync", "--all", "--jobs",
                                "3", "--no-notify"], capture_output=True, text=True)  # fmt: skip
        if adopt.returncode != 0:
            sys.exit(f"the adopting sync failed:\n{adopt.stdout[-3000:]}{adopt.stderr[-3000:]}")
        print(f"set-up: sync --all --jobs 3 adopted {args.tenants} x {args.people:,} mailboxes "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        before = [c for _p, pipe in hosts for c in (pipe.send("writes") or pipe.recv())]
        results: dict[int, list[tuple[float, float]]] = {w: [] for w in counts}
        for r in range(args.repeat):
            for w in counts:
                wall, cpu = night(config, dsn, names, w)
                results[w].append((wall, cpu))
                print(f"night {r + 1}, {w} worker(s): {wall:.1f} s wall, {cpu:.1f} s worker CPU, "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        after = [c for _p, pipe in hosts for c in (pipe.send("writes") or pipe.recv())]
        writes = sum(after) - sum(before)
        for w in counts:
            walls = [x[0] for x in results[w]]
            cpus = [x[1] for x in results[w]]
            print(f"{args.tenants} tenants x {args.people:,} people, no-op night, {w} worker(s): "
                  f"median {statistics.median(walls):.1f} s wall, "
                  f"{statistics.median(cpus):.1f} s worker CPU")  # fmt: skip
        print(f"write calls over the nights: {writes} (a no-op night makes none)")
    for _proc, pipe in hosts:
        pipe.send("stop")


if __name__ == "__main__":
    main()
