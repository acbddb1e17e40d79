"""Benchmark: the Gen 1 directory read as a user meets it, against the server's ceiling.

The emulator runs in its own process (``syncengine emulator --api v1``, 10,000 members in 200
departments by default); the engine runs as the real command, ``syncengine plan --json``, in a
subprocess (interpreter start and imports included) with ``rate_per_second = 0`` (the pace is
the user's choice; every request still goes through the pacer and reads are retried). In the
same run, interleaved and repeated, a raw-socket client (pre-built requests on one keep-alive
connection, no HTTP library) measures the emulator's ceiling for Gen 1 ``user/get``.

Printed: for the full read (``[exmail] full_read_days = 0``), the calls the emulator logged,
the plan's own ``read_state`` seconds, calls/s and the ratio to the ceiling; for the quiet
night after it (incremental, from the stored ``user/list`` cursor), the calls it made; the
medians, and the load average before and after.

    .venv/bin/python bench/read_state.py [--users 10000] [--departments 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from syncengine.emulator.seed import DEMO_V1_SECRET, big_seed

BIN = Path(sys.executable).parent / "syncengine"
CLIENT_ID = "admin@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_emulator(folder: Path, seed: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "seed.json").write_text(json.dumps(seed, ensure_ascii=False), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "emulator", "--api", "v1", "--seed", str(folder / "seed.json"),
         "--port", str(port), "--control"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/_emulator/state", timeout=2).raise_for_status()
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the emulator did not start within 60 s")


def write_folder(folder: Path, seed: dict[str, Any], base: str, full_read_days: float) -> Path:
    with (folder / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position", "gender"])
        for u in seed["users"]:
            w.writerow([u["extid"], u["name"], u["userid"], u["department"][0], u["position"],
                        "男" if u["gender"] == "1" else "女"])  # fmt: skip
    config = folder / "syncengine.toml"
    config.write_text(
        f"""[exmail]
api = "v1"
base_url = "{base}"
sso_url = "{base}/cgi-bin/login"
client_id = "{CLIENT_ID}"
client_secret = "{DEMO_V1_SECRET}"
domains = ["example.com"]
timeout = 60
full_read_days = {full_read_days}

[database]
url = "sqlite:///{folder / "staging.db"}"

[source]
type = "csv"
path = "hr.csv"

[mapping]
email = "email"
departments = "departments"
position = "position"
gender = "gender"

[apply]
rate_per_second = 0
""",
        encoding="utf-8",
    )
    return config


def cli(config: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN), "--config", str(config), *args], capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 2, 3):
        raise SystemExit(f"syncengine {' '.join(args)} exited {done.returncode}: {done.stderr}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


READS = {"/cgi-bin/token", "/openapi/user/list", "/openapi/party/list",
         "/openapi/partyuser/list", "/openapi/user/get"}  # fmt: skip
"""The calls of the directory read (plan also checks new addresses with user/check)."""


def call_count(base: str) -> int:
    calls = httpx.get(base + "/_emulator/calls", params={"since": 0}, timeout=30).json()
    return int(sum(n for endpoint, n in calls["counts"].items() if endpoint in READS))


def plan_read(config: Path, base: str) -> tuple[int, float, float]:
    """(calls, read seconds, command seconds) of one ``plan --json``."""
    before = call_count(base)
    started = time.perf_counter()
    out = cli(config, "plan", "--json")
    wall = time.perf_counter() - started
    return call_count(base) - before, float(out["seconds"]["read_state"]), wall


def socket_ceiling(base: str, calls: int = 3000) -> float:
    """Gen 1 ``user/get`` requests/s over one keep-alive connection, pre-built bytes."""
    host, port = base.removeprefix("http://").split(":")
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": DEMO_V1_SECRET}  # fmt: skip
    token = httpx.post(base + "/cgi-bin/token", data=form).json()["access_token"]
    query = urlencode({"alias": "user00000@example.com"})
    request = (
        f"GET /openapi/user/get?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        buffer = b""
        started = time.perf_counter()
        for _ in range(calls):
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
            if not head.startswith(b"HTTP/1.1 200") or match is None:
                raise SystemExit(f"unexpected answer: {head[:80]!r}")
            while len(buffer) < int(match.group(1)):
                buffer += sock.recv(65536)
            buffer = buffer[int(match.group(1)) :]
        return calls / (time.perf_counter() - started)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    seed = big_seed(args.users, args.departments)
    print(f"machine: {os.cpu_count()} CPUs; load average {load()}; "
          f"{args.users} members, {args.departments} departments")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "full").mkdir()
        (root / "incremental").mkdir()
        emulator, base = start_emulator(root, seed)
        try:
            full = write_folder(root / "full", seed, base, 0)
            incremental = write_folder(root / "incremental", seed, base, 7)
            for config in (full, incremental):
                cli(config, "ingest", "--json")
            cli(incremental, "plan", "--json")  # the first read is a full one: the cursor
            ceilings, rates, ratios, walls, quiet = [], [], [], [], []
            for n in range(args.repeat):
                ceiling = socket_ceiling(base)
                calls, read, wall = plan_read(full, base)
                quiet_calls, _, quiet_wall = plan_read(incremental, base)
                rate = calls / read
                ceilings.append(ceiling)
                rates.append(rate)
                ratios.append(rate / ceiling)
                walls.append(wall)
                quiet.append((quiet_calls, quiet_wall))
                print(f"run {n + 1}: ceiling {ceiling:,.0f} req/s (raw socket); full read "
                      f"{calls} calls in {read:.2f} s = {rate:,.0f} calls/s = "
                      f"{rate / ceiling:.0%} of the ceiling (plan command {wall:.2f} s); "
                      f"quiet night {quiet_calls} calls (plan command {quiet_wall:.2f} s); "
                      f"load {load()}")  # fmt: skip
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    print(f"median: ceiling {statistics.median(ceilings):,.0f} req/s; full read "
          f"{statistics.median(rates):,.0f} calls/s = {statistics.median(ratios):.0%} of the "
          f"ceiling; plan command {statistics.median(walls):.2f} s; quiet night "
          f"{statistics.median(q[0] for q in quiet):.0f} calls, plan command "
          f"{statistics.median(q[1] for q in quiet):.2f} s; load average {load()}")  # fmt: skip


if __name__ == "__main__":
    main()
