"""Benchmark: the nightly ``syncengine sync`` of a 10,000-person company when nothing changed.

Measured the way cron meets it: the whole ``syncengine sync`` command as a subprocess
(interpreter start and imports included), default settings, Gen 2, the emulator in its own
process (``syncengine emulator --control``) seeded with 10,000 mailboxes that already match
the HR export. Each config folder is migrated and adopted (a first ``sync``: link records
only, no Exmail write), then has one quiet night, before the timing: the timed nights are
quiet nights after a quiet night (which this version proves unchanged without a diff, see
``syncengine/service/noop_proof.py``; the script says so at the end). Then, per latency
(0 ms and 20 ms added to every call by default), rounds interleave:

- ``diy``: bench/diy_sync.py, the reference: sequential, a new connection per request,
  gettoken, then ``user/get`` + a blind ``user/update`` for every HR row;
- ``syncengine``: this installation's ``syncengine sync``;
- ``before`` (with ``--before EXE``): another installation's ``syncengine`` (e.g. main's);
- ``python -c pass``: the interpreter's start alone;
- ``import floor``: this interpreter importing what any ``sync`` must import
  (:data:`FLOOR_IMPORTS`: click, SQLAlchemy core and ORM with the staging models, the libcurl
  transport with httpx, tomllib) and doing nothing: no ``sync`` can take less;
- ``floor, no gc``: the same with the cyclic collector paused during the imports, as
  ``syncengine.importing.loading`` pauses it for syncengine's own lazy imports.

Printed per subject: the median and minimum wall seconds, the median CPU seconds (user +
system of the child), the API calls and write calls the emulator saw, the ratio of the
DIY's median to the subject's, and the load average. A no-op night must make 0 writes. The
floor's ratio is the most any ``sync`` on this stack could reach against the same DIY run.

    .venv/bin/python bench/sync_noop.py [--people 10000] [--departments 200]
        [--latency-ms 0,20] [--repeat 3] [--before /path/to/main/.venv/bin/syncengine]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from syncengine.emulator.seed import DEMO_CORP_ID, DEMO_SECRETS, big_seed

HERE = Path(__file__).resolve().parent
SYNCENGINE = Path(sys.executable).parent / "syncengine"
WRITES = {
    "department/create", "department/update", "department/delete", "user/create",
    "user/update", "user/delete", "user/swapalias", "party/sync", "user/sync",
}  # fmt: skip
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["SYNCENGINE_CONFIG"] = ""
"""The children's environment: no config from the caller's, and byte-code caching on (an
installed package has its ``.pyc`` files; a shell with PYTHONDONTWRITEBYTECODE=1 would make
every subject compile its sources on every run, ~0.15 s that no user pays)."""
FLOOR_IMPORTS = (
    "click",
    "tomllib",
    "sqlalchemy",
    "sqlalchemy.orm",
    "syncengine.staging.models",
    "syncengine.providers.curl_transport",
)
"""What every ``sync`` imports before it can do anything: the CLI, the config's TOML, the
staging database's layer and models, the Gen 2 transport (libcurl, with httpx's types)."""
TARGET_RATIO = 20.0
"""Issue 14: the no-op night at 0 ms latency at least 20x the sequential DIY script."""


def write_hr(path: Path, seed: dict[str, Any]) -> None:
    """The HR export that matches the seeded directory exactly."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["employee_id", "name", "email", "departments", "position", "gender",
                    "status"])  # fmt: skip
        for u in seed["users"]:
            w.writerow([u["extid"], u["name"], u["userid"], u["department"][0], u["position"],
                        "男" if u["gender"] == "1" else "女", "在职"])  # fmt: skip


def config_text(base_url: str) -> str:
    """A config with default settings apart from where things are (Gen 2, no mail)."""
    secrets = ", ".join(f'{k} = "{v}"' for k, v in DEMO_SECRETS.items())
    return f"""\
[exmail]
api = "v2"
base_url = "{base_url}"
sso_url = "{base_url}/cgi-bin/login"
corp_id = "{DEMO_CORP_ID}"
secrets = {{ {secrets} }}
domains = ["example.com"]

[database]
url = "sqlite:///staging.db"

[source]
type = "csv"
path = "hr.csv"

[mapping]
employee_id = "employee_id"
name = "name"
email = "email"
departments = "departments"
position = "position"
gender = "gender"
status = "status"

[passwords]
delivery = "none"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """``syncengine emulator`` in its own process, steered through its control API."""

    def __init__(self, seed_file: Path) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(SYNCENGINE), "emulator", "--api", "v2", "--seed", str(seed_file),
             "--port", str(port), "--control"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.base_url, timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get("/_emulator/faults")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the emulator did not start") from None
                time.sleep(0.2)

    def latency(self, ms: float) -> None:
        self.http.post("/_emulator/faults", json={"latency_ms": ms}).raise_for_status()

    def take_calls(self) -> tuple[int, int]:
        """API calls and write calls since the last take; the log starts over."""
        counts: dict[str, int] = self.http.get("/_emulator/calls").json()["counts"]
        self.http.post("/_emulator/calls/clear").raise_for_status()
        writes = sum(n for name, n in counts.items() if name.split("/", 2)[-1] in WRITES)
        return sum(counts.values()), writes

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)


def timed(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=CHILD_ENV)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n"
                         f"{done.stderr}")  # fmt: skip
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--latency-ms", default="0,20", help="comma-separated list")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another installation's syncengine")
    parser.add_argument("--no-diy", action="store_true", help="leave the DIY script out")
    args = parser.parse_args()
    seed = big_seed(args.people, args.departments)
    exes = {"syncengine": SYNCENGINE}
    if args.before is not None:
        exes["before"] = args.before.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "seed.json").write_text(json.dumps(seed, ensure_ascii=False), encoding="utf-8")
        write_hr(root / "hr.csv", seed)
        emulator = Emulator(root / "seed.json")
        try:
            folders: dict[str, Path] = {}
            for label, exe in exes.items():
                folder = folders[label] = root / label
                folder.mkdir()
                (folder / "hr.csv").write_bytes((root / "hr.csv").read_bytes())
                (folder / "syncengine.toml").write_text(config_text(emulator.base_url))
                timed([str(exe), "db", "upgrade"], folder)
                timed([str(exe), "sync"], folder)  # adopts the mailboxes: link records only
                timed([str(exe), "sync"], folder)  # the first quiet night (plans in full)
            emulator.take_calls()
            argv = {label: [str(exe), "sync"] for label, exe in exes.items()}
            argv["python -c pass"] = [sys.executable, "-c", "pass"]
            argv["import floor"] = [sys.executable, "-c", f"import {', '.join(FLOOR_IMPORTS)}"]
            argv["floor, no gc"] = [sys.executable, "-c", "import gc; gc.disable(); "
                                    f"import {', '.join(FLOOR_IMPORTS)}"]  # fmt: skip
            if not args.no_diy:
                argv["diy"] = [sys.executable, str(HERE / "diy_sync.py"), str(root / "hr.csv"),
                               "--base-url", emulator.base_url, "--corp-id", DEMO_CORP_ID,
                               "--secret", DEMO_SECRETS["contacts"]]  # fmt: skip
            for latency in (float(x) for x in args.latency_ms.split(",")):
                emulator.latency(latency)
                runs: dict[str, list[tuple[float, float, int, int]]] = {k: [] for k in argv}
                for _ in range(args.repeat):
                    for label, command in argv.items():
                        seconds, cpu, _out = timed(command, folders.get(label, root))
                        calls, writes = emulator.take_calls()
                        runs[label].append((seconds, cpu, calls, writes))
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                print(f"\n{args.people:,} people, Gen 2, latency {latency:g} ms/call, "
                      f"{args.repeat} interleaved rounds, load average {load}")  # fmt: skip
                diy = statistics.median(r[0] for r in runs["diy"]) if "diy" in runs else None
                for label, got in runs.items():
                    wall = statistics.median(r[0] for r in got)
                    line = (f"  {label:<14} median {wall:6.2f} s  min "
                            f"{min(r[0] for r in got):6.2f} s  cpu "
                            f"{statistics.median(r[1] for r in got):5.2f} s  "
                            f"{got[-1][2]:>6,} API calls  {got[-1][3]:>6,} writes")  # fmt: skip
                    if diy is not None and label != "diy":
                        line += f"  {diy / wall:5.1f}x the DIY script"
                        if latency == 0 and label in exes:
                            line += f" (target >= {TARGET_RATIO:g}x)"
                    print(line, flush=True)
                if diy is not None and latency == 0:
                    floor = statistics.median(r[0] for r in runs["import floor"])
                    bare = statistics.median(r[0] for r in runs["floor, no gc"])
                    print(f"  the target ({TARGET_RATIO:g}x) is {diy / TARGET_RATIO:.2f} s for the "
                          f"whole command; the import floor alone is {floor:.2f} s "
                          f"({diy / floor:.1f}x), {bare:.2f} s without the collector "
                          f"({diy / bare:.1f}x)")  # fmt: skip
            for label, exe in exes.items():  # how the subjects' quiet nights were made
                _s, _c, out = timed([str(exe), "sync", "--json"], folders[label])
                proved = json.loads(out).get("plan", {}).get("proved_unchanged")
                print(
                    f"  {label}: a quiet night after a quiet night is "
                    f"{'proved unchanged (no diff)' if proved else 'planned in full'}"
                )
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
