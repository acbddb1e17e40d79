"""Benchmark: the nightly ``sync`` of a 10,000-person company when nothing changed.

The emulator (in this process, on loopback, ``--latency-ms`` added to every call) starts with
10,000 mailboxes that already match the HR export (same ext ids, names, departments). The
first ``service.sync`` adopts them (link records only: no Exmail write); the second is the
ordinary quiet night. For each run it prints the seconds, the plan's action count and the
write calls the emulator saw (the no-op night must make 0).

    .venv/bin/python bench/sync_noop.py [--people 10000] [--departments 200]
                                        [--latency-ms 20] [--api v2|v1|both]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.app import create_app
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.seed import DEMO_CORP_ID, DEMO_SECRETS, DEMO_V1_SECRET, big_seed
from syncengine.emulator.server import start_in_thread

WRITES = {
    "department/create", "department/update", "department/delete", "user/create",
    "user/update", "user/delete", "user/swapalias", "party/sync", "user/sync",
}  # fmt: skip


def write_hr(path: Path, seed: dict[str, Any]) -> None:
    """The HR export that matches the seeded directory exactly."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position", "gender",
                    "status"])  # fmt: skip
        for u in seed["users"]:
            w.writerow([u["extid"], u["name"], u["userid"], u["department"][0], u["position"],
                        "男" if u["gender"] == "1" else "女", "在职"])  # fmt: skip


def config_data(api: str, base_url: str, folder: Path) -> dict[str, Any]:
    exmail: dict[str, Any] = {
        "api": api,
        "base_url": base_url,
        "timeout": 60,
        "sso_url": base_url + "/cgi-bin/login",
        "domains": ["example.com"],
    }
    if api == "v2":
        exmail.update(corp_id=DEMO_CORP_ID, secrets=dict(DEMO_SECRETS))
    else:
        exmail.update(client_id="admin@example.com", client_secret=DEMO_V1_SECRET)
    return {
        "exmail": exmail,
        "database": {"url": f"sqlite:///{folder / 'staging.db'}"},
        "source": {"type": "csv", "path": str(folder / "hr.csv")},
        "mapping": {"employee_id": "employee_id", "name": "name", "email": "email",
                    "departments": "departments", "position": "position", "gender": "gender",
                    "status": "status"},
        "apply": {"concurrency": 16, "rate_per_second": 0},
        "passwords": {"delivery": "none"},
    }  # fmt: skip


def writes_since(app: Any, seq: int) -> tuple[int, int]:
    log = app.state.emulator.calls_since(seq)
    calls = log["calls"]
    writes = sum(1 for c in calls if c["endpoint"].split("/", 2)[-1] in WRITES)
    return writes, len(calls)


def run(api: str, people: int, departments: int, latency_ms: float) -> None:
    seed = big_seed(people, departments)
    app = create_app(api, seed, EmulatorOptions(latency_ms=latency_ms))  # type: ignore[arg-type]
    server = start_in_thread(app)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_hr(folder / "hr.csv", seed)
            config = parse_config(config_data(api, server.base_url, folder),
                                  path=folder / "syncengine.toml")  # fmt: skip
            for label in ("adopt (first run)", "no-op night"):
                mark = app.state.emulator.call_seq
                started = time.perf_counter()
                with service.Engine(config) as engine:
                    report = service.sync(engine, notify=False)
                seconds = time.perf_counter() - started
                writes, calls = writes_since(app, mark)
                actions = len(report.plan.plan.actions) if report.plan else 0
                print(
                    f"{api} {label}: {people:,} people, {seconds:.2f} s, status "
                    f"{report.status}, {actions:,} plan actions, {calls:,} API calls, "
                    f"{writes} write calls (latency {latency_ms:g} ms/call)"
                )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--api", choices=["v1", "v2", "both"], default="v2")
    args = parser.parse_args()
    for api in ["v2", "v1"] if args.api == "both" else [args.api]:
        run(api, args.people, args.departments, args.latency_ms)


if __name__ == "__main__":
    main()
