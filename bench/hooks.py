"""Benchmark: HR hooks on a 10,000-person directory, as a user meets them (issue 14).

Per run: the emulator is started in its own process (``syncengine emulator``, 10,000 members
in 200 departments by default), a config folder gets an HR export that matches it and a
config with DEFAULT settings (only the Exmail credentials, the staging file, the source and
the hook secret are set: no brake opened, no hook tuning, the default pace of 15 Exmail calls
per second), the staging database is synced once (``syncengine sync``), then ``syncengine
serve`` runs as a subprocess and gets two loads:

1. a burst: ``--pushers`` client threads, each on its own keep-alive connection, POST
   ``--events`` signed upserts as fast as they can, over ``--people`` existing members, each
   pushed ``events / people`` times with a new position (the last one wins);
2. a steady stream: ``--stream-events`` upserts, one every ``1 / --stream-rate`` seconds,
   each for another member (a field change costs two Exmail calls: read, write; at the
   default pace the API absorbs about seven people a second).

Measured without disturbing the server: for each event, the time from just before its POST
to the moment the staging database marks it applied (``hook_events.applied_at``, written
after the batch's writes returned: an upper bound of "the mailbox changed"), read from the
database once everything settled; accepted events per second (202 answers over the posting
time); lost events (accepted but never applied, or a member whose final position in the
emulator is not their last version: must be 0); the load average before and after.

``--reference-exe`` runs the same scenario with another ``syncengine`` executable (e.g.
main's code in a second venv), interleaved with the subject, ``--repeat`` times each.

    .venv/bin/python bench/hooks.py [--directory 10000] [--events 2000] [--people 500]
        [--pushers 8] [--stream-rate 4] [--stream-events 60] [--api v2] [--repeat 1]
        [--reference-exe PATH]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from syncengine.emulator.seed import big_seed, config_snippet

BIN = Path(sys.executable).parent / "syncengine"
SECRET = "bench-hook-secret-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_folder(folder: Path, seed: dict[str, Any], base_url: str, api: str) -> Path:
    with (folder / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position", "gender"])
        for u in seed["users"]:
            w.writerow([u["extid"], u["name"], u["userid"], u["department"][0], u["position"],
                        "男" if u["gender"] == "1" else "女"])  # fmt: skip
    config = folder / "syncengine.toml"
    config.write_text(
        f"""[database]
url = "sqlite:///{folder / "staging.db"}"

[source]
type = "csv"
path = "hr.csv"

[mapping]
email = "email"
departments = "departments"
position = "position"
gender = "gender"

[hooks]
secret = "{SECRET}"

"""
        + config_snippet(seed, base_url, api)
        + "\n",
        encoding="utf-8",
    )
    return config


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Syncengine-Timestamp": ts,
            "X-Syncengine-Signature": "sha256=" + mac}  # fmt: skip


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Result:
    label: str
    accepted: int
    total: int
    post_seconds: float
    median_ms: float
    p95_ms: float
    lost: int
    settle_seconds: float

    @property
    def rate(self) -> float:
        return self.accepted / self.post_seconds if self.post_seconds else 0.0


def settled(db: Path, total: int) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        (waiting,) = conn.execute(
            "select count(*) from hook_events where status = 'received'"
        ).fetchone()
        (stored,) = conn.execute("select count(*) from hook_events").fetchone()
    return bool(stored >= total and waiting == 0)


def person_of(u: dict[str, Any], version: str) -> dict[str, str]:
    return {"employee_id": u["extid"], "name": u["name"], "email": u["userid"],
            "departments": u["department"][0], "position": version,
            "gender": "男" if u["gender"] == "1" else "女"}  # fmt: skip


class Pusher:
    """Signed POSTs on one keep-alive connection, each one's send time recorded."""

    def __init__(self, base: str, posted: dict[str, float], statuses: list[int]) -> None:
        self.client = httpx.Client(base_url=base, timeout=60)
        self.posted = posted
        self.statuses = statuses
        self.lock = threading.Lock()

    def post(self, delivery: str, person: dict[str, str]) -> None:
        doc = {"kind": "upsert", "delivery_id": delivery, "person": person}
        body = json.dumps(doc, ensure_ascii=False).encode()
        t0 = time.time()
        r = self.client.post("/hooks/hr", content=body, headers=signed(body))
        with self.lock:
            self.posted[delivery] = t0
            self.statuses.append(r.status_code)


def phase(label: str, db: Path, posted: dict[str, float], statuses: list[int],
          post_seconds: float, started: float, timeout: float, total_before: int,
          wrong: int) -> Result:  # fmt: skip
    """Wait until every event is worked off, then read when each was applied."""
    total = len(posted)
    deadline = time.monotonic() + timeout
    while not settled(db, total_before + total) and time.monotonic() < deadline:
        time.sleep(0.25)
    settle_seconds = time.perf_counter() - started
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("select delivery_id, status, applied_at from hook_events").fetchall()
    latencies: list[float] = []
    seen = 0
    lost = wrong
    for delivery, status, applied_at in rows:
        if delivery not in posted:
            continue
        seen += 1
        if status != "applied" or applied_at is None:
            lost += 1
            continue
        at = datetime.fromisoformat(str(applied_at))
        if at.tzinfo is None:  # stored UTC without an offset
            at = at.replace(tzinfo=UTC)
        latencies.append(at.timestamp() - posted[delivery])
    lost += total - seen
    return Result(label, statuses.count(202), total, post_seconds,
                  statistics.median(latencies) * 1000 if latencies else float("nan"),
                  percentile(latencies, 0.95) * 1000 if latencies else float("nan"),
                  lost, settle_seconds)  # fmt: skip


def final_positions(emu: str) -> dict[str, str]:
    state = httpx.get(emu + "/_emulator/state", timeout=120).json()
    return {str(u["userid"]).lower(): str(u.get("position", "")) for u in state["users"]}


def run_once(label: str, exe: Path, args: argparse.Namespace) -> tuple[Result, Result]:
    seed = big_seed(args.directory, args.departments)
    members = seed["users"][: args.people]
    streamed = seed["users"][args.people : args.people + args.stream_events]
    versions = max(1, args.events // args.people)
    root = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    (root / "seed.json").write_text(json.dumps(seed, ensure_ascii=False), encoding="utf-8")
    emulator = serve = None
    try:
        port = free_port()
        emulator = subprocess.Popen(
            [str(BIN), "emulator", "--api", args.api, "--seed", str(root / "seed.json"),
             "--port", str(port), "--control"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
        )  # fmt: skip
        emu = f"http://127.0.0.1:{port}"
        wait_http(emu + "/_emulator/state", emulator, "the emulator")
        config = write_folder(root, seed, emu, args.api)
        done = subprocess.run([str(exe), "--config", str(config), "sync", "--json"], cwd=root,
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"initial sync exited {done.returncode}: {done.stderr[-2000:]}")
        hook_port = free_port()
        base = f"http://127.0.0.1:{hook_port}"
        log = (root / "serve.log").open("wb")
        serve = subprocess.Popen([str(exe), "--config", str(config), "serve", "--port",
                                  str(hook_port)], stdout=log, stderr=log, cwd=root)  # fmt: skip
        wait_http(base + "/healthz", serve, "syncengine serve")
        db = root / "staging.db"

        # 1. The burst: every pusher as fast as it can.
        httpx.post(emu + "/_emulator/calls/clear", timeout=30)
        posted: dict[str, float] = {}
        statuses: list[int] = []

        def push(first: int) -> None:
            pusher = Pusher(base, posted, statuses)
            for v in range(versions):
                for n in range(first, len(members), args.pushers):
                    pusher.post(f"bench-{n}-{v}", person_of(members[n], f"v{v}"))

        started = time.perf_counter()
        threads = [threading.Thread(target=push, args=(i,)) for i in range(args.pushers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        post_seconds = time.perf_counter() - started
        burst = phase(f"{label}/burst", db, posted, statuses, post_seconds, started,
                      args.timeout, 0, 0)  # fmt: skip
        counts = httpx.get(emu + "/_emulator/calls", timeout=120).json()["counts"]
        print(
            f"  {label}/burst Exmail calls until settled: {sum(counts.values()):,} "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))})",
            flush=True,
        )
        final = final_positions(emu)
        wrong = sum(1 for u in members if final.get(u["userid"].lower()) != f"v{versions - 1}")
        burst = dataclasses.replace(burst, lost=burst.lost + wrong)

        # 2. The stream: one event every 1/rate seconds, each for another member.
        s_posted: dict[str, float] = {}
        s_statuses: list[int] = []
        pusher = Pusher(base, s_posted, s_statuses)
        started = time.perf_counter()
        for j, u in enumerate(streamed):
            slot = started + j / args.stream_rate
            time.sleep(max(0.0, slot - time.perf_counter()))
            pusher.post(f"stream-{j}", person_of(u, "s1"))
        post_seconds = time.perf_counter() - started
        stream = phase(f"{label}/stream", db, s_posted, s_statuses, post_seconds, started,
                       args.timeout, len(posted), 0)  # fmt: skip
        final = final_positions(emu)
        wrong = sum(1 for u in streamed if final.get(u["userid"].lower()) != "s1")
        return burst, dataclasses.replace(stream, lost=stream.lost + wrong)
    finally:
        stop(serve)
        stop(emulator)


def show(r: Result) -> None:
    print(f"  {r.label:16} accepted {r.accepted}/{r.total} in {r.post_seconds:6.2f} s = "
          f"{r.rate:7,.0f} events/s; POST -> applied median {r.median_ms:7,.0f} ms, "
          f"p95 {r.p95_ms:7,.0f} ms; lost {r.lost}; all settled after "
          f"{r.settle_seconds:6.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", type=int, default=10_000, help="members in Exmail/HR")
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--people", type=int, default=500, help="distinct members pushed")
    parser.add_argument("--pushers", type=int, default=8, help="client threads")
    parser.add_argument("--api", choices=["v1", "v2"], default="v2")
    parser.add_argument(
        "--stream-rate",
        type=float,
        default=4.0,
        help="events per second of the steady stream after the burst",
    )
    parser.add_argument("--stream-events", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="settle limit, seconds")
    parser.add_argument("--reference-exe", type=Path, default=None,
                        help="another syncengine executable measured interleaved")  # fmt: skip
    args = parser.parse_args()
    subjects = [("subject", BIN)]
    if args.reference_exe is not None:
        subjects.append(("reference", args.reference_exe))
    print(f"hooks bench ({args.api}): {args.directory:,}-member directory, {args.events} "
          f"events over {args.people} members, {args.pushers} pushers, serve as a subprocess "
          f"with default settings; load average {os.getloadavg()}")  # fmt: skip
    results: dict[str, list[Result]] = {}
    for _ in range(args.repeat):
        for label, exe in subjects:
            for r in run_once(label, exe, args):
                show(r)
                results.setdefault(r.label, []).append(r)
    print("medians:")
    for label, rs in results.items():
        print(f"  {label:16} {statistics.median(r.rate for r in rs):7,.0f} events/s accepted; "
              f"POST -> applied median {statistics.median(r.median_ms for r in rs):7,.0f} ms, "
              f"p95 {statistics.median(r.p95_ms for r in rs):7,.0f} ms; "
              f"lost {max(r.lost for r in rs)}")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
