"""Benchmark: a bounded burst of signed HR events against ``syncengine serve`` on loopback.

Starts the emulator (Gen 2 by default) in this process, makes a config folder with a small
HR export and syncs it once, then runs ``syncengine serve`` as a real subprocess and POSTs
``--events`` signed upserts from ``--pushers`` threads: ``--hires`` new people, each pushed
``events / hires`` times with a new position (the last one wins). A watcher polls the
emulator's state every 20 ms.

Prints: events accepted per second (202 answers over the posting time); for every event the
time from its POST to the moment the emulator first shows that person's mailbox at that
event's version or a later one (median and 95th percentile); how many targeted syncs did the
work, and the time until the last event was applied.

    .venv/bin/python bench/hooks.py [--events 1000] [--hires 100] [--pushers 4] [--api v2]

The update brake is opened (``max_update_share = 1``): with pushers interleaving, a batch can
catch people created by the previous batch, and in a 13-mailbox directory a few updates are
already more than 30 %.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from syncengine import service
from syncengine.config import load_config
from syncengine.emulator.harness import start_emulator

SECRET = "bench-hook-secret-0001"
COLUMNS = ["employee_id", "name", "email", "departments", "position", "status"]


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


def write_folder(root: Path, exmail: dict[str, Any]) -> Path:
    rows = [
        {"employee_id": "E0001", "name": "张三", "email": "zhangsan@example.com",
         "departments": "研发中心/平台部", "position": "高级工程师", "status": "active"},
        {"employee_id": "E0002", "name": "李四", "email": "lisi@example.com",
         "departments": "研发中心/移动部", "position": "工程师", "status": "active"},
        {"employee_id": "E0003", "name": "王五", "email": "wangwu@example.com",
         "departments": "市场部", "position": "市场经理", "status": "active"},
    ]  # fmt: skip
    with (root / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tables: dict[str, dict[str, Any]] = {
        "exmail": {**exmail, "timeout": 30},
        "database": {"url": f"sqlite:///{root / 'staging.db'}"},
        "source": {"type": "csv", "path": "hr.csv"},
        "mapping": {"email": "email", "departments": {"field": "departments", "split": ";"},
                    "position": "position", "status": "status"},
        "policy": {"max_update_share": 1.0, "managed_fields": ["name", "position",
                                                                "departments"]},
        "apply": {"concurrency": 4, "rate_per_second": 0},
        "hooks": {"secret": SECRET, "coalesce_window": 0.2, "poll_interval": 0.5},
    }  # fmt: skip
    text = ""
    for name, table in tables.items():
        text += f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
    path = root / "syncengine.toml"
    path.write_text(text, encoding="utf-8")
    return path


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Syncengine-Timestamp": ts,
            "X-Syncengine-Signature": "sha256=" + mac}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--hires", type=int, default=100)
    parser.add_argument("--pushers", type=int, default=4)
    parser.add_argument("--api", choices=["v1", "v2"], default="v2")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after S seconds")
    args = parser.parse_args()
    versions = max(1, args.events // args.hires)
    total = versions * args.hires

    emu = start_emulator(args.api)
    root = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        config_path = write_folder(root, emu.exmail_config())
        config = load_config(config_path)
        with service.Engine(config) as engine:
            service.ingest(engine)
            plan = service.make_plan(engine).plan
            service.apply_plan(engine, plan, checksum=plan.checksum)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        exe = Path(sys.executable).parent / "syncengine"
        log = (root / "serve.log").open("wb")
        proc = subprocess.Popen([str(exe), "--config", str(config_path), "serve", "--port",
                                 str(port)], stdout=log, stderr=log,
                                env={**os.environ})  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"serve did not start; see {root / 'serve.log'}")
            time.sleep(0.05)

        # The watcher: when each person's mailbox first shows each version.
        seen: dict[int, list[tuple[float, int]]] = {}
        stop = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=emu.base_url, timeout=10) as c:
                while not stop.is_set():
                    state = c.get("/_emulator/state").json()
                    now = time.perf_counter()
                    for u in state["users"]:
                        uid = str(u["userid"])
                        if uid.startswith("bench") and str(u.get("position", "")).startswith("v"):
                            n = int(uid[5:].split("@")[0])
                            v = int(str(u["position"])[1:])
                            marks = seen.setdefault(n, [])
                            if not marks or marks[-1][1] != v:
                                marks.append((now, v))
                    stop.wait(0.02)

        posted: dict[tuple[int, int], float] = {}
        statuses: list[int] = []
        lock = threading.Lock()

        def push(first: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                for n in range(first, args.hires, args.pushers):
                    for v in range(versions):
                        doc = {"kind": "upsert", "delivery_id": f"bench-{n}-{v}",
                               "person": {"employee_id": f"B{n:05d}", "name": f"压测{n}",
                                          "email": f"bench{n}@example.com",
                                          "departments": "研发中心/平台部", "position": f"v{v}",
                                          "status": "active"}}  # fmt: skip
                        body = json.dumps(doc, ensure_ascii=False).encode()
                        t0 = time.perf_counter()
                        r = c.post("/hooks/hr", content=body, headers=signed(body))
                        with lock:
                            posted[(n, v)] = t0
                            statuses.append(r.status_code)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.perf_counter()
        pushers = [threading.Thread(target=push, args=(i,)) for i in range(args.pushers)]
        for t in pushers:
            t.start()
        for t in pushers:
            t.join(args.timeout)
        post_seconds = time.perf_counter() - started
        accepted = statuses.count(202)

        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            if all(seen.get(n) and seen[n][-1][1] == versions - 1 for n in range(args.hires)):
                break
            time.sleep(0.05)
        done_seconds = time.perf_counter() - started
        stop.set()
        watcher.join(5)

        latencies: list[float] = []
        missing = 0
        for (n, v), t0 in posted.items():
            shown = next((t for t, ver in seen.get(n, []) if ver >= v and t >= t0), None)
            if shown is None:
                missing += 1
            else:
                latencies.append(shown - t0)
        events = service.list_hook_events(service.Engine(config), limit=total + 10)
        by_status: dict[str, int] = {}
        for e in events:
            by_status[e.status] = by_status.get(e.status, 0) + 1
        runs = {e.run_id for e in events if e.run_id is not None}

        print(
            f"hooks bench ({args.api}): {total} events for {args.hires} new people "
            f"({versions} versions each), {args.pushers} pushers, serve as a subprocess"
        )
        print(
            f"accepted: {accepted}/{total} in {post_seconds:.2f} s = "
            f"{accepted / post_seconds:,.0f} events/s"
        )
        if latencies:
            print(
                f"POST -> mailbox changed: median {statistics.median(latencies) * 1000:,.0f} ms, "
                f"p95 {percentile(latencies, 0.95) * 1000:,.0f} ms, "
                f"max {max(latencies) * 1000:,.0f} ms ({len(latencies)} events measured, "
                f"{missing} never seen)"
            )
        print(
            f"all applied after {done_seconds:.2f} s; event statuses {by_status}; "
            f"{len(runs)} targeted sync(s) with writes"
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        emu.close()


if __name__ == "__main__":
    main()
