"""Benchmark: how long the whole ``syncengine`` command takes to start and answer.

Each command runs as a subprocess, the way a user's shell or cron starts it (interpreter
start and imports included), repeated and interleaved with the reference ``python -c pass``
so that the machine's load hits all of them alike. Printed per command: the median and the
minimum wall time, the ratio of the median to the reference's, the median CPU time (user +
system: what the load of a shared machine inflates least), the issue's target, and the load
average beside them.

- ``--help``: the group's help (click only).
- ``audit --limit 1``: a real query on a migrated SQLite staging database (config from
  ``samples/``, migrated once before the timing by ``db upgrade``).

``--before PATH`` times another installation's ``syncengine`` executable in the same rounds
(for example a checkout of an older commit), so that a before/after pair comes from one run.

    .venv/bin/python bench/startup.py [--repeat 15] [--before /path/to/old/.venv/bin/syncengine]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNCENGINE = Path(sys.executable).parent / "syncengine"
TARGETS = {"--help": 0.3, "audit --limit 1": 0.6}
"""Issue 14's wall-time targets on the 2-core development machine, in seconds."""


CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["SYNCENGINE_CONFIG"] = ""
"""No config from the caller's environment, and byte-code caching on: an installed package
has its ``.pyc`` files, and a shell with PYTHONDONTWRITEBYTECODE=1 would time a compile of the
whole package on every run."""


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=CHILD_ENV)  # fmt: skip
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def prepare(folder: Path, executable: Path) -> None:
    """A config folder from samples/ whose database is at the code's head."""
    for name in ("syncengine.toml", "hr-export.csv", "departments.csv"):
        shutil.copy(REPO / "samples" / name, folder / name)
    timed([str(executable), "--config", "syncengine.toml", "db", "upgrade"], folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15, help="rounds (each runs every command once)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another syncengine executable to time in the same rounds")  # fmt: skip
    args = ap.parse_args()

    subjects: dict[str, Path] = {"now": SYNCENGINE}
    if args.before is not None:
        subjects["before"] = args.before
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        root = Path(tmp)
        reference = [sys.executable, "-c", "pass"]
        commands: dict[str, tuple[list[str], Path]] = {"python -c pass": (reference, root)}
        for label, exe in subjects.items():
            folder = root / label
            folder.mkdir()
            prepare(folder, exe)
            suffix = "" if label == "now" else f" [{label}]"
            commands[f"--help{suffix}"] = ([str(exe), "--help"], folder)
            commands[f"audit --limit 1{suffix}"] = (
                [str(exe), "--config", "syncengine.toml", "audit", "--limit", "1"],
                folder,
            )
        for argv, cwd in commands.values():  # warm the file cache once, untimed
            timed(argv, cwd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for name, (argv, cwd) in commands.items():
                wall, cpu = timed(argv, cwd)
                times[name].append(wall)
                cpus[name].append(cpu)
        load_after = os.getloadavg()

    floor = statistics.median(times["python -c pass"])
    print(f"syncengine start-up, {args.repeat} interleaved rounds, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after")  # fmt: skip
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'x pass':>7} {'cpu s':>7} "
          f"{'target s':>9}  verdict (wall median; cpu: median user+sys)")  # fmt: skip
    for name, samples in times.items():
        median, fastest = statistics.median(samples), min(samples)
        base = name.split(" [")[0]
        target = TARGETS.get(base)
        verdict = "" if target is None or "[" in name else ("ok" if median <= target else "OVER")
        cpu = statistics.median(cpus[name])
        print(f"{name:<28} {median:>9.3f} {fastest:>7.3f} {median / floor:>7.1f} {cpu:>7.3f} "
              f"{'' if target is None else f'{target:.1f}':>9}  {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
