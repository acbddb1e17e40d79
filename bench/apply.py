"""Benchmark: applying creates through the executor, and a no-op nightly run.

For each concurrency (1, 4, 16, 32) a fresh emulator (Gen 2, in its own process, 20 ms of
latency on every call) and a fresh SQLite staging file; an HR CSV of N new people in 40
departments is ingested and planned, then ``service.apply_plan`` applies the plan (the full
path: run lock, state re-read, checkpoints, audit rows, password file). Printed per
concurrency: actions applied, seconds, actions/s, the ideal (concurrency / latency, one call
per create) and their ratio. Concurrency 1 uses 500 creates (10,000 would take minutes at
50/s). Then, on the 10,000 mailboxes the last run made: ingest + plan + apply again, which
must find nothing to do: seconds and write calls (from the emulator's call log, must be 0).

    .venv/bin/python bench/apply.py [--people 10000] [--latency-ms 20] [--levels 1,4,16,32]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

With ``--postgres`` (a server URL whose user may CREATE DATABASE) each level gets a fresh
PostgreSQL database instead of a SQLite file (dropped afterwards).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from syncengine import service
from syncengine.config import load_config
from syncengine.emulator.seed import DEMO_CORP_ID, DEMO_SECRETS
from syncengine.plan import ActionKind

WRITES = {"/cgi-bin/department/create", "/cgi-bin/department/update", "/cgi-bin/user/create",
          "/cgi-bin/user/update", "/cgi-bin/user/delete", "/cgi-bin/user/swapalias",
          "/cgi-bin/department/delete"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """``syncengine emulator`` in a child process, so it does not share our GIL."""

    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = str(Path(sys.executable).parent / "syncengine")
        self.proc = subprocess.Popen(
            [exe, "emulator", "--port", str(self.port), "--latency-ms", str(latency_ms),
             "--control"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.http.get("/_emulator/calls").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.http.get("/_emulator/calls").json()["calls"]
        return calls

    def clear(self) -> None:
        self.http.post("/_emulator/calls/clear")

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def write_setup(
    folder: Path, url: str, people: int, concurrency: int, database_url: str | None = None
) -> Path:
    depts = [f"事业部{i // 8:02d}/小组{i % 8}" for i in range(40)]
    with (folder / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position"])
        for i in range(people):
            w.writerow([f"B{i:06d}", f"员工{i}", f"b{i:06d}@example.com", depts[i % 40],
                        "工程师"])  # fmt: skip
    secrets = "\n".join(f'{k} = "{v}"' for k, v in DEMO_SECRETS.items())
    config = f"""
[exmail]
api = "v2"
base_url = "{url}"
corp_id = "{DEMO_CORP_ID}"
domains = ["example.com"]
timeout = 60
read_concurrency = 8

[exmail.secrets]
{secrets}

[database]
url = "{database_url or f"sqlite:///{folder / 'staging.db'}"}"

[source]
type = "csv"
path = "hr.csv"

[mapping]
email = "email"
departments = "departments"
position = "position"

[apply]
concurrency = {concurrency}
rate_per_second = 0

[policy]
min_existing = 1000000
"""
    path = folder / "syncengine.toml"
    path.write_text(config, encoding="utf-8")
    return path


@contextmanager
def fresh_database(server_url: str | None, name: str) -> Iterator[str | None]:
    """A new PostgreSQL database on ``server_url`` (None: use a SQLite file)."""
    if server_url is None:
        yield None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    admin = psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
    )
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        db_url = url.set(database=name).render_as_string(hide_password=False)
        service.db_upgrade(load_config_for_url(db_url))
        yield db_url
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def load_config_for_url(db_url: str) -> Any:
    from syncengine.config import parse_config

    return parse_config({"exmail": {"api": "v2", "corp_id": DEMO_CORP_ID,
                                    "secrets": {"contacts": "x"}},
                         "database": {"url": db_url}})  # fmt: skip


def one_level(
    concurrency: int, people: int, latency_ms: float, noop: bool, server: str | None
) -> None:
    emu = Emulator(latency_ms)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp,
            fresh_database(server, f"bench_apply_{concurrency}") as db_url,
        ):
            config = load_config(write_setup(Path(tmp), emu.url, people, concurrency, db_url))
            engine = service.Engine(config)
            service.ingest(engine)
            made = service.make_plan(engine, actor="bench")
            creates = made.plan.count(ActionKind.CREATE_USER)
            outcome = service.apply_plan(engine, made.plan, actor="bench")
            report = outcome.applied
            assert report is not None and not report.failures, report
            actions = report.counts["done"]
            rate = actions / report.seconds
            ideal = concurrency / (latency_ms / 1000.0)
            print(f"concurrency {concurrency:>2}: {actions:,} actions ({creates:,} creates) in "
                  f"{report.seconds:.2f} s = {rate:,.0f} actions/s; ideal {ideal:,.0f}/s; "
                  f"ratio {rate / ideal:.2f}", flush=True)  # fmt: skip
            if noop:
                emu.clear()
                started = time.perf_counter()
                service.ingest(engine)
                again = service.make_plan(engine, actor="bench")
                second = service.apply_plan(engine, again.plan, actor="bench")
                seconds = time.perf_counter() - started
                writes = [c for c in emu.calls() if c["endpoint"] in WRITES]
                assert second.applied is not None
                print(f"no-op run over {people:,} people (ingest + plan + apply): "
                      f"{seconds:.2f} s, {len(again.plan.actions)} actions, "
                      f"{len(writes)} write calls, {len(emu.calls())} calls in all "
                      f"(apply: {second.applied.status})", flush=True)  # fmt: skip
    finally:
        emu.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--people-at-1", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--postgres", default=None, metavar="SERVER_URL")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print(f"apply benchmark: Gen 2 emulator in a child process, {args.latency_ms:g} ms latency "
          f"per call, {'PostgreSQL' if args.postgres else 'SQLite'} staging, password file on; "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    for i, c in enumerate(levels):
        n = args.people_at_1 if c == 1 else args.people
        one_level(c, n, args.latency_ms, noop=i == len(levels) - 1, server=args.postgres)


if __name__ == "__main__":
    main()
