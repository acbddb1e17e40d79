"""The README's first command: the whole product once on built-in defaults."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from syncengine import emulator as exmail_emulator
from syncengine.config import load_config
from syncengine.errors import (
    ConfigError,
    StagingError,
)
from syncengine.plan import GROUP_KINDS, ActionKind
from syncengine.service.applying import ApplyOutcome, apply_plan
from syncengine.service.audit import query_audit
from syncengine.service.engine import Engine
from syncengine.service.ingest import IngestReport, ingest
from syncengine.service.nightly import SyncProgress
from syncengine.service.planning import PlanResult, make_plan
from syncengine.staging.repository import (
    AuditEntry,
)

log = logging.getLogger(__name__)

# --- demo: the README's first command (issue 5) --------------------------------------------

DEMO_MARKER = ".syncengine-demo"
"""A file that marks a folder as the demo's own, so a re-run may wipe it (and nothing else)."""
DEMO_FILES = ("hr-export.csv", "departments.csv")
DEMO_ACTOR = "demo"


@dataclass(frozen=True)
class DemoChange:
    """One edit the demo makes to its copy of the HR export before the second run."""

    kind: str  # hire | move | leaver | rename
    employee_id: str
    name: str
    detail: str


@dataclass(frozen=True)
class DemoRound:
    """One ingest + plan + apply of the demo."""

    ingest: IngestReport
    plan: PlanResult
    outcome: ApplyOutcome | None


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo did, for the CLI to show."""

    folder: Path
    config_path: Path
    base_url: str
    api: str
    seed_mailboxes: int
    first: DemoRound
    audit: tuple[AuditEntry, ...]
    changes: tuple[DemoChange, ...]
    second: DemoRound
    mailboxes: int
    departments: int
    seconds: float
    groups_created: tuple[str, ...] = ()
    """The mail groups the first run created ("address (name, N members)")."""
    groups_followed: tuple[str, ...] = ()
    """How the second run's group changes follow the HR changes, one line per group."""


def samples_dir() -> Path:
    """The sample HR files: the source tree's ``samples/`` (``pip install -e .``), else
    ``./samples``."""
    here = Path(__file__).resolve().parent.parent.parent / "samples"
    return here if (here / "syncengine.toml").exists() else Path.cwd() / "samples"


def _fresh_demo_folder(folder: Path) -> None:
    """Empty ``folder`` for a new demo; refuse a folder the demo did not make."""
    import shutil

    if folder.exists():
        if not folder.is_dir():
            raise ConfigError("exists and is not a folder", where=str(folder),
                              hint="choose another folder with --dir")  # fmt: skip
        if any(folder.iterdir()) and not (folder / DEMO_MARKER).exists():
            raise ConfigError(
                "this folder is not empty and was not made by 'syncengine demo'; "
                "the demo will not delete it",
                where=str(folder),
                hint="choose another folder with --dir, or remove it yourself",
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / DEMO_MARKER).write_text(
        "made by 'syncengine demo'; deleted and made again on every demo run\n", encoding="utf-8"
    )


def _demo_config_text(sample: str, exmail_table: str) -> str:
    """The sample config with its ``[exmail]`` tables replaced by the running emulator's, and
    the client-side rate limit lifted (the local emulator has none)."""
    kept: list[str] = []
    in_exmail = False
    for line in sample.splitlines():
        header = line.strip()
        if header.startswith("["):
            in_exmail = header == "[exmail]" or header.startswith("[exmail.")
        if not in_exmail:
            kept.append(line)
    head = [
        "# Written by 'syncengine demo' from samples/syncengine.toml: [exmail] points at the",
        "# emulator the demo started; the database and the HR files are in this folder.",
        "",
        exmail_table,
        "",
        '# One mail group per HR department (README "Mail groups"), following HR.',
        "[groups]",
        'template = "dept-{code}@example.com"',
        'keeper = "admin@example.com"',
        "",
        "# The local emulator has no rate limit; against the real Exmail keep the default (20).",
        "[apply]",
        "concurrency = 8",
        "rate_per_second = 0",
        "",
    ]
    body = [ln for ln in kept if not ln.startswith("# syncengine configuration for the demo")]
    return "\n".join(head + body).rstrip("\n") + "\n"


def _read_gb_csv(path: Path) -> tuple[list[str], list[dict[str, str]], str]:
    import csv
    import io

    raw = path.read_bytes()
    newline = "\r\n" if b"\r\n" in raw else "\n"
    reader = csv.DictReader(io.StringIO(raw.decode("gb18030"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows, newline


def _write_gb_csv(path: Path, header: list[str], rows: list[dict[str, str]], newline: str
                  ) -> None:  # fmt: skip
    import csv
    import io

    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode("gb18030"))


def _demo_changes(engine: Engine, folder: Path, today: date) -> list[DemoChange]:
    """Edit the demo's HR export: a hire, a move, a leaver and a name change.

    The people are picked from the current snapshot (active, linked to a mailbox, in one
    department, no problem rows), so the edits work on whatever sample data is shipped.
    """
    from syncengine.domain import Status as HrStatus

    config = engine.config
    m = config.mapping.specs()
    columns = {k: (m[k].field if k in m else None)
               for k in ("employee_id", "name", "email", "departments", "status", "end_date",
                         "start_date")}  # fmt: skip
    path = folder / DEMO_FILES[0]
    header, rows, newline = _read_gb_csv(path)
    if any(c is None or c not in header for c in columns.values()):
        raise ConfigError(
            f"the demo expects the sample columns {sorted(str(c) for c in columns.values())}",
            where=str(path),
            hint="restore samples/ from the source tree",
        )
    col = {k: str(v) for k, v in columns.items()}
    repo = engine.repo
    snapshot = repo.current_snapshot()
    if snapshot is None:
        raise StagingError("the demo's first ingest left no snapshot", where=str(folder))
    people = {p.employee_id: p for p in repo.load_people(snapshot.id)}
    links = repo.load_links()
    by_id = {r[col["employee_id"]]: r for r in rows}
    candidates = sorted(
        eid for eid, p in people.items()
        if p.status is HrStatus.ACTIVE and eid in links and eid in by_id
        and len(p.departments) == 1 and (p.start_date is None or p.start_date <= today)
        and p.end_date is None and by_id[eid][col["departments"]].strip().count(";") == 0
    )  # fmt: skip
    if len(candidates) < 3:
        raise ConfigError("the sample HR export has too few active people for the demo",
                          where=str(path))  # fmt: skip
    used_depts = sorted({r[col["departments"]] for r in rows if r[col["departments"]]})
    mover, renamed, leaver = (by_id[e] for e in candidates[:3])
    old_dept = mover[col["departments"]]
    new_dept = next(d for d in used_depts if d != old_dept and ";" not in d)
    changes = []

    old_path = people[mover[col["employee_id"]]].departments[0]
    new_path = next(p.departments[0] for p in people.values()
                    if by_id.get(p.employee_id, {}).get(col["departments"]) == new_dept
                    and len(p.departments) == 1)  # fmt: skip
    mover[col["departments"]] = new_dept
    if "部门" in header:  # the sample's informational path column
        mover["部门"] = new_path
    changes.append(DemoChange("move", mover[col["employee_id"]], mover[col["name"]],
                              f"{old_path} → {new_path}"))  # fmt: skip

    old_name = renamed[col["name"]]
    given = "嘉怡" if old_name[1:] != "嘉怡" else "子涵"
    renamed[col["name"]] = old_name[:1] + given
    changes.append(DemoChange("rename", renamed[col["employee_id"]], renamed[col["name"]],
                              f"{old_name} → {renamed[col['name']]}"))  # fmt: skip

    leaver[col["status"]] = "离职"
    leaver[col["end_date"]] = today.isoformat()
    changes.append(DemoChange("leaver", leaver[col["employee_id"]], leaver[col["name"]],
                              f"left on {today.isoformat()}"))  # fmt: skip

    numbers = [int(e[1:]) for e in by_id if e[:1] == "E" and e[1:].isdigit()]
    width = max((len(e) - 1 for e in by_id if e[:1] == "E"), default=4)
    new_id = f"E{max(numbers, default=0) + 1:0{width}d}"
    taken = {r[col["email"]].strip().lower() for r in rows}
    domain = config.exmail.domains[0] if config.exmail.domains else "example.com"
    email = next(a for a in (f"linjiahe{n or ''}@{domain}" for n in range(100))
                 if a not in taken)  # fmt: skip
    hire = {h: "" for h in header}
    hire.update({col["employee_id"]: new_id, col["name"]: "林嘉禾", col["email"]: email,
                 col["departments"]: new_dept, col["status"]: "在职",
                 col["start_date"]: today.isoformat()})  # fmt: skip
    if "部门" in header:
        hire["部门"] = new_path
    rows.append(hire)
    changes.insert(0, DemoChange("hire", new_id, "林嘉禾", f"{email}, {new_path}"))
    _write_gb_csv(path, header, rows, newline)
    return changes


def _demo_round(engine: Engine, actor: str, progress: SyncProgress | None) -> DemoRound:
    def step(stage: str, done: int, total: int | None) -> None:
        if progress is not None:
            progress(stage, done, total)

    report = ingest(engine, progress=lambda stage, n: step(stage, n, None), actor=actor)
    planned = make_plan(engine, progress=step, actor=actor)
    outcome = None
    if planned.has_changes and not planned.blocked:
        outcome = apply_plan(engine, planned.plan, checksum=planned.plan.checksum, actor=actor,
                             progress=lambda d, t: step("applying", d, t))  # fmt: skip
    return DemoRound(report, planned, outcome)


def _audit_sample(engine: Engine, outcome: ApplyOutcome | None, per_kind: int = 1
                  ) -> tuple[AuditEntry, ...]:  # fmt: skip
    """A few outcome rows of the apply, one per kind, to show what the audit log keeps."""
    if outcome is None or outcome.applied is None or outcome.applied.run_id is None:
        return ()
    seen: Counter[str] = Counter()
    picked = []
    for row in query_audit(engine, run_id=outcome.applied.run_id):
        if row.call is None and row.kind and seen[row.kind] < per_kind:
            seen[row.kind] += 1
            picked.append(row)
    return tuple(picked)


def _group_lines(first: DemoRound, second: DemoRound) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the demo shows of the mail groups: those created, and how they followed."""
    created = tuple(
        f"{a.target} ({a.group.name}, {len(a.group.members)} members)"
        for a in first.plan.plan.actions
        if a.kind is ActionKind.CREATE_GROUP and a.group is not None
    )
    followed = []
    for a in second.plan.plan.actions:
        if a.kind not in GROUP_KINDS or a.group is None:
            continue
        moves = [f"+ {m}" for m in a.group.add] + [f"- {m}" for m in a.group.remove]
        verb = {ActionKind.CREATE_GROUP: "created", ActionKind.DELETE_GROUP: "deleted"}
        what = verb.get(a.kind) or ", ".join(moves) or "renamed"
        followed.append(f"{a.target} ({a.group.name}): {what}")
    return created, tuple(followed)


def demo(
    *,
    folder: str | Path = ".demo",
    api: str = "v2",
    samples: str | Path | None = None,
    actor: str = DEMO_ACTOR,
    progress: SyncProgress | None = None,
    hold: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the whole product once on built-in defaults, with nothing but this package.

    Starts the emulator in-process on a free loopback port (the built-in seed), writes a
    working copy of the sample config and HR files into ``folder`` (wiped first, if the demo
    made it), then ingest → plan → apply; edits the copy (a hire, a move, a leaver, a name
    change) and runs again to show the incremental plan. ``hold(result)``, when given, is
    called while the emulator still runs (``--keep-running``). No network beyond loopback.
    """
    started = time.perf_counter()
    if api not in ("v1", "v2"):
        raise ConfigError(f"unknown API generation {api!r}", where="--api", hint="v1 or v2")
    src = Path(samples) if samples is not None else samples_dir()
    missing = [n for n in ("syncengine.toml", *DEMO_FILES) if not (src / n).is_file()]
    if missing:
        raise ConfigError(
            f"the sample files are missing: {', '.join(missing)}",
            where=str(src),
            hint="run the demo from the source tree (pip install -e .) or pass --samples DIR",
        )
    target = Path(folder).expanduser().resolve()
    _fresh_demo_folder(target)
    for name in DEMO_FILES:
        (target / name).write_bytes((src / name).read_bytes())

    emu = exmail_emulator.start_emulator(api)
    try:
        seed = exmail_emulator.default_seed()
        table = exmail_emulator.config_snippet(seed, emu.base_url, api)
        config_path = target / "syncengine.toml"
        config_path.write_text(
            _demo_config_text((src / "syncengine.toml").read_text(encoding="utf-8"), table),
            encoding="utf-8",
        )
        with Engine(load_config(config_path)) as engine:
            first = _demo_round(engine, actor, progress)
            audit = _audit_sample(engine, first.outcome)
            today = engine.today()  # the company's calendar day
            changes = _demo_changes(engine, target, today)
            second = _demo_round(engine, actor, progress)
        state = emu.state()
        created, followed = _group_lines(first, second)
        result = DemoResult(
            folder=target,
            config_path=config_path,
            base_url=emu.base_url,
            api=api,
            seed_mailboxes=len(seed["users"]),
            first=first,
            audit=audit,
            changes=tuple(changes),
            second=second,
            mailboxes=len(state["users"]),
            departments=len(state["departments"]),
            seconds=time.perf_counter() - started,
            groups_created=created,
            groups_followed=followed,
        )
        if hold is not None:
            hold(result)
        return result
    finally:
        emu.close()
