"""Benchmark: the Gen 1 directory read as a user meets it, against the server's ceiling.

The emulator runs in its own process (``syncengine emulator --api v1``, 10,000 members in 200
departments by default); the engine runs as the real command, ``syncengine plan --json``, in a
subprocess (interpreter start and imports included) with ``rate_per_second = 0`` (the pace is
the user's choice; every request still goes through the pacer and reads are retried).

The ceiling is the server's for the same work: in the same run, interleaved and repeated, a
raw-socket client (pre-built requests, no HTTP library) replays the read's own call mix with
the engine's request bytes (POST forms with the same headers: ``user/list`` Ver=0, the
``party/list`` walk level by level, one ``user/get`` per member; each phase done before the
next, as the engine does) over ``read_concurrency`` keep-alive connections (the engine's), and
over one for comparison. (The old reference repeated a GET ``user/get`` of one member on one
connection: not the requests the engine sends.)

Printed per run: the ceiling and the emulator's CPU per request under it; for the full read
(``[exmail] full_read_days = 0``) the calls the emulator logged, the plan's own
``read_state`` seconds, calls/s and the ratio to the ceiling, the command's wall and CPU
seconds and the emulator's CPU per request; for the quiet night after it (incremental, from
the stored ``user/list`` cursor and the stored department tree) its calls next to the full
read's; with ``--reference-exe`` another installation's full read and quiet night (e.g.
main's) in the same runs; the medians, and the load average throughout.

    .venv/bin/python bench/read_state.py [--users 10000] [--departments 200] [--repeat 3]
        [--connections N] [--reference-exe PATH/TO/syncengine]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from syncengine.emulator.seed import DEMO_V1_SECRET, big_seed
from syncengine.providers.config import ExmailConfig

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


def cli(config: Path, *args: str, exe: Path = BIN) -> dict[str, Any]:
    done = subprocess.run(
        [str(exe), "--config", str(config), *args], capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 2, 3):
        raise SystemExit(f"syncengine {' '.join(args)} exited {done.returncode}: {done.stderr}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


READS = {"/cgi-bin/token", "/openapi/user/list", "/openapi/party/list",
         "/openapi/partyuser/list", "/openapi/user/get"}  # fmt: skip
"""The calls of the directory read (plan also checks new addresses with user/check)."""


def clear_calls(base: str) -> None:
    """Empty the emulator's call log (it keeps the last 200,000 calls: a count over it would
    go wrong after a few runs, and listing it all costs the emulator seconds)."""
    httpx.post(base + "/_emulator/calls/clear", timeout=30).raise_for_status()


def call_count(base: str) -> int:
    calls = httpx.get(base + "/_emulator/calls", params={"since": 0}, timeout=60).json()
    return int(sum(n for endpoint, n in calls["counts"].items() if endpoint in READS))


def cpu_of(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Read:
    """One ``plan --json``: the read's calls and seconds, the command's wall and CPU seconds,
    and the emulator's CPU seconds meanwhile."""

    calls: int
    read: float
    wall: float
    cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.calls / self.read


def plan_read(config: Path, base: str, emulator: int, exe: Path = BIN) -> Read:
    clear_calls(base)
    cpu, server = children_cpu(), cpu_of(emulator)
    started = time.perf_counter()
    out = cli(config, "plan", "--json", exe=exe)
    wall = time.perf_counter() - started
    cpu, server = children_cpu() - cpu, cpu_of(emulator) - server
    calls = call_count(base)
    return Read(calls, float(out["seconds"]["read_state"]), wall, cpu, server)


def read_mix(seed: dict[str, Any]) -> list[list[tuple[str, dict[str, str]]]]:
    """The calls of a Gen 1 full read, phase by phase as the engine sends them: ``user/list``
    Ver=0, ``party/list`` level by level (root first), one ``user/get`` per member."""
    paths = [str(p) for p in seed["departments"]]
    levels: dict[int, list[str]] = {}
    for path in paths:
        levels.setdefault(path.count("/") + 1, []).append(path)
    phases: list[list[tuple[str, dict[str, str]]]] = [[("user/list", {"Ver": "0"})]]
    phases.append([("party/list", {"PartyPath": ""})])
    for depth in sorted(levels):
        phases.append([("party/list", {"PartyPath": p}) for p in levels[depth]])
    phases.append([("user/get", {"Alias": str(u["userid"])}) for u in seed["users"]])
    return phases


def token_of(base: str) -> str:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": DEMO_V1_SECRET}  # fmt: skip
    token: str = httpx.post(base + "/cgi-bin/token", data=form).json()["access_token"]
    return token


def _request(host: str, call: str, form: dict[str, str], token: str) -> bytes:
    """The bytes of one form POST with the headers the engine sends (httpx's defaults, its
    User-Agent, the Bearer token): the server parses the same request either way."""
    body = urlencode(form).encode()
    return (
        f"POST /openapi/{call} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n"
        f"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
        f"User-Agent: syncengine\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode() + body


class _Conn:
    """One keep-alive connection of the raw-socket client: one request in flight at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""

    def answered(self) -> bool:
        """Read what arrived; True once the whole answer to the request in flight is in."""
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        if not chunk:
            raise SystemExit("the emulator closed a keep-alive connection")
        self.buffer += chunk
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return False
        match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
        if not head.startswith(b"HTTP/1.1 200") or match is None:
            raise SystemExit(f"unexpected answer: {head[:80]!r}")
        size = int(match.group(1))
        if len(rest) < size:
            return False
        self.buffer = rest[size:]
        return True


def socket_ceiling(base: str, phases: list[list[bytes]], connections: int) -> float:
    """Requests/s the emulator serves for ``phases`` (pre-built requests, each phase finished
    before the next starts) over ``connections`` keep-alive connections of a raw-socket client
    (no HTTP library: the cost on the client side is as near nothing as Python gets)."""
    host, port = base.removeprefix("http://").split(":")
    conns = [_Conn(host, int(port)) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    total = sum(len(p) for p in phases)
    started = time.perf_counter()
    try:
        for phase in phases:
            queue = iter(phase)
            busy = 0
            for conn in conns:
                request = next(queue, None)
                if request is None:
                    break
                conn.sock.sendall(request)
                busy += 1
            while busy:
                for key, _ in selector.select(timeout=30):
                    conn = key.data
                    if conn.answered():
                        request = next(queue, None)
                        if request is None:
                            busy -= 1
                        else:
                            conn.sock.sendall(request)
    finally:
        for conn in conns:
            selector.unregister(conn.sock)
            conn.sock.close()
        selector.close()
    return total / (time.perf_counter() - started)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--connections",
        type=int,
        default=ExmailConfig.model_fields["read_concurrency"].default,
        help="connections of the raw-socket ceiling (default: the engine's read_concurrency)",
    )
    parser.add_argument(
        "--reference-exe",
        type=Path,
        default=None,
        help="another installation's syncengine (e.g. main's): its full read in the same runs",
    )
    args = parser.parse_args()
    seed = big_seed(args.users, args.departments)
    print(f"machine: {os.cpu_count()} CPUs; load average {load()}; "
          f"{args.users} members, {args.departments} departments")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "full").mkdir()
        (root / "incremental").mkdir()
        (root / "reference").mkdir()
        (root / "reference-quiet").mkdir()
        emulator, base = start_emulator(root, seed)
        try:
            full = write_folder(root / "full", seed, base, 0)
            incremental = write_folder(root / "incremental", seed, base, 7)
            reference = write_folder(root / "reference", seed, base, 0)
            reference_quiet = write_folder(root / "reference-quiet", seed, base, 7)
            for config in (full, incremental):
                cli(config, "ingest", "--json")
            if args.reference_exe:
                for config in (reference, reference_quiet):
                    cli(config, "ingest", "--json", exe=args.reference_exe)
                cli(reference_quiet, "plan", "--json", exe=args.reference_exe)  # its cursor
            cli(incremental, "plan", "--json")  # the first read is a full one: the cursor
            token = token_of(base)
            host = base.removeprefix("http://")
            phases = [[_request(host, c, f, token) for c, f in phase] for phase in read_mix(seed)]
            socket_ceiling(base, phases[-1:], args.connections)  # warm-up
            rows: dict[str, list[float]] = {}

            def note(key: str, value: float) -> None:
                rows.setdefault(key, []).append(value)

            for n in range(args.repeat):
                server = cpu_of(emulator.pid)
                ceiling = socket_ceiling(base, phases, args.connections)
                ceiling_cpu = (cpu_of(emulator.pid) - server) / sum(map(len, phases))
                subject = plan_read(full, base, emulator.pid)
                single = socket_ceiling(base, phases, 1)
                quiet = plan_read(incremental, base, emulator.pid)
                note("ceiling", ceiling)
                note("single", single)
                note("rate", subject.rate)
                note("ratio", subject.rate / ceiling)
                note("wall", subject.wall)
                note("quiet", quiet.calls)
                note("quiet wall", quiet.wall)
                note("quiet share", quiet.calls / subject.calls)
                print(f"run {n + 1}: ceiling {ceiling:,.0f} req/s over {args.connections} "
                      f"connections ({single:,.0f} over one), the read's call mix, emulator "
                      f"{ceiling_cpu * 1e6:,.0f} us CPU/request; full read {subject.calls} calls "
                      f"in {subject.read:.2f} s = {subject.rate:,.0f} calls/s = "
                      f"{subject.rate / ceiling:.0%} of the ceiling (plan command "
                      f"{subject.wall:.2f} s, {subject.cpu:.2f} s CPU; emulator "
                      f"{subject.server_cpu / subject.calls * 1e6:,.0f} us CPU/request); quiet "
                      f"night {quiet.calls} calls = {quiet.calls / subject.calls:.1%} of the full "
                      f"read's (plan command {quiet.wall:.2f} s); load {load()}")  # fmt: skip
                if args.reference_exe:
                    ref = plan_read(reference, base, emulator.pid, exe=args.reference_exe)
                    ref_quiet = plan_read(reference_quiet, base, emulator.pid,
                                          exe=args.reference_exe)  # fmt: skip
                    note("ref rate", ref.rate)
                    note("ref ratio", ref.rate / ceiling)
                    note("ref wall", ref.wall)
                    note("ref quiet", ref_quiet.calls)
                    note("ref quiet wall", ref_quiet.wall)
                    print(f"       reference {args.reference_exe}: full read {ref.calls} calls "
                          f"in {ref.read:.2f} s = {ref.rate:,.0f} calls/s = "
                          f"{ref.rate / ceiling:.0%} of the ceiling (plan command {ref.wall:.2f} "
                          f"s, {ref.cpu:.2f} s CPU); quiet night {ref_quiet.calls} calls (plan "
                          f"command {ref_quiet.wall:.2f} s); load {load()}")  # fmt: skip
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    med = {key: statistics.median(values) for key, values in rows.items()}
    print(f"median: ceiling {med['ceiling']:,.0f} req/s over {args.connections} connections "
          f"({med['single']:,.0f} over one); full read {med['rate']:,.0f} calls/s = "
          f"{med['ratio']:.0%} of the ceiling (target 80%); plan command {med['wall']:.2f} s; "
          f"quiet night {med['quiet']:.0f} calls = {med['quiet share']:.1%} of the full "
          f"read's (target < 50 calls), plan command {med['quiet wall']:.2f} s; "
          f"load average {load()}")  # fmt: skip
    if args.reference_exe:
        print(
            f"median reference: full read {med['ref rate']:,.0f} calls/s = "
            f"{med['ref ratio']:.0%} of the ceiling; plan command {med['ref wall']:.2f} s; "
            f"quiet night {med['ref quiet']:.0f} calls, plan command "
            f"{med['ref quiet wall']:.2f} s"
        )


if __name__ == "__main__":
    main()
