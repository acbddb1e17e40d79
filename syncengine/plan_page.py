"""The approvers' plan page: one self-contained HTML file rendered from a Jinja2 template, in
Chinese or English through gettext catalogues (issue 12).

PURE: a function of the plan and a :class:`ReviewContext`; the only files read are this
package's own template and message catalogues. No clock (times are the plan's, shown in the
configured zone), no network: inline CSS and one inline script of ours (the filter), no
external resource, every piece of HR or Exmail data escaped by the template engine.

What the page does for a reader: a badge (+N ~N −N, blocked or not) in the header; removals
and disables first, in red; every section collapsible (``<details>``, all opened for print); a
filter over people, addresses and departments that hides the rows that do not match; names for
every person (the context brings leavers' names from older snapshots); the reasons quarantined
people are held back; values as people read them (是/否, 男/女, lists joined, "(empty)").
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from syncengine.plan import Action, ActionKind, ChangeValue, Plan, Release
from syncengine.render import (
    _TOTAL_GROUPS,
    SECTIONS,
    Section,
    action_label,
    summary_line,
    totals,
)
from syncengine.translations import translations

ROW_LIMIT = 100
"""Rows shown per section before "show all" (the page stays light with 10,000 people)."""

FILTER_CAP = 200
"""At most this many matching rows are shown at once (the count says how many match)."""

REMOVAL_FIRST = ("users_delete", "users_disable", "departments_delete")
"""Sections shown first (and in red): what takes something away."""


@dataclass(frozen=True)
class ReviewContext:
    """What a page shows besides the plan: HR names by employee id (leavers included),
    quarantine reasons by employee id, the language, the time zone and the stored plan id."""

    names: Mapping[str, str] = field(default_factory=dict)
    quarantine: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lang: str = "en"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    plan_id: int | None = None
    signature_valid: bool | None = None  # None: not checked (no key at hand)


@functools.lru_cache(maxsize=4)
def _environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("syncengine", "templates"),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=False,
        undefined=jinja2.StrictUndefined,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def _value_formatter(_: Callable[[str], str]) -> Callable[[ChangeValue, str], str]:
    genders = {0: _("unset"), 1: _("male"), 2: _("female")}

    def fmt(value: ChangeValue, fld: str) -> str:
        if value is None:
            return _("(none)")
        if isinstance(value, bool):
            return _("yes") if value else _("no")
        if isinstance(value, int):
            return genders.get(value, str(value)) if fld == "gender" else str(value)
        if isinstance(value, tuple):
            return "、".join(value) if value else _("(none)")
        return value if value else _("(empty)")

    return fmt


_FIELDS = (
    "name", "position", "departments", "aliases", "mobile", "tel", "gender", "enabled",
    "email", "ext_id", "password", "path",
)  # fmt: skip


def _rows(
    actions: list[Action], ctx: ReviewContext, _: Callable[[str], str]
) -> list[dict[str, Any]]:
    fmt = _value_formatter(_)
    rows = []
    for a in actions:
        name = ctx.names.get(a.employee_id, "")
        if not name and a.mailbox is not None:
            name = a.mailbox.name
        who = f"{a.employee_id} {name}".strip()
        changes: list[tuple[str, str, str | None]] = []
        creating = a.kind is ActionKind.CREATE_USER
        for fld in sorted(a.changes):
            old, new = a.changes[fld]
            label = _(fld) if fld in _FIELDS else fld
            if creating or (old is None and a.kind is ActionKind.LINK):
                changes.append((label, fmt(new, fld), None))
            else:
                changes.append((label, fmt(old, fld), fmt(new, fld)))
        if a.password is not None:
            changes.append(
                (
                    _("password"),
                    _("generated at apply, delivered via %(d)s") % {"d": a.password.delivery},
                    None,
                )
            )
        target = action_label(a)
        depts = " ".join(a.mailbox.departments) if a.mailbox else ""
        q = " ".join([target, who, depts, a.new_path or ""]).lower()
        rows.append({"target": target, "who": who, "changes": changes, "reason": a.reason, "q": q})
    return rows


def _sections(plan: Plan, ctx: ReviewContext, _: Callable[[str], str]) -> list[dict[str, Any]]:
    by_key: dict[str, Section] = {s.key: s for s in SECTIONS}
    order = [*REMOVAL_FIRST, *(s.key for s in SECTIONS if s.key not in REMOVAL_FIRST)]
    by_kind: dict[ActionKind, list[Action]] = {}
    for a in plan.actions:
        by_kind.setdefault(a.kind, []).append(a)
    out = []
    for key in order:
        s = by_key[key]
        actions = [a for k in s.kinds for a in by_kind.get(k, ())]
        if not actions:
            continue
        out.append(
            {
                "key": s.key,
                "title": _(s.title),
                "note": _(s.note) if s.note else "",
                "css": "removal" if key in REMOVAL_FIRST else "",
                "rows": _rows(actions, ctx, _),
            }
        )
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;margin:2rem auto;max-width:76rem;padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem;
display:inline}summary{cursor:pointer;margin-top:1.25rem;border-bottom:1px solid #d0d7de}
.meta{color:#57606a;font-size:.85rem}.meta code{font-size:.8rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.summary{width:auto}
.summary td.count{text-align:right;font-weight:600;min-width:3rem}
.badge{font-size:1rem;padding:.15rem .6rem;border-radius:1rem;margin-left:.5rem;
border:1px solid #d0d7de}.badge-blocked{background:#ffebe9;border-color:#cf222e}
.badge-ok{background:#dafbe1;border-color:#1a7f37}.add{color:#1a7f37}.chg{color:#9a6700}
.rem{color:#cf222e}
.blocked,.released,.ok{margin-top:1.25rem;padding:.75rem 1rem;border-radius:6px}
.blocked{border:2px solid #cf222e;background:#ffebe9}.blocked h2{color:#cf222e}
.released{border:2px solid #bf8700;background:#fff8c5}
.ok{border:2px solid #1a7f37;background:#dafbe1}
.removal summary h2,.removal td:nth-child(2){color:#cf222e}
del{color:#cf222e;text-decoration:line-through}ins{color:#1a7f37;text-decoration:none}
ul.changes{margin:0;padding-left:1rem}.note{color:#57606a;font-size:.85rem}
.approval{margin-top:1rem;padding:.75rem 1rem;border:1px solid #0969da;border-radius:6px;
background:#ddf4ff}.flash{font-weight:600}#approve{color:#1a7f37}#reject{color:#cf222e}
.filter{margin-top:1.5rem}#filter{font-size:1rem;padding:.3rem .5rem;width:24rem;
max-width:100%}tr.hide{display:none}
@media print{.filter,.more{display:none}summary{border:0}}
"""

_SCRIPT = """
(function(){
var input=document.getElementById('filter');if(!input)return;
var count=document.getElementById('filter-count');
var cap=+count.getAttribute('data-cap'),limit=+count.getAttribute('data-limit');
var rows=Array.prototype.slice.call(document.querySelectorAll('tr[data-q]'));
var keys=[],sect=[],rank=[],hidden=[],open={};
rows.forEach(function(r,i){keys.push(r.getAttribute('data-q'));
var d=r.closest('details');sect.push(d?d.id:'');rank.push(r.sectionRowIndex);
hidden.push(r.classList.contains('hide'));});
function show(i,v){if(hidden[i]===!v)return;hidden[i]=!v;rows[i].classList.toggle('hide',!v);}
function apply(){var q=input.value.trim().toLowerCase(),shown=0,hits=0;
for(var i=0;i<rows.length;i++){var v;
if(!q){v=rank[i]<limit||open[sect[i]];}
else{v=keys[i].indexOf(q)!==-1;if(v){hits++;v=shown<cap;}}
if(v)shown++;show(i,v);}
count.textContent=q?(hits+' '+count.getAttribute('data-matching')+(hits>shown?
', '+shown+' '+count.getAttribute('data-of'):'')):'';
document.body.setAttribute('data-filtered',q);}
input.addEventListener('input',apply);
document.querySelectorAll('button[data-more]').forEach(function(b){
b.addEventListener('click',function(){open[b.getAttribute('data-more')]=true;
b.parentNode.style.display='none';apply();});});
window.addEventListener('beforeprint',function(){
document.querySelectorAll('details').forEach(function(d){d.open=true;});
rows.forEach(function(r,i){show(i,true);});});
window.addEventListener('afterprint',apply);
})();
"""


def render_page(
    plan: Plan,
    *,
    release: Release | None,
    context: ReviewContext,
    approval: Mapping[str, Any] | None = None,
) -> str:
    """The page (see the module docstring). ``approval``: the sign-off form of the review
    pages (user, action, csrf, open/closed, decisions...), absent from files."""
    lang = context.lang
    tr = translations(lang)
    _ = tr.gettext
    t = totals(plan)
    left = plan.unreleased(release)
    labels = {
        "to create": _("to create"), "to change": _("to change"),
        "to disable": _("to disable"), "to delete": _("to delete"),
        "links": _("link records"), "actions": _("actions in all"),
        "conflicts": _("conflicts"), "unmanaged": _("unmanaged"),
        "protected": _("protected"), "quarantined": _("quarantined"),
    }  # fmt: skip
    keys = [label for label, _g in _TOTAL_GROUPS] + [
        "links", "actions", "conflicts", "unmanaged", "protected", "quarantined"
    ]  # fmt: skip
    summary = [(k, labels[k], t[k]) for k in keys]
    names = context.names
    quarantined = [
        (
            f"{eid} {names.get(eid, '')}".strip(),
            "; ".join(context.quarantine.get(eid, ())) or _("(no reason recorded)"),
        )
        for eid in plan.quarantined
    ]
    lists = [
        ("unmanaged", _("Unmanaged mailboxes"), _("No HR record; left alone."),
         [(x, "") for x in plan.unmanaged]),
        ("protected", _("Protected accounts"), _("Never touched."),
         [(x, "") for x in plan.protected]),
        ("quarantined", _("Quarantined employees"),
         _("Rows with problems in the HR snapshot: not synced, never treated as leavers."),
         quarantined),
        ("held", _("Held mailboxes"),
         _("Never disabled, deleted or adopted until HR fixes the row."),
         [(f"{h.email} {h.employee_id}".strip(), h.reason) for h in plan.held]),
    ]  # fmt: skip
    conflicts = [
        {
            "kind": c.kind.value,
            "who": ", ".join(f"{e} {names.get(e, '')}".strip() for e in c.employee_ids),
            "emails": ", ".join(c.emails),
            "message": c.message,
            "q": " ".join(
                [*c.employee_ids, *c.emails, *(names.get(e, "") for e in c.employee_ids)]
            ).lower(),
        }
        for c in plan.conflicts
    ]
    created = _when(plan.created_at, context.zone)
    page = (
        _environment(lang)
        .get_template("plan.html.j2")
        .render(
            plan=plan,
            plan_id=context.plan_id,
            signature_valid=context.signature_valid,
            html_lang="zh-CN" if lang == "zh" else "en",
            short=plan.checksum[:12],
            created=created,
            blocked=bool(left),
            unreleased=left,
            reasons=[
                {
                    "brake": r.brake,
                    "message": r.message,
                    "released": r.released_by(release),
                    "how": r.how_to_release,
                }
                for r in plan.blocked_reasons
            ],
            badge={
                "add": t["to create"],
                "change": t["to change"],
                "remove": t["to disable"] + t["to delete"],
            },
            summary=summary,
            sections=_sections(plan, context, _),
            conflicts=conflicts,
            lists=lists,
            explanations=[
                (f"{eid} {names.get(eid, '')}".strip(), [s.strip() for s in steps])
                for eid, steps in plan.explanations.items()
            ],
            totals_line=summary_line(plan, release, lang),
            css=_CSS,
            script=_SCRIPT,
            approval=approval,
            limit=ROW_LIMIT,
            cap=FILTER_CAP,
        )
    )
    return page


SCRIPT_SHA256 = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode()
"""For a Content-Security-Policy that allows this page's one script and no other."""


def when(moment: datetime, zone: ZoneInfo) -> str:
    """A time as shown on the pages: in the configured zone, named."""
    return _when(moment, zone)


def _when(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone) if moment.tzinfo else moment
    return f"{local:%Y-%m-%d %H:%M:%S} ({zone.key})"
