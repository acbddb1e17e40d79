"""Benchmark: ingest a 100,000-person HR export into SQLite and into PostgreSQL.

Generates a deterministic CSV (Chinese names, a three-level department tree, mobiles, dates,
a few leavers) in a temp folder, then, for each backend, runs ``syncengine.service.ingest``
in a child process twice: the first ingest into an empty staging database, then a second
over the same file (the re-ingest a nightly run does when HR changed nothing: everything is
read, mapped, stored and compared with the previous snapshot). Prints seconds, rows/s and the
child's peak resident memory (``ru_maxrss``), next to its resident memory before the ingest.

PostgreSQL: ``SYNCENGINE_BENCH_POSTGRES_URL`` (a server URL whose user may CREATE DATABASE)
if set; otherwise a throwaway cluster is started from Debian's binaries on a free loopback
port (as the ``postgres`` user when run as root) and removed afterwards.

    .venv/bin/python bench/ingest.py [--people 100000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import json
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SURNAMES = (
    "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董"
    + "袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉健俊帅"
CENTERS = ["研发中心", "销售中心", "市场部", "运营中心", "财务部", "人力资源部", "法务部", "供应链"]
DEPTS = ["一部", "二部", "三部", "平台部", "数据部", "客户部"]
TEAMS = ["A组", "B组", "C组", "D组"]
TITLES = ["工程师", "高级工程师", "专员", "主管", "经理", "总监", "助理"]
HEADER = ["工号", "姓名", "邮箱", "部门", "职位", "手机", "性别", "状态", "入职日期", "离职日期"]

CONFIG = """\
[exmail]
api = "v2"
base_url = "http://127.0.0.1:9"
corp_id = "wwbench"
domains = ["example.com"]

[exmail.secrets]
contacts = "bench-not-used"

[database]
url = {url}

[source]
type = "csv"
path = {csv}
encoding = "utf-8"

[mapping]
employee_id = "工号"
name = "姓名"
email = {{ field = "邮箱", case = "lower" }}
departments = {{ field = "部门", split = ";" }}
position = "职位"
mobile = "手机"
gender = "性别"
status = "状态"
start_date = "入职日期"
end_date = "离职日期"
"""


def generate_csv(path: Path, people: int) -> None:
    """The HR export: deterministic, so every run measures the same work."""
    start = dt.date(2010, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in range(people):
            surname = SURNAMES[i % len(SURNAMES)]
            given = GIVEN[(i * 7) % len(GIVEN)] + (GIVEN[(i * 13) % len(GIVEN)] if i % 3 else "")
            center = CENTERS[i % len(CENTERS)]
            dept = f"{center}/{DEPTS[(i // 8) % len(DEPTS)]}/{TEAMS[(i // 48) % len(TEAMS)]}"
            if i % 97 == 0:
                dept += f";{CENTERS[(i + 1) % len(CENTERS)]}/{DEPTS[0]}"
            leaver = i % 20 == 7
            hired = start + dt.timedelta(days=(i * 37) % 5000)
            out.writerow(
                [
                    f"E{100000 + i}",
                    surname + given,
                    f"e{100000 + i}@example.com",
                    dept,
                    TITLES[i % len(TITLES)],
                    f"1{3 + i % 7}{i:09d}",
                    "男" if i % 2 else "女",
                    "离职" if leaver else "在职",
                    hired.isoformat(),
                    (hired + dt.timedelta(days=900)).isoformat() if leaver else "",
                ]
            )


def toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- PostgreSQL ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """An admin URL (database ``postgres``) of a server we may create databases on."""
    external = os.environ.get("SYNCENGINE_BENCH_POSTGRES_URL")
    if external:
        yield external
        return
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit(
            "PostgreSQL binaries not found: apt-get install postgresql, "
            "or set SYNCENGINE_BENCH_POSTGRES_URL"
        )
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="syncengine-bench-pg-"))
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
    data = root / "data"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c shared_buffers=128MB"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database or "postgres",
    }
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


# --- one backend, in a child process ------------------------------------------------------


def rss_kib() -> int:
    """Current resident memory of this process (Linux /proc), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(config_path: str) -> None:
    from syncengine import service
    from syncengine.config import load_config

    config = load_config(config_path)
    service.db_upgrade(config)
    before = rss_kib()
    runs = []
    for label in ("first", "again"):
        started = time.perf_counter()
        with service.Engine(config) as engine:
            report = service.ingest(engine, actor="bench")
        seconds = time.perf_counter() - started
        runs.append(
            {"label": label, "seconds": seconds, "rows": report.rows, "counts": report.counts}
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"runs": runs, "rss_before_kib": before, "peak_rss_kib": peak}))


def run_backend(name: str, url: str, csv_path: Path, folder: Path) -> None:
    config = folder / f"{name}.toml"
    config.write_text(
        CONFIG.format(url=toml_string(url), csv=toml_string(str(csv_path))), encoding="utf-8"
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(config)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        print(f"{name}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}")
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in result["runs"]:
        c = run["counts"]
        what = "into an empty database" if run["label"] == "first" else "again, unchanged file"
        print(
            f"{name:10s} ingest {what:22s}: {run['rows']:,} rows in {run['seconds']:.2f} s = "
            f"{run['rows'] / run['seconds']:,.0f} rows/s  (people {c['people']:,}, "
            f"departments {c['departments']}, new {c['new']:,}, changed {c['changed']}, "
            f"gone {c['gone']}, quarantined {c['quarantined']})"
        )
    print(
        f"{name:10s} peak memory (ru_maxrss of the child): {result['peak_rss_kib'] / 1024:,.0f} MiB"
        f" (resident before the first ingest: {result['rss_before_kib'] / 1024:,.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="syncengine-bench-ingest-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "hr-export.csv"
        started = time.perf_counter()
        generate_csv(csv_path, args.people)
        size = csv_path.stat().st_size
        print(
            f"generated {args.people:,} people ({size / 1e6:.1f} MB CSV) in "
            f"{time.perf_counter() - started:.2f} s"
        )
        if "sqlite" in backends:
            run_backend("sqlite", f"sqlite:///{folder / 'staging.db'}", csv_path, folder)
        if "postgresql" in backends:
            with postgres_server() as admin, postgres_database(admin) as url:
                run_backend("postgresql", url, csv_path, folder)


if __name__ == "__main__":
    main()
