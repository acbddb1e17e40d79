"""Finding a stored plan and what its page needs to be read (issue 12): ``show`` and the
approval UI open a plan by file, by id or by checksum prefix; the page names every person
(leavers too, from the last snapshot that had them) and gives quarantine reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from syncengine import render, signing
from syncengine.config import Config
from syncengine.errors import PlanError, SyncEngineError
from syncengine.plan import Plan, Release, checksum_prefix_error, signature_ok
from syncengine.plan_page import ReviewContext
from syncengine.staging import db as staging_db
from syncengine.staging.repository import PlanRecord, Repository

NAME_SNAPSHOTS = 20
"""How many snapshots back a leaver's name is looked for."""


@dataclass(frozen=True)
class StoredPlan:
    plan: Plan
    plan_id: int | None
    source: str
    status: str | None = None


def _read_file(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read the plan file: {exc}", where=str(path)) from None
    return Plan.from_json(text, source=str(path))


def find_record(repo: Repository, ref: str, *, where: str) -> PlanRecord:
    """A stored plan by id (digits) or by checksum prefix (12+ hex characters)."""
    text = ref.strip().lower()
    record: PlanRecord | None
    if text.isascii() and text.isdigit() and len(text) < CHECKSUM_DIGITS:
        record = repo.load_plan(int(text))
        if record is None:
            raise PlanError(
                f"there is no stored plan #{text}", where=where, hint="list them: syncengine show"
            )
        return record
    problem = checksum_prefix_error(text)
    if problem is not None:
        raise PlanError(
            f"{problem}; or give a plan file or a plan id",
            where=where,
            hint="a plan id is a number",
        )
    found = repo.plans_with_checksum_prefix(text, limit=2)
    if not found:
        raise PlanError(f"no stored plan has a checksum starting with {text}", where=where)
    if len(found) > 1:
        raise PlanError(
            f"the checksum prefix {text} is ambiguous: plans #{found[0].id} and #{found[1].id} "
            "both start with it",
            where=where,
            hint="give more characters of the checksum",
        )
    return found[0]


CHECKSUM_DIGITS = 12  # a ref of 12+ digits is a checksum prefix that happens to be all digits


def open_plan(config: Config, repo: Repository, ref: str) -> StoredPlan:
    """A plan file (a path that exists), or a stored plan by id or checksum prefix."""
    path = Path(ref)
    if path.is_file():
        plan = _read_file(path)
        record = repo.load_plan(plan.checksum)
        return StoredPlan(
            plan, record.id if record else None, str(path), record.status if record else None
        )
    record = find_record(repo, ref, where=staging_db.display_url(config.database_url))
    plan = Plan.from_json(record.document, source=f"stored plan #{record.id}")
    return StoredPlan(plan, record.id, f"stored plan #{record.id}", record.status)


def plan_names(repo: Repository, plan: Plan) -> dict[str, str]:
    """HR names of every employee the plan mentions, newest snapshot first (a leaver gone
    from HR keeps the name of the last snapshot that had them)."""
    wanted = {a.employee_id for a in plan.actions if a.employee_id}
    wanted |= set(plan.explanations) | set(plan.quarantined)
    for c in plan.conflicts:
        wanted |= set(c.employee_ids)
    names: dict[str, str] = {}
    for snap in repo.list_snapshots(limit=NAME_SNAPSHOTS):
        missing = wanted - set(names)
        if not missing:
            break
        for person in repo.load_people(snap.id, missing):
            names.setdefault(person.employee_id, person.name)
    return names


def quarantine_reasons(repo: Repository) -> dict[str, tuple[str, ...]]:
    """Why each quarantined employee of the current snapshot is held back."""
    snap = repo.current_snapshot()
    if snap is None:
        return {}
    out: dict[str, list[str]] = {}
    for p in repo.load_problems(snap.id):
        if p.employee_id:
            out.setdefault(p.employee_id, []).append(str(p))
    return {k: tuple(v) for k, v in out.items()}


def signature_valid(config: Config, plan: Plan) -> bool | None:
    """Whether this engine signed the plan as it is (None: this engine has no key yet)."""
    try:
        key = signing.plan_key(config, create=False)
    except SyncEngineError:
        return None
    return signature_ok(plan, key)


def context_for(
    config: Config,
    repo: Repository,
    plan: Plan,
    *,
    plan_id: int | None,
    lang: str | None = None,
) -> ReviewContext:
    """Everything a rendered page shows besides the plan itself."""
    return ReviewContext(
        signature_valid=signature_valid(config, plan),
        names=plan_names(repo, plan),
        quarantine=quarantine_reasons(repo),
        lang=lang or config.review.lang,
        zone=config.review.zone,
        plan_id=plan_id,
    )


# --- rendering a stored plan ------------------------------------------------------------------

_EXTENSIONS = {".json": "json", ".html": "html", ".htm": "html", ".txt": "text"}


def output_format(out_path: str | None, fmt: str | None) -> str:
    """The format of ``plan --out``: the explicit one, else the extension's, else json
    (stdout: text). An explicit format that contradicts the extension is a ValueError."""
    ext = Path(out_path).suffix.lower() if out_path else ""
    inferred = _EXTENSIONS.get(ext)
    if fmt is not None:
        if inferred is not None and inferred != fmt:
            raise ValueError(
                f"--format {fmt} does not match the file name {out_path} ({ext} is {inferred}); "
                "drop --format or change the extension"
            )
        return fmt
    return inferred or ("json" if out_path else "text")


def json_beside(out_path: str) -> Path:
    """Where the JSON plan file of an HTML page goes: same name, ``.json``."""
    return Path(out_path).with_suffix(".json")


def render_stored(
    config: Config,
    repo: Repository,
    plan: Plan,
    fmt: str,
    *,
    plan_id: int | None,
    release: Release | None = None,
    lang: str | None = None,
) -> str:
    """``plan`` rendered as ``fmt`` (text, json, html or summary) with its names, quarantine
    reasons, language and time zone from staging and the config."""
    if fmt == "json":
        return render.render_json(plan)
    ctx = context_for(config, repo, plan, plan_id=plan_id, lang=lang)
    if fmt == "html":
        return render.render_html(plan, release=release, context=ctx)
    text_lang = lang or "en"  # the terminal's text is English unless --lang says otherwise
    if fmt == "summary":
        return render.summary_line(plan, release, text_lang) + "\n"
    text = render.render_text(
        plan, release=release, names=ctx.names, lang=text_lang, zone=config.review.zone
    )
    if plan.explanations:
        text = render.render_explanation(plan, names=ctx.names) + "\n" + text
    return text


def show(config: Config, repo: Repository, ref: str, fmt: str, *, lang: str | None = None) -> str:
    """``syncengine show``: any stored plan in any format."""
    stored = open_plan(config, repo, ref)
    return render_stored(config, repo, stored.plan, fmt, plan_id=stored.plan_id, lang=lang)


def check_only(repo: Repository, employee_ids: Sequence[str]) -> None:
    """Refuse ``plan --only`` ids the plan cannot explain usefully: not in the current HR
    snapshot and never linked (a typo), or quarantined (with the reasons)."""
    if not employee_ids:
        return
    snap = repo.current_snapshot()
    if snap is None:
        return  # make_plan says to ingest first
    present = {p.employee_id for p in repo.load_people(snap.id, employee_ids)}
    linked = set(repo.load_links(list(employee_ids)))
    quarantined = set(snap.counts.get("quarantined_ids") or [])
    reasons = quarantine_reasons(repo) if quarantined & set(employee_ids) else {}
    problems = []
    for eid in employee_ids:
        if eid in quarantined:
            why = "; ".join(reasons.get(eid, ())) or "no reason recorded"
            problems.append(f"{eid} is quarantined in snapshot #{snap.id} ({why})")
        elif eid not in present and eid not in linked:
            problems.append(f"{eid} is not in the current HR snapshot (#{snap.id}) nor linked")
    if problems:
        raise PlanError(
            "; ".join(problems),
            where="--only",
            hint="check the employee id; a quarantined row is planned once its problem is "
            "fixed in HR and ingested again",
        )
