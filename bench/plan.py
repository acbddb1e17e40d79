"""Benchmark: planning 100,000 people against 100,000 mailboxes with 1 % changes.

Part 1, "diff alone": builds deterministic inputs in memory (Chinese names, a three-level
department tree, stored links for every mailbox) and applies 1 % changes: name and position
updates, department moves, address changes, new hires without an address (generated from
pinyin), leavers, and one HR department rename. Then times ``planner.diff`` (best of
``--repeat`` runs) and measures its peak Python allocation with tracemalloc in a separate run
(tracemalloc slows the code, so it is not timed). Prints seconds, people/s, the action counts
and the peak memory.

Part 2, "command": the same inputs, per API generation: the emulator (served from this
process) is seeded with the mailboxes, a SQLite staging file gets the previous and the current
snapshot and a link per mailbox, then ``syncengine plan --out plan.json --json`` runs as a child
process, as an admin runs it. Prints its wall time, the split the command reports (reading
the state, the diff, the rest of ``service.make_plan``), its peak resident memory (``VmHWM``
of the child; see ``_run_child`` for why not ``ru_maxrss``), the API calls the emulator saw,
and the time to read the plan file back and render it as text and HTML. Gen 1 reads one
``user/get`` per member; ``--v1-people N`` runs it
on fewer people and prints a linear extrapolation, marked EXTRAPOLATED.

Further parts are appended to ``PARTS``.

The command part also measures, in the same run and as a child process too, the parse floor:
reading the HR CSV of the current snapshot with the csv module plus ``json.loads`` of the
state payloads the emulator returns for the read (Gen 2: ``department/list`` and
``user/list``), and prints the command's ratio to it and the load average. ``--reference-exe``
runs the same command with another interpreter (e.g. a venv of main's code) interleaved with
this one, ``--rounds`` times; medians are printed. ``--profile FILE`` runs the command once
more under cProfile and saves the stats.

    .venv/bin/python bench/plan.py [--people 100000] [--change-share 0.01] [--repeat 3]
        [--parts diff,command] [--apis v2,v1] [--v1-people N] [--read-concurrency 8]
        [--rounds 3] [--reference-exe PYTHON] [--profile FILE]
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncengine import render, service
from syncengine.config import parse_config
from syncengine.domain import (
    Department,
    Gender,
    IdentityLink,
    Mailbox,
    MailboxState,
    Party,
    Person,
    Status,
)
from syncengine.emulator.app import create_app
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.seed import (
    DEMO_CORP_ID,
    DEMO_PASSWORD,
    DEMO_SECRETS,
    DEMO_V1_SECRET,
    default_seed,
)
from syncengine.emulator.server import start_in_thread
from syncengine.plan import Plan
from syncengine.planner import Desired, diff
from syncengine.policy import Policy
from syncengine.staging.repository import StoredDepartment

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
SURNAMES = (
    "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董"
    + "袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红娥玲芬燕彬鹏辉健俊帅"
CENTERS = ["研发中心", "销售中心", "市场部", "运营中心", "财务部", "人力资源部", "法务部", "供应链"]
DEPTS = ["一部", "二部", "三部", "平台部", "数据部", "客户部"]
TEAMS = ["A组", "B组", "C组", "D组"]
TITLES = ["工程师", "高级工程师", "专员", "主管", "经理", "总监", "助理"]
DOMAIN = "example.com"


def department_tree() -> list[Department]:
    out = []
    for i, c in enumerate(CENTERS):
        out.append(Department(c, f"C{i}"))
        for j, d in enumerate(DEPTS):
            out.append(Department(f"{c}/{d}", f"C{i}D{j}"))
            for k, t in enumerate(TEAMS):
                out.append(Department(f"{c}/{d}/{t}", f"C{i}D{j}T{k}"))
    return out


def build_inputs(
    n: int, change_share: float
) -> tuple[Desired, MailboxState, dict[str, IdentityLink], Policy]:
    """``n`` people in sync with ``n`` mailboxes, then ``change_share`` of them changed."""
    tree = department_tree()
    leaves = [d.path for d in tree if d.path.count("/") == 2]
    people: list[Person] = []
    boxes: list[Mailbox] = []
    links: dict[str, IdentityLink] = {}
    for i in range(n):
        eid = f"E{i:07d}"
        name = (
            SURNAMES[i % len(SURNAMES)]
            + GIVEN[(i // 7) % len(GIVEN)]
            + GIVEN[(i // 3) % len(GIVEN)]
        )
        email = f"u{i}@{DOMAIN}"
        dept = leaves[i % len(leaves)]
        p = Person(
            employee_id=eid,
            name=name,
            email=email,
            departments=(dept,),
            position=TITLES[i % len(TITLES)],
            mobile=f"138{i:08d}",
            gender=Gender.MALE if i % 2 else Gender.FEMALE,
        )
        people.append(p)
        boxes.append(
            Mailbox(
                email=email,
                name=name,
                ext_id=eid,
                departments=(dept,),
                position=p.position,
                mobile=p.mobile,
                gender=p.gender,
            )
        )
        links[eid] = IdentityLink(eid, email, NOW - timedelta(days=365))

    changes = int(n * change_share)
    per = max(changes // 5, 1)
    step = max(n // max(changes, 1), 1)
    picks = iter(range(0, n, step))
    kinds: Counter[str] = Counter()
    for kind in ("rename", "move", "address", "leaver", "position"):
        for _ in range(per):
            i = next(picks, None)
            if i is None:
                break
            p = people[i]
            if kind == "rename":
                people[i] = replace(p, name=p.name + "新")
            elif kind == "move":
                people[i] = replace(p, departments=(leaves[(i + 1) % len(leaves)],))
            elif kind == "address":
                people[i] = replace(p, email=f"new.u{i}@{DOMAIN}")
            elif kind == "leaver":
                people[i] = replace(p, status=Status.TERMINATED)
            else:
                people[i] = replace(p, position="首席" + p.position)
            kinds[kind] += 1
    for j in range(per):  # new hires without an address: generated from pinyin
        name = SURNAMES[j % len(SURNAMES)] + GIVEN[j % len(GIVEN)]
        people.append(Person(f"N{j:07d}", name, departments=(leaves[j % len(leaves)],)))
        kinds["hire"] += 1
    # One department renamed in HR (same id): a move, members follow.
    renamed = [
        Department(d.path.replace("财务部", "财务中心", 1), d.hr_id)
        if d.path.startswith("财务部")
        else d
        for d in tree
    ]
    people = [
        replace(p, departments=tuple(x.replace("财务部", "财务中心", 1) for x in p.departments))
        if p.departments and p.departments[0].startswith("财务部")
        else p
        for p in people
    ]
    kinds["department rename"] = 1
    desired = Desired(
        people=tuple(people),
        departments=tuple(renamed),
        previous_size=n,
        previous_departments=tuple(tree),
    )
    state = MailboxState(tuple(boxes), tuple(Party(d.path) for d in tree), ())
    policy = Policy(domain=DOMAIN)
    print(f"inputs: {len(people):,} people, {len(boxes):,} mailboxes; changes: {dict(kinds)}")
    return desired, state, links, policy


def part_diff(args: argparse.Namespace) -> None:
    """Part 1: the pure diff alone."""
    print("== diff alone ==")
    t0 = time.perf_counter()
    desired, state, links, policy = build_inputs(args.people, args.change_share)
    print(f"building inputs: {time.perf_counter() - t0:.2f} s")
    best = best_cpu = float("inf")
    plan = None
    for _ in range(args.repeat):
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        plan = diff(desired, state, links, policy, NOW)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    assert plan is not None
    counts = {k: v for k, v in plan.summary.items() if v}
    print(
        f"diff: {best:.2f} s wall, {best_cpu:.2f} s CPU (best of {args.repeat}), "
        f"{args.people / best:,.0f} people/s"
    )
    print(f"plan: {counts}; blocked by: {[r.brake for r in plan.blocked_reasons] or 'nothing'}")
    t = time.perf_counter()
    text = plan.to_json()
    print(f"plan JSON: {len(text) / 1e6:.1f} MB in {time.perf_counter() - t:.2f} s")
    del plan, text
    gc.collect()
    tracemalloc.start()
    diff(desired, state, links, policy, NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"diff peak memory (tracemalloc, inputs excluded): {peak / 2**20:.1f} MiB")


PARTS: list[tuple[str, Callable[[argparse.Namespace], None]]] = [("diff", part_diff)]
"""Benchmark parts in the order they run; later parts append themselves here."""


# --- part 2: the whole `plan` command against the emulator --------------------------------

# The command runs as a child process (its own interpreter, as an admin runs it) against an
# emulator served from this process; the child reports its own peak resident memory.
_CHILD = """
import os, resource, sys
code = 0
profile = os.environ.get("BENCH_PLAN_PROFILE")
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
try:
    from syncengine.cli import main
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
if profile:
    prof.disable()
    prof.dump_stats(profile)
usage = resource.getrusage(resource.RUSAGE_SELF)
print("MAXRSS_KB", usage.ru_maxrss, file=sys.stderr)
print("CPU_S", usage.ru_utime + usage.ru_stime, file=sys.stderr)
with open("/proc/self/status", encoding="ascii") as status:
    print(*[ln for ln in status if ln.startswith("VmHWM:")][0].split()[:2], file=sys.stderr)
print("SYNCENGINE", sys.modules["syncengine"].__file__, file=sys.stderr)
sys.exit(code)
"""

# The parse floor: what any planner must at least do, in its own interpreter too: read the HR
# file with the csv module and json.loads the state payloads as the API returns them.
_FLOOR = """
import csv, json, resource, sys
with open(sys.argv[1], encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
payloads = [json.loads(open(p, "rb").read()) for p in sys.argv[2:]]
usage = resource.getrusage(resource.RUSAGE_SELF)
print("MAXRSS_KB", usage.ru_maxrss, file=sys.stderr)
print("CPU_S", usage.ru_utime + usage.ru_stime, file=sys.stderr)
with open("/proc/self/status", encoding="ascii") as status:
    print(*[ln for ln in status if ln.startswith("VmHWM:")][0].split()[:2], file=sys.stderr)
print(len(rows) - 1, sum(len(str(x)) > 0 for x in payloads))
"""

HR_HEADER = ["工号", "姓名", "邮箱", "别名", "部门编号", "部门", "职位", "手机", "电话", "性别",
             "状态", "入职日期", "离职日期"]  # fmt: skip


def _hr_csv(path: Path, desired: Desired) -> None:
    """The HR export that gives the current snapshot (the shape of samples/hr-export.csv)."""
    ids = {d.path: d.hr_id for d in desired.departments}
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(HR_HEADER)
        for p in desired.people:
            dept = p.departments[0] if p.departments else ""
            w.writerow([p.employee_id, p.name, p.email or "", ";".join(p.aliases),
                        ids.get(dept, ""), dept, p.position, p.mobile, p.tel,
                        "男" if p.gender == Gender.MALE else "女", p.status.value,
                        "2020-01-01", ""])  # fmt: skip


def _state_payloads(base_url: str, folder: Path) -> list[Path]:
    """The Gen 2 read's two answers (``department/list``, ``user/list`` of the root with
    ``fetch_child``) saved as the emulator sends them."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=300) as client:
        secret = {"corpid": DEMO_CORP_ID, "corpsecret": DEMO_SECRETS["contacts"]}
        token = client.get("/cgi-bin/gettoken", params=secret).json()["access_token"]
        out = []
        for name, params in (("department/list", {"id": 1}),
                             ("user/list", {"department_id": 1, "fetch_child": 1})):  # fmt: skip
            r = client.get(f"/cgi-bin/{name}", params={"access_token": token, **params})
            r.raise_for_status()
            path = folder / (name.replace("/", "-") + ".json")
            path.write_bytes(r.content)
            out.append(path)
    return out


CPU: dict[tuple[str, ...], list[float]] = {}
"""CPU seconds (user + system) each child command reported, by command: on a loaded machine
the wall time swings with the neighbours, the CPU time much less."""


def _run_child(cmd: list[str], timeout: float, cwd: Path, env: dict[str, str] | None = None
               ) -> tuple[subprocess.CompletedProcess[str], float, float | None]:  # fmt: skip
    """Run one child; its wall time and peak RSS (MiB, None when it did not report it).

    The peak is the child's ``VmHWM`` (high-water mark of its own address space), not its
    ``ru_maxrss``: subprocess starts children with vfork, and Linux carries the parent's
    high-water mark over the exec into the child's ``ru_maxrss`` (here: this process, with
    the emulator and 100,000 members in it), so ``ru_maxrss`` reads the same for every child.

    ``cwd`` must not be a checkout: ``python -c`` puts the working directory first on the
    path, so a child started in this repository would import its ``syncengine`` whatever
    interpreter (``--reference-exe``) runs it."""
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env, cwd=cwd)  # fmt: skip
    wall = time.perf_counter() - t
    lines = done.stderr.splitlines()
    rss = [ln for ln in lines if ln.startswith("VmHWM:")]
    CPU.setdefault(tuple(cmd), []).extend(
        float(ln.split()[1]) for ln in lines if ln.startswith("CPU_S")
    )
    return done, wall, (int(rss[-1].split()[1]) / 1024 if rss else None)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _emulator_seed(state: MailboxState) -> dict[str, Any]:
    seed = default_seed()
    seed["domains"] = [DOMAIN]
    seed["departments"] = [p.path for p in state.parties]
    seed["users"] = [
        {"userid": m.email, "name": m.name, "department": list(m.departments),
         "extid": m.ext_id, "slaves": list(m.aliases), "enable": 1 if m.enabled else 0,
         "position": m.position, "mobile": m.mobile, "tel": m.tel,
         "gender": str(int(m.gender)), "password": DEMO_PASSWORD}
        for m in state.mailboxes
    ]  # fmt: skip
    seed["groups"] = []
    return seed


def _staging(
    url: str, desired: Desired, state: MailboxState, links: dict[str, IdentityLink]
) -> None:
    """Two complete snapshots (the previous one as Exmail has it, the current one with the
    1 % changes) and a link per mailbox, written through the staging repository."""
    repo = service.open_staging(
        parse_config({"exmail": _exmail_table("v2", "http://x", 8), "database": {"url": url}})
    )
    try:

        def snapshot(people: Sequence[Person], departments: Sequence[Department]) -> None:
            run = repo.start_run("ingest", "bench")
            sid = repo.begin_snapshot(run, "bench")
            repo.add_people(sid, people)
            parent = {d.path: d.hr_id for d in departments}
            repo.add_departments(sid, (
                StoredDepartment(d, parent.get(d.path.rpartition("/")[0])) for d in departments
            ))  # fmt: skip
            repo.complete_snapshot(sid, {"people": len(people), "quarantined_ids": []})
            repo.finish_run(run, "succeeded", {"people": len(people)})

        before = [
            Person(m.ext_id, m.name, m.email, departments=m.departments, position=m.position,
                   mobile=m.mobile, gender=m.gender)
            for m in state.mailboxes
        ]  # fmt: skip
        snapshot(before, desired.previous_departments)
        snapshot(desired.people, desired.departments)
        repo.save_links(links.values())
    finally:
        repo.close()


def _exmail_table(api: str, base_url: str, concurrency: int) -> dict[str, Any]:
    common = {
        "api": api,
        "base_url": base_url,
        "read_concurrency": concurrency,
        "sso_url": base_url + "/cgi-bin/login",
        "timeout": 120,
        "domains": [DOMAIN],
    }
    if api == "v2":
        return {**common, "corp_id": DEMO_CORP_ID, "secrets": dict(DEMO_SECRETS)}
    return {**common, "client_id": f"admin@{DOMAIN}", "client_secret": DEMO_V1_SECRET}


def _toml(table: dict[str, Any], name: str) -> str:
    lines, subs = [f"[{name}]"], []
    for key, value in table.items():
        if isinstance(value, dict):
            subs.append(_toml(value, f"{name}.{key}"))
        else:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join([*lines, *subs]) + "\n"


def part_command(args: argparse.Namespace) -> None:
    """Part 2: ``syncengine plan --out plan.json --json`` as a child process, per generation."""
    print("== whole plan command against the emulator ==")
    for api in args.apis.split(","):
        n = args.people if api == "v2" or not args.v1_people else min(args.v1_people, args.people)
        print(f"-- {api}: {n:,} people against {n:,} mailboxes, "
              f"{args.change_share:.0%} changes --")  # fmt: skip
        desired, state, links, _ = build_inputs(n, args.change_share)
        with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
            folder = Path(tmp)
            url = f"sqlite:///{folder / 'staging.db'}"
            t = time.perf_counter()
            _staging(url, desired, state, links)
            print(f"staging: 2 snapshots + {len(links):,} links in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            app = create_app(api, _emulator_seed(state), EmulatorOptions())  # type: ignore[arg-type]
            server = start_in_thread(app)
            print(f"emulator ({api}) seeded with {len(state.mailboxes):,} members in "
                  f"{time.perf_counter() - t:.1f} s")  # fmt: skip
            try:
                config = folder / "syncengine.toml"
                config.write_text(
                    _toml(_exmail_table(api, server.base_url, args.read_concurrency), "exmail")
                    + _toml({"url": url}, "database")
                    + _toml({"domain": DOMAIN}, "addresses"),
                    encoding="utf-8",
                )
                out = folder / "plan.json"
                args_ = ["-c", _CHILD, "--config", str(config), "plan", "--out", str(out),
                         "--json"]  # fmt: skip
                hr = folder / "hr-export.csv"
                _hr_csv(hr, desired)
                floor_cmd = [sys.executable, "-c", _FLOOR, str(hr)]
                if api == "v2":
                    floor_cmd += [str(p) for p in _state_payloads(server.base_url, folder)]
                subjects = [("this", sys.executable)]
                if args.reference_exe:
                    subjects.append(("reference", args.reference_exe))
                walls: dict[str, list[float]] = {"floor": []}
                rsses: dict[str, list[float]] = {}
                done = None
                for r in range(args.rounds):
                    _, fwall, _ = _run_child(floor_cmd, args.timeout, folder)
                    walls["floor"].append(fwall)
                    for label, exe in subjects:
                        d, wall, rss = _run_child([exe, *args_], args.timeout, folder)
                        if d.returncode not in (0, 2, 3) or rss is None:
                            raise SystemExit(f"{api} {label}: plan failed (exit "
                                             f"{d.returncode}): {d.stderr[-2000:]}")  # fmt: skip
                        if r == 0:
                            code = [ln for ln in d.stderr.splitlines()
                                    if ln.startswith("SYNCENGINE")]  # fmt: skip
                            print(f"{api} {label}: {exe} runs {code[-1].split()[1]}")
                        walls.setdefault(label, []).append(wall)
                        rsses.setdefault(label, []).append(rss)
                        if label == "this":
                            done = d
                    print(f"{api} round {r + 1}: floor {fwall:.2f} s, "
                          + ", ".join(f"{k} {v[-1]:.2f} s / {rsses[k][-1]:.0f} MiB"
                                      for k, v in walls.items() if k != "floor")
                          + f"; load average {_load()}")  # fmt: skip
                if args.profile:
                    env = {**os.environ, "BENCH_PLAN_PROFILE": args.profile}
                    _run_child([sys.executable, *args_], args.timeout, folder, env)
                    print(f"{api}: cProfile stats of one more run saved to {args.profile}")
            finally:
                server.stop()
            assert done is not None
            floor = statistics.median(walls["floor"])
            floor_cpu = statistics.median(CPU[tuple(floor_cmd)])
            print(f"{api}: parse floor (csv.reader of the HR file + json.loads of the state "
                  f"payloads, in a child): {floor:.2f} s wall, {floor_cpu:.2f} s CPU, median "
                  f"of {args.rounds}")  # fmt: skip
            for label, exe in subjects:
                wall = statistics.median(walls[label])
                cpu = statistics.median(CPU[(exe, *args_)])
                print(f"{api} {label}: plan command {wall:.2f} s wall median of {args.rounds} = "
                      f"{wall / floor:.1f}x the parse floor; {cpu:.2f} s CPU = "
                      f"{cpu / floor_cpu:.1f}x the floor's CPU; peak RSS (VmHWM) "
                      f"{max(rsses[label]):.0f} MiB max; load average {_load()}")  # fmt: skip
            report = json.loads(done.stdout)
            calls = app.state.emulator.calls_since(0)["counts"]
            secs = report["seconds"]
            wall = statistics.median(walls["this"])
            runs = args.rounds * len(subjects) + (1 if args.profile else 0)
            print(f"{api}: plan exit {done.returncode} (last run of this code: "
                  f"service.make_plan {secs['total']:.1f} s, of which read_state "
                  f"{secs['read_state']:.1f} s and diff {secs['diff']:.1f} s, the rest loading "
                  f"staging and saving the plan; outside it: interpreter start-up, imports, "
                  f"writing the file)")  # fmt: skip
            print(
                f"{api}: {report['mailboxes_read']:,} mailboxes read with "
                f"{sum(calls.values()) / runs:,.0f} API calls a run; plan: "
                f"{ {k: v for k, v in report['summary'].items() if v} }; "
                f"blocked: {report['blocked']}; plan file {out.stat().st_size / 1e6:.1f} MB"
            )
            if n < args.people:
                per = secs["read_state"] / n
                print(
                    f"{api}: EXTRAPOLATED (linear in members, not measured): reading "
                    f"{args.people:,} members would take about {per * args.people:.0f} s, "
                    f"the whole command about "
                    f"{wall - secs['read_state'] + per * args.people:.0f} s"
                )
            t = time.perf_counter()
            plan = Plan.from_json(out.read_text(encoding="utf-8"))
            text = render.render_text(plan)
            html = render.render_html(plan)
            print(
                f"{api}: reading the plan file back + rendering text ({len(text) / 1e6:.1f} MB) "
                f"and HTML ({len(html) / 1e6:.1f} MB): {time.perf_counter() - t:.2f} s"
            )


PARTS.append(("command", part_command))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--change-share", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--apis", default="v2,v1", help="command part: generations to run")
    ap.add_argument("--v1-people", type=int, default=None,
                    help="command part: fewer people for Gen 1 (its read is one call per "
                    "member); the full size is then extrapolated and marked so")  # fmt: skip
    ap.add_argument("--read-concurrency", type=int, default=8)
    ap.add_argument("--group-depts", type=int, default=2000, help="groups part: departments")
    ap.add_argument(
        "--field-values",
        type=int,
        default=0,
        help="groups part: also one group per value of an HR label with this many "
        "distinct Chinese values, timed against the department groups alone",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="command part: per run, seconds")
    ap.add_argument("--rounds", type=int, default=3, help="command part: interleaved rounds")
    ap.add_argument("--reference-exe", default=None,
                    help="command part: a Python whose syncengine is the reference (e.g. "
                    "main's venv); run interleaved with this one")  # fmt: skip
    ap.add_argument("--profile", default=None, help="command part: save cProfile stats here")
    ap.add_argument(
        "--parts", default=",".join(n for n, _ in PARTS), help="comma-separated parts to run"
    )
    args = ap.parse_args()
    wanted = set(args.parts.split(","))
    for name, part in PARTS:
        if name in wanted:
            part(args)


# --- part 3: the mail-group part of a plan (issue 15) ---------------------------------------


def part_groups(args: argparse.Namespace) -> None:
    """Part 3: one mail group per department, ``--people`` people in ``--group-depts``
    departments. Times the pure diff (reference) and the group part of the plan (subject:
    ``groups.plan_groups`` + ``with_groups``, and loading the owned groups from a SQLite
    staging file), interleaved in the same run, ``--repeat`` times; prints medians, the
    group part's share of the diff and the load average. Two nights: 1 % changes, and a
    no-op night (zero group actions expected)."""
    import os
    import statistics

    from syncengine.groups import GroupRules, OwnedGroup, plan_groups, with_groups
    from syncengine.groups_field import FieldGroupRule
    from syncengine.staging import db as staging_db
    from syncengine.staging.repository import Repository

    print("== group part ==")
    n, ndepts = args.people, args.group_depts
    depts = [Department(f"中心{i // 50}/部门{i}", f"D{i}") for i in range(ndepts)]
    tree = [Department(f"中心{c}", f"C{c}") for c in range((ndepts + 49) // 50)] + depts
    people, boxes, links = [], [], {}
    nvalues = args.field_values
    for i in range(n):
        eid, email, dept = f"E{i:07d}", f"u{i}@{DOMAIN}", depts[i % ndepts].path
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i // 7) % len(GIVEN)]
        labels = (("site", f"园区{(i // 3) % nvalues}"),) if nvalues else ()
        people.append(Person(eid, name, email, departments=(dept,), labels=labels))
        boxes.append(Mailbox(email, name, ext_id=eid, departments=(dept,)))
        links[eid] = IdentityLink(eid, email, NOW - timedelta(days=365))
    state = MailboxState(tuple(boxes), tuple(Party(d.path) for d in tree), ())
    policy = Policy(domain=DOMAIN)
    dept_rules = GroupRules(template="dept-{code}@" + DOMAIN, keeper="admin@" + DOMAIN)
    site = FieldGroupRule("site", "site-{value}@" + DOMAIN)
    rules = replace(dept_rules, by_field=(site,)) if nvalues else dept_rules
    taken = {m.email for m in boxes}

    def desired_of(ps: list[Person]) -> Desired:
        return Desired(people=tuple(ps), departments=tuple(tree), previous_size=n,
                       previous_departments=tuple(tree))  # fmt: skip

    quiet = desired_of(people)
    base = diff(quiet, state, links, policy, NOW)
    made = plan_groups(rules, people=quiet.people, departments=quiet.departments, links=links,
                       owned=(), user_plan=base, taken=taken, today=NOW.date())  # fmt: skip
    owned = [OwnedGroup(a.group.key, a.group.address, a.group.name, a.group.members)
             for a in made.actions if a.group is not None]  # fmt: skip
    changed = list(people)
    step = max(int(1 / args.change_share), 1) + 1  # 101: spread over the departments
    for i in range(0, n, step):  # 1 %: every other one moves, the rest leave
        p = changed[i]
        if (i // step) % 2:
            changed[i] = Person(p.employee_id, p.name, p.email,
                                departments=(depts[(i + 1) % ndepts].path,))  # fmt: skip
        else:
            changed[i] = Person(p.employee_id, p.name, p.email, departments=p.departments,
                                status=Status.TERMINATED)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/staging.db"
        staging_db.upgrade(url)
        repo = Repository(staging_db.make_engine(url))
        for g in owned:
            repo.save_group(g)
        for label, desired in (("1 % changes", desired_of(changed)), ("no-op night", quiet)):
            ref, sub, load, alone = [], [], [], []
            plan = diff(desired, state, links, policy, NOW)
            gp = None
            for _ in range(args.repeat):
                gc.collect()
                t = time.perf_counter()
                plan = diff(desired, state, links, policy, NOW)
                ref.append(time.perf_counter() - t)
                gc.collect()
                t = time.perf_counter()
                loaded = repo.load_groups()
                load.append(time.perf_counter() - t)
                t = time.perf_counter()
                gp = plan_groups(rules, people=desired.people, departments=desired.departments,
                                 links=links, owned=loaded, user_plan=plan, taken=taken,
                                 today=NOW.date())  # fmt: skip
                with_groups(plan, gp)
                sub.append(time.perf_counter() - t)
                if nvalues:  # the department groups alone, interleaved
                    dept_owned = [g for g in loaded if g.key.startswith("dept:")]
                    gc.collect()
                    t = time.perf_counter()
                    dp = plan_groups(dept_rules, people=desired.people,
                                     departments=desired.departments, links=links,
                                     owned=dept_owned, user_plan=plan, taken=taken,
                                     today=NOW.date())  # fmt: skip
                    with_groups(plan, dp)
                    alone.append(time.perf_counter() - t)
            assert gp is not None
            kinds = Counter(a.kind.value for a in gp.actions)
            r, s, ld = (statistics.median(x) for x in (ref, sub, load))
            print(f"{label}: diff {r:.2f} s (median of {args.repeat}); group part {s:.3f} s "
                  f"+ loading {len(owned):,} owned groups {ld:.3f} s = "
                  f"{(s + ld) / r:.1%} of the diff; group actions {dict(kinds) or 'none'}, "
                  f"brakes {[b.brake for b in gp.blocked] or 'none'}")  # fmt: skip
            if nvalues:
                a = statistics.median(alone)
                print(
                    f"  with {nvalues} site groups: {s:.3f} s against the department groups "
                    f"alone {a:.3f} s (+{s - a:.3f} s, {(s - a) / r:.1%} of the diff)"
                )
        repo.close()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


PARTS.append(("groups", part_groups))

if __name__ == "__main__":
    main()
