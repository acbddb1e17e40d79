"""Benchmark: the whole ``syncengine apply`` command applying N creates, as a user meets it.

For each concurrency (default 16, 32, 64) and each repetition: a fresh emulator (Gen 2, in
its own process, 20 ms of latency on every call), a fresh SQLite staging file and an HR CSV
of N new people in 40 departments; ``syncengine ingest`` and ``syncengine plan --out`` are
run first (not timed), then ``syncengine apply PLAN --yes --json`` runs as a subprocess with
the default settings except ``[apply] concurrency`` and ``rate_per_second = 0`` (no
client-side cap: the ideal below assumes none) and the removal brake's ``min_existing``
(an empty directory receiving 10,000 mailboxes). Timed: the subprocess's wall time
(interpreter start, imports, lock, state re-read, every create, checkpoints, audit rows,
password file) and its CPU (user + system, from ``wait4``).

Printed per level: actions, wall seconds, actions/s, the ideal (concurrency / latency: one
call per create, nothing else), their ratio, CPU ms per action, and the load average beside;
from the emulator's call log, where the wall time went: the start (process start to the first
user create), the rate between the first user create and the last call, the end after it.
With ``--reference-exe`` (another build's ``syncengine``, e.g. main's venv) both builds run
interleaved on the same machine in the same run; medians over ``--repeat`` runs.

    .venv/bin/python bench/apply.py [--people 10000] [--latency-ms 20] [--levels 16,32,64]
        [--repeat 3] [--reference-exe /work/main/.venv/bin/syncengine]
    .venv/bin/python bench/apply.py --server-only --reference-exe <main's syncengine>
        (the emulator alone, both builds' emulators interleaved: rate and CPU per request)
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from syncengine.emulator.seed import DEMO_CORP_ID, DEMO_SECRETS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """``syncengine emulator`` in a child process, so it does not share our GIL."""

    def __init__(self, latency_ms: float, exe: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = exe or str(Path(sys.executable).parent / "syncengine")
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

    def cpu(self) -> float:
        """The emulator process's CPU seconds so far (user + system, from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.http.get("/_emulator/calls").json()["calls"]
        return calls

    def clear(self) -> None:
        self.http.post("/_emulator/calls/clear")

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def write_setup(folder: Path, url: str, people: int, concurrency: int) -> Path:
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

[exmail.secrets]
{secrets}

[database]
url = "sqlite:///{folder / "staging.db"}"

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


@dataclass(frozen=True)
class Run:
    actions: int
    wall: float
    cpu: float
    load: float
    server_cpu: float  # the emulator's CPU seconds over the same apply
    # From the emulator's call log (its wall clock, the same machine's): seconds from the
    # process start to the first call and to the first user/create, the creates' rate between
    # the first user/create and the last call, and the seconds after the last call.
    first_call: float = float("nan")
    first_create: float = float("nan")
    window_rate: float = float("nan")
    tail: float = float("nan")

    @property
    def cores(self) -> float:
        """CPU the apply and the emulator needed together, in cores, at the rate reached."""
        return (self.cpu + self.server_cpu) / self.wall

    @property
    def rate(self) -> float:
        return self.actions / self.wall


def run_cli(exe: str, config: Path, *args: str) -> None:
    """One untimed ``syncengine`` step (ingest, plan)."""
    proc = subprocess.run([exe, "--config", str(config), *args], cwd=config.parent,
                          capture_output=True, check=False)  # fmt: skip
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{exe} {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr.decode()[-2000:]}")  # fmt: skip


def timed_apply(exe: str, concurrency: int, people: int, latency_ms: float) -> Run:
    emu = Emulator(latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
            config = write_setup(Path(tmp), emu.url, people, concurrency)
            run_cli(exe, config, "ingest")
            plan = Path(tmp) / "plan.json"
            run_cli(exe, config, "plan", "--out", str(plan))
            load = os.getloadavg()[0]
            emu.clear()
            server_before = emu.cpu()
            epoch = time.time()
            started = time.perf_counter()
            proc = subprocess.Popen([exe, "--config", str(config), "apply", str(plan), "--yes",
                                     "--json"], cwd=tmp, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)  # fmt: skip
            assert proc.stdout is not None and proc.stderr is not None
            out = proc.stdout.read()
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            server_cpu = emu.cpu() - server_before
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(f"apply exited {proc.returncode}: {err.decode()[-2000:]}")
            report: dict[str, Any] = json.loads(out)["applied"]
            actions = int(report["counts"]["done"])
            if report["failures"] or actions < people:
                raise RuntimeError(f"apply did not do every create: {report['counts']}")
            at = [(c["endpoint"], float(c["at"]) - epoch) for c in emu.calls()]
            creates = [t for endpoint, t in at if endpoint.endswith("/user/create")]
            last = max(t for _, t in at)
            return Run(actions, wall, usage.ru_utime + usage.ru_stime, load, server_cpu,
                       first_call=min(t for _, t in at), first_create=min(creates),
                       window_rate=len(creates) / (last - min(creates)),
                       tail=wall - last)  # fmt: skip
    finally:
        emu.close()


def server_ceiling(
    concurrency: int, creates: int, latency_ms: float, exe: str | None = None
) -> tuple[float, float]:
    """The reference: ``user/create`` calls per second a fresh emulator (same settings)
    delivers to ``concurrency`` raw keep-alive sockets (``http.client``, no engine, no
    database), i.e. what any client could get from this server on this machine now; and
    the emulator's CPU ms per request meanwhile."""
    emu = Emulator(latency_ms, exe)
    try:
        got = emu.http.get("/cgi-bin/gettoken", params={
            "corpid": DEMO_CORP_ID, "corpsecret": DEMO_SECRETS["contacts"]}).json()  # fmt: skip
        token = got["access_token"]
        port = emu.port
        errors: list[str] = []

        def worker(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(k, creates, concurrency):
                body = json.dumps({"userid": f"ref{i:06d}@example.com", "name": f"参照{i}",
                                   "department": [1], "password": "Ref-Passw0rd-2026",
                                   "cpwd_login": 0}).encode()  # fmt: skip
                conn.request("POST", f"/cgi-bin/user/create?access_token={token}", body,
                             {"Content-Type": "application/json"})  # fmt: skip
                answer = json.loads(conn.getresponse().read())
                if answer.get("errcode") != 0:
                    errors.append(str(answer))
            conn.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        cpu_before = emu.cpu()
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        cpu_ms = 1000 * (emu.cpu() - cpu_before) / creates
        if errors:
            raise RuntimeError(f"{len(errors)} reference creates failed, first: {errors[0]}")
        return creates / seconds, cpu_ms
    finally:
        emu.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--levels", default="16,32,64")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--reference-exe", default=None, metavar="SYNCENGINE")
    parser.add_argument("--server-creates", type=int, default=4000,
                        help="creates for the server-ceiling reference (0: skip it)")  # fmt: skip
    parser.add_argument("--server-only", action="store_true",
                        help="only the server reference: this build's emulator and, with "
                        "--reference-exe, that build's, interleaved")  # fmt: skip
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if args.server_only:
        servers(args, levels)
        return
    subject = str(Path(sys.executable).parent / "syncengine")
    builds = {"this build": subject}
    if args.reference_exe:
        builds["reference"] = args.reference_exe
    print(f"apply benchmark: whole `syncengine apply` subprocess, {args.people:,} creates, Gen 2 "
          f"emulator in a child process with {args.latency_ms:g} ms latency per call, SQLite "
          f"staging, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
          flush=True)  # fmt: skip
    for c in levels:
        ideal = c / (args.latency_ms / 1000.0)
        runs: dict[str, list[Run]] = {name: [] for name in builds}
        ceilings: list[float] = []
        for i in range(args.repeat):
            if args.server_creates:
                rate, server_ms = server_ceiling(c, args.server_creates, args.latency_ms)
                ceilings.append(rate)
                print(f"  c={c:>2} server    #{i + 1}: {rate:,.0f} creates/s to raw sockets "
                      f"({rate / ideal:.0%} of ideal), emulator CPU {server_ms:.3f} ms/request, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
            for name, exe in builds.items():  # interleaved
                r = timed_apply(exe, c, args.people, args.latency_ms)
                runs[name].append(r)
                print(f"  c={c:>2} {name:<10} #{i + 1}: {r.actions:,} actions in {r.wall:.2f} s "
                      f"= {r.rate:,.0f}/s ({r.rate / ideal:.0%} of ideal), CPU "
                      f"{1000 * r.cpu / r.actions:.2f} ms/action (emulator "
                      f"{1000 * r.server_cpu / r.actions:.2f}; both {r.cores:.2f} cores), "
                      f"load {r.load:.2f}; first call +{r.first_call:.2f} s, first user "
                      f"create +{r.first_create:.2f} s, then {r.window_rate:,.0f}/s "
                      f"({r.window_rate / ideal:.0%} of ideal) to the last call, "
                      f"{r.tail:.2f} s after it", flush=True)  # fmt: skip
        ceiling = statistics.median(ceilings) if ceilings else float("nan")
        if ceilings:
            print(f"concurrency {c:>2} server    : median {ceiling:,.0f} creates/s to raw sockets; "
                  f"ratio {ceiling / ideal:.2f} of the ideal", flush=True)  # fmt: skip
        for name, rs in runs.items():
            rate = statistics.median(r.rate for r in rs)
            cpu = statistics.median(1000 * r.cpu / r.actions for r in rs)
            server_ms = statistics.median(1000 * r.server_cpu / r.actions for r in rs)
            load = statistics.median(r.load for r in rs)
            first = statistics.median(r.first_create for r in rs)
            window = statistics.median(r.window_rate for r in rs)
            tail = statistics.median(r.tail for r in rs)
            # The CPU both processes would need at the ideal rate, in cores (2 on this VM).
            need = (cpu + server_ms) * ideal / 1000
            print(f"concurrency {c:>2} {name:<10}: median {rate:,.0f} actions/s; ideal "
                  f"{ideal:,.0f}/s; ratio {rate / ideal:.2f} (of the server's: "
                  f"{rate / ceiling:.2f}); CPU {cpu:.2f} ms/action + emulator "
                  f"{server_ms:.2f} ms: the ideal rate would need {need:.2f} cores; "
                  f"first user create +{first:.2f} s, then {window / ideal:.2f} of the ideal, "
                  f"{tail:.2f} s after the last call; load average {load:.2f} "
                  f"(n={len(rs)})", flush=True)  # fmt: skip


def servers(args: argparse.Namespace, levels: list[int]) -> None:
    """``--server-only``: the emulator's own rate and CPU per request, builds interleaved."""
    builds = {"this build": None, "reference": args.reference_exe}
    if not args.reference_exe:
        del builds["reference"]
    print(f"emulator to {args.server_creates:,} raw keep-alive `user/create` calls, "
          f"{args.latency_ms:g} ms latency, {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    for c in levels:
        ideal = c / (args.latency_ms / 1000.0)
        got: dict[str, list[tuple[float, float, float]]] = {name: [] for name in builds}
        for i in range(args.repeat):
            for name, exe in builds.items():
                load = os.getloadavg()[0]
                rate, ms = server_ceiling(c, args.server_creates, args.latency_ms, exe)
                got[name].append((rate, ms, load))
                print(f"  c={c:>2} {name:<10} #{i + 1}: {rate:,.0f}/s ({rate / ideal:.0%} of "
                      f"ideal), {ms:.3f} ms CPU/request, load {load:.2f}", flush=True)  # fmt: skip
        for name, runs in got.items():
            rate = statistics.median(r[0] for r in runs)
            ms = statistics.median(r[1] for r in runs)
            load = statistics.median(r[2] for r in runs)
            print(f"concurrency {c:>2} {name:<10}: median {rate:,.0f} creates/s, ratio "
                  f"{rate / ideal:.2f} of the ideal; emulator CPU {ms:.3f} ms/request; "
                  f"load average {load:.2f} (n={len(runs)})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
