"""Showing a Plan to people: terminal text, the JSON plan file, one HTML page, explanations.

PURE: functions from a :class:`~syncengine.plan.Plan` to a string; no I/O, no clock, no click.
The CLI decides whether the terminal gets colours and passes ``color=True``; the ANSI codes are
written here by hand (the ones ``click.style`` writes), so tests can render both ways.

The text groups the plan like ``terraform plan``: what blocks it first (and how to release it),
then one section per kind of change with ``field: old → new`` lines, then what the engine
refused to guess about (conflicts), what it leaves alone (unmanaged, protected, quarantined),
and the totals. The HTML page says the same for approvers who do not use a terminal: one
self-contained file (inline CSS, no script, no external resource), every piece of user data
escaped, since names and addresses come from HR and Exmail.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from syncengine.plan import (
    Action,
    ActionKind,
    BlockedReason,
    ChangeValue,
    Held,
    Plan,
    Release,
    ReleaseKind,
)

__all__ = [
    "SECTIONS",
    "Section",
    "action_label",
    "employee_label",
    "format_value",
    "render_explanation",
    "render_html",
    "render_json",
    "render_text",
    "summary_line",
    "totals",
]

# --- colours (the SGR codes click.style writes) ---------------------------------------------

_ANSI = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
}
_RESET = "\x1b[0m"

Styler = Callable[..., str]


def _styler(color: bool) -> Styler:
    def style(text: str, *names: str) -> str:
        if not color or not names or not text:
            return text
        return "".join(_ANSI[n] for n in names) + text + _RESET

    return style


# --- what goes where ------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One group of the rendered plan: its heading, the kinds it holds, its mark and colour."""

    key: str
    title: str
    kinds: tuple[ActionKind, ...]
    mark: str
    colour: str
    note: str = ""


SECTIONS: tuple[Section, ...] = (
    Section("departments_create", "Departments to create", (ActionKind.CREATE_DEPARTMENT,),
            "+", "green"),
    Section("departments_move", "Departments to move or rename", (ActionKind.MOVE_DEPARTMENT,),
            "~", "yellow", "members and sub-departments move with them"),
    Section("users_create", "Mailboxes to create", (ActionKind.CREATE_USER,), "+", "green"),
    Section("users_update", "Mailboxes to update", (ActionKind.UPDATE_USER,), "~", "yellow"),
    Section("addresses", "Address changes", (ActionKind.ADD_ALIAS, ActionKind.SWAP_PRIMARY),
            "~", "cyan", "the new address is added as an alias, then made the primary; "
            "the old one stays an alias"),
    Section("users_enable", "Mailboxes to enable", (ActionKind.ENABLE_USER,), "+", "green"),
    Section("users_disable", "Mailboxes to disable", (ActionKind.DISABLE_USER,), "-", "red"),
    Section("users_delete", "Mailboxes to delete", (ActionKind.DELETE_USER,), "-", "red",
            "the mailbox and its mail are removed"),
    Section("departments_delete", "Departments to delete", (ActionKind.DELETE_DEPARTMENT,),
            "-", "red"),
    Section("links", "Identity links to record (no Exmail change)",
            (ActionKind.LINK, ActionKind.UNLINK), "=", "blue"),
)  # fmt: skip
"""The order sections are shown in; every :class:`ActionKind` is in exactly one."""

_TOTAL_GROUPS: tuple[tuple[str, frozenset[ActionKind]], ...] = (
    ("to create", frozenset({ActionKind.CREATE_DEPARTMENT, ActionKind.CREATE_USER})),
    (
        "to change",
        frozenset(
            {
                ActionKind.MOVE_DEPARTMENT,
                ActionKind.UPDATE_USER,
                ActionKind.ADD_ALIAS,
                ActionKind.SWAP_PRIMARY,
                ActionKind.ENABLE_USER,
            }
        ),
    ),
    ("to disable", frozenset({ActionKind.DISABLE_USER})),
    ("to delete", frozenset({ActionKind.DELETE_USER, ActionKind.DELETE_DEPARTMENT})),
)
_LINK_KINDS = frozenset({ActionKind.LINK, ActionKind.UNLINK})

LIST_LIMIT = 50
"""How many unmanaged / protected / quarantined addresses the text lists before "... and N more"
(the JSON plan has them all)."""

_GENDER = {0: "unset", 1: "male", 2: "female"}


def _grouped(plan: Plan) -> dict[str, list[Action]]:
    by_kind: dict[ActionKind, list[Action]] = {}
    for a in plan.actions:
        by_kind.setdefault(a.kind, []).append(a)
    return {s.key: [a for k in s.kinds for a in by_kind.get(k, ())] for s in SECTIONS}


def totals(plan: Plan) -> dict[str, int]:
    """The counts a reader wants first: create / change / disable / delete / link, and the
    things left alone. Keys are stable (used by the JSON summary and the HTML page)."""
    out = {label: sum(1 for a in plan.actions if a.kind in kinds) for label, kinds in _TOTAL_GROUPS}
    out["links"] = sum(1 for a in plan.actions if a.kind in _LINK_KINDS)
    out["actions"] = len(plan.actions)
    out["conflicts"] = len(plan.conflicts)
    out["unmanaged"] = len(plan.unmanaged)
    out["protected"] = len(plan.protected)
    out["quarantined"] = len(plan.quarantined)
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _totals_phrase(plan: Plan) -> str:
    t = totals(plan)
    if not t["actions"]:
        return "no changes"
    parts = [f"{t[label]} {label}" for label, _ in _TOTAL_GROUPS]
    if t["links"]:
        parts.append(_plural(t["links"], "link record"))
    return ", ".join(parts)


def summary_line(plan: Plan, release: Release | None = None) -> str:
    """One line for a terminal or a log: the plan's short id, what it does, whether it is
    blocked and how to release it."""
    t = totals(plan)
    text = f"Plan {plan.checksum[:12]}: {_totals_phrase(plan)}"
    extra = []
    if t["conflicts"]:
        extra.append(_plural(t["conflicts"], "conflict"))
    if t["unmanaged"]:
        extra.append(f"{t['unmanaged']} unmanaged")
    if t["quarantined"]:
        extra.append(f"{t['quarantined']} quarantined")
    if plan.held:
        extra.append(f"{len(plan.held)} held")
    if extra:
        text += "; " + ", ".join(extra)
    left = plan.unreleased(release)
    if left:
        text += f"; BLOCKED by {_plural(len(left), 'brake')} ({_release_hint(left)})"
    elif plan.blocked_reasons:
        text += f"; {_plural(len(plan.blocked_reasons), 'brake')} released"
    return text


def _release_hint(reasons: Sequence[BlockedReason]) -> str:
    """The one release that lifts all of ``reasons``: the largest N per option."""
    removals = max(
        (r.needed for r in reasons if r.release is ReleaseKind.ALLOW_REMOVALS), default=0
    )
    updates = max((r.needed for r in reasons if r.release is ReleaseKind.ALLOW_UPDATES), default=0)
    opts = []
    if removals:
        opts.append(f"--allow-removals {removals}")
    if updates:
        opts.append(f"--allow-updates {updates}")
    if any(r.release is ReleaseKind.FORCE for r in reasons) or not opts:
        return "after review pass --force"
    return "after review pass " + " ".join(opts) + ", or --force"


# --- values and labels ----------------------------------------------------------------------


def format_value(value: ChangeValue, field: str = "") -> str:
    """A diff value as a reviewer reads it: strings quoted (so "" is visible), lists in
    brackets, nothing as ``(none)``, gender codes with their meaning."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if field == "gender":
            return f"{_GENDER.get(value, '?')} ({value})"
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]" if value else "[]"
    return json.dumps(value, ensure_ascii=False)


def _name_of(action: Action, names: Mapping[str, str]) -> str:
    if action.mailbox is not None and action.mailbox.name:
        return action.mailbox.name
    if action.employee_id in names:
        return names[action.employee_id]
    new = action.changes.get("name", (None, None))[1]
    return new if isinstance(new, str) else ""


def employee_label(action: Action, names: Mapping[str, str] | None = None) -> str:
    """``E0001 张三`` (id and name when known), ``""`` for department and unmanaged actions."""
    if not action.employee_id:
        return ""
    name = _name_of(action, names or {})
    return f"{action.employee_id} {name}".strip()


def action_label(action: Action) -> str:
    """What the action touches, in one phrase (a move shows where the department goes; an
    address change, which address becomes what)."""
    if action.kind is ActionKind.MOVE_DEPARTMENT and action.new_path:
        return f"{action.target} → {action.new_path}"
    if action.kind is ActionKind.ADD_ALIAS and action.alias:
        return f"{action.target}: add alias {action.alias}"
    if action.kind is ActionKind.SWAP_PRIMARY and action.alias:
        return f"{action.target} → {action.alias} (old address kept as alias)"
    if action.kind is ActionKind.UNLINK:
        return f"{action.target} (forget the link)"
    return action.target


def _change_lines(action: Action) -> list[tuple[str, str, str | None]]:
    """(field, old, new) per field diff; ``old`` is None for a create (only the new value)."""
    out: list[tuple[str, str, str | None]] = []
    creating = action.kind is ActionKind.CREATE_USER
    for fld in sorted(action.changes):
        old, new = action.changes[fld]
        if creating or (old is None and action.kind is ActionKind.LINK):
            out.append((fld, format_value(new, fld), None))
        else:
            out.append((fld, format_value(old, fld), format_value(new, fld)))
    if action.password is not None:
        pw = action.password
        out.append(
            (
                "password",
                f"generated at apply ({pw.length} characters"
                + (", must change at first login" if pw.change_at_login else "")
                + f"), delivered via {pw.delivery}",
                None,
            )
        )
    return out


# --- text -----------------------------------------------------------------------------------


def _held_line(h: Held) -> str:
    who = f" ({h.employee_id})" if h.employee_id else ""
    return f"{h.email}{who}: {h.reason}"


def _listing(
    lines: list[str], title: str, items: Sequence[str], note: str, style: Styler, limit: int
) -> None:
    if not items:
        return
    lines.append(style(f"{title} ({len(items)})", "bold") + (f" — {note}" if note else ""))
    shown = items if limit <= 0 else items[:limit]
    lines.extend(f"  {x}" for x in shown)
    if len(items) > len(shown):
        lines.append(style(f"  ... and {len(items) - len(shown)} more (see the JSON plan)", "dim"))
    lines.append("")


def _blocked_lines(plan: Plan, release: Release | None, style: Styler) -> list[str]:
    if not plan.blocked_reasons:
        return []
    left = plan.unreleased(release)
    lines: list[str] = []
    if left:
        lines.append(
            style(
                f"BLOCKED: {_plural(len(left), 'safety brake')} "
                f"{'stops' if len(left) == 1 else 'stop'} this plan from being applied",
                "bold",
                "red",
            )
        )
    else:
        lines.append(style("Safety brakes fired but are released for this run:", "bold", "yellow"))
    for r in plan.blocked_reasons:
        released = r.released_by(release)
        mark = style("✓", "green") if released else style("✗", "red")
        lines.append(f"  {mark} {style(r.brake, 'bold')}: {r.message}")
        if released:
            lines.append(style("      released by the options given", "dim"))
        else:
            lines.append(f"      to release: {r.how_to_release}")
    lines.append("")
    return lines


def render_text(
    plan: Plan,
    *,
    color: bool = False,
    release: Release | None = None,
    names: Mapping[str, str] | None = None,
    list_limit: int = LIST_LIMIT,
) -> str:
    """The plan for a terminal (see the module docstring). ``names`` (employee id -> name)
    labels actions whose name the plan does not carry; ``release`` marks the brakes the
    operator's options lift; ``list_limit`` <= 0 lists every unmanaged address."""
    style = _styler(color)
    names = names or {}
    lines = [
        style(f"Plan {plan.checksum[:12]}", "bold")
        + f"  made {plan.created_at.isoformat(sep=' ', timespec='seconds')}",
        style(
            f"  checksum {plan.checksum}\n"
            f"  mailbox state {plan.state_fingerprint[:12]}  config {plan.config_fingerprint[:12]}",
            "dim",
        ),
        "",
    ]
    lines += _blocked_lines(plan, release, style)
    grouped = _grouped(plan)
    for section in SECTIONS:
        actions = grouped[section.key]
        if not actions:
            continue
        head = style(f"{section.title} ({len(actions)})", "bold")
        lines.append(head + (style(f" — {section.note}", "dim") if section.note else ""))
        for a in actions:
            who = employee_label(a, names)
            lines.append(
                f"  {style(section.mark, section.colour, 'bold')} {style(action_label(a), 'bold')}"
                + (f"  {who}" if who else "")
            )
            for fld, old, new in _change_lines(a):
                if new is None:
                    lines.append(f"      {fld}: {style(old, 'green')}")
                else:
                    lines.append(f"      {fld}: {style(old, 'red')} → {style(new, 'green')}")
            lines.append(style(f"      why: {a.reason}", "dim"))
        lines.append("")
    if plan.conflicts:
        lines.append(
            style(f"Conflicts ({len(plan.conflicts)})", "bold", "magenta")
            + " — the engine will not guess; resolve these in HR or Exmail"
        )
        for c in plan.conflicts:
            lines.append(f"  {style('!', 'magenta', 'bold')} {c.kind.value}: {c.message}")
        lines.append("")
    _listing(lines, "Unmanaged mailboxes", plan.unmanaged,
             "no HR record; left alone", style, list_limit)  # fmt: skip
    _listing(lines, "Protected accounts", plan.protected,
             "matched a protected pattern; never touched", style, list_limit)  # fmt: skip
    _listing(lines, "Quarantined employees", plan.quarantined,
             "rows with problems in the HR snapshot; not synced, never treated as leavers",
             style, list_limit)  # fmt: skip
    _listing(lines, "Held mailboxes", [_held_line(h) for h in plan.held],
             "never disabled, deleted or adopted until HR fixes the row", style,
             list_limit)  # fmt: skip
    if plan.actions:
        lines.append(style("Plan: ", "bold") + _totals_phrase(plan) + ".")
    else:
        lines.append(style("No changes.", "bold", "green") + " Exmail already follows HR.")
    left = plan.unreleased(release)
    if left:
        lines.append(style("This plan is blocked: ", "bold", "red") + _release_hint(left) + ".")
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> str:
    """The plan document: exactly the applyable plan file (:meth:`Plan.to_json`)."""
    return plan.to_json()


def render_explanation(
    plan: Plan, *, color: bool = False, names: Mapping[str, str] | None = None
) -> str:
    """For ``plan --only``: per named employee, the planner's steps (how they matched, their
    lifecycle, the field diffs, the decision) and the actions that result."""
    style = _styler(color)
    names = names or {}
    lines: list[str] = []
    for eid, steps in plan.explanations.items():
        title = f"Employee {eid}" + (f" ({names[eid]})" if names.get(eid) else "")
        lines.append(style(title, "bold"))
        n = 0
        for step in steps:
            if step.startswith("  "):
                lines.append("       " + step.strip())
                continue
            n += 1
            lines.append(f"  {n:>2}. {step}")
        actions = plan.for_employee(eid)
        if actions:
            lines.append(style(f"  => {_plural(len(actions), 'action')}:", "bold"))
            for a in actions:
                lines.append(f"     {a.kind.value} {action_label(a)}")
                for fld, old, new in _change_lines(a):
                    if new is None:
                        lines.append(f"         {fld}: {old}")
                    else:
                        lines.append(f"         {fld}: {old} → {new}")
        else:
            lines.append(style("  => no action", "bold"))
        lines.append("")
    if not lines:
        return "No explanation in this plan (it was not made with --only).\n"
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;
border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.meta{color:#57606a;font-size:.85rem}.meta code{font-size:.8rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
.summary{width:auto}.summary td.count{text-align:right;font-weight:600;min-width:3rem}
.blocked,.released,.ok{margin-top:1.25rem}
.blocked{border:2px solid #cf222e;background:#ffebe9;padding:.75rem 1rem;border-radius:6px}
.blocked h2{color:#cf222e;border:0;margin-top:0}
.released{border:2px solid #bf8700;background:#fff8c5;padding:.75rem 1rem;border-radius:6px}
.ok{border:2px solid #1a7f37;background:#dafbe1;padding:.75rem 1rem;border-radius:6px}
del{color:#cf222e;text-decoration:line-through}ins{color:#1a7f37;text-decoration:none}
ul.changes{margin:0;padding-left:1rem}.note{color:#57606a;font-size:.85rem}
.mark-create{color:#1a7f37}.mark-remove{color:#cf222e}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _changes_html(action: Action) -> str:
    items = []
    for fld, old, new in _change_lines(action):
        if new is None:
            items.append(f"<li><b>{_e(fld)}</b>: <ins>{_e(old)}</ins></li>")
        else:
            items.append(f"<li><b>{_e(fld)}</b>: <del>{_e(old)}</del> → <ins>{_e(new)}</ins></li>")
    return f'<ul class="changes">{"".join(items)}</ul>' if items else ""


def render_html(
    plan: Plan,
    *,
    release: Release | None = None,
    names: Mapping[str, str] | None = None,
    plan_id: int | None = None,
    title: str = "syncengine plan",
) -> str:
    """One self-contained page for approvers (see the module docstring). ``plan_id`` is the
    staging database's id of the saved plan, shown beside the checksum."""
    names = names or {}
    t = totals(plan)
    short = plan.checksum[:12]
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} {_e(short)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)} <code>{_e(short)}</code></h1>",
        '<table class="meta" id="meta">',
    ]
    meta = [
        ("Plan id", f"#{plan_id}" if plan_id is not None else "(not saved)"),
        ("Checksum (sha256)", plan.checksum),
        ("Created", plan.created_at.isoformat(sep=" ", timespec="seconds")),
        ("Mailbox state fingerprint", plan.state_fingerprint),
        ("Config fingerprint", plan.config_fingerprint),
        ("Schema version", str(plan.schema_version)),
    ]
    out += [f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in meta]
    out.append("</table>")

    left = plan.unreleased(release)
    if plan.blocked_reasons:
        cls = "blocked" if left else "released"
        heading = (
            f"Blocked by {_plural(len(left), 'safety brake')}: "
            "this plan will not be applied as it is"
            if left
            else "Safety brakes fired and are released for this run"
        )
        out.append(f'<section class="{cls}" id="blocked"><h2>{_e(heading)}</h2><ul>')
        for r in plan.blocked_reasons:
            state = "released" if r.released_by(release) else f"to release: {r.how_to_release}"
            out.append(
                f'<li class="reason" data-brake="{_e(r.brake)}"><b>{_e(r.brake)}</b>: '
                f'{_e(r.message)}<br><span class="note">{_e(state)}</span></li>'
            )
        out.append("</ul></section>")
    elif not plan.actions:
        out.append('<section class="ok" id="nochanges"><b>No changes.</b> '
                   "Exmail already follows HR.</section>")  # fmt: skip

    out.append('<h2>Summary</h2><table class="summary" id="summary">')
    rows = [(label, t[label]) for label, _ in _TOTAL_GROUPS]
    rows += [
        ("link records", t["links"]),
        ("actions in all", t["actions"]),
        ("conflicts", t["conflicts"]),
        ("unmanaged", t["unmanaged"]),
        ("protected", t["protected"]),
        ("quarantined", t["quarantined"]),
    ]
    out += [
        f'<tr><th>{_e(label)}</th><td class="count" data-key="{_e(label)}">{n}</td></tr>'
        for label, n in rows
    ]
    out.append("</table>")

    grouped = _grouped(plan)
    for section in SECTIONS:
        actions = grouped[section.key]
        if not actions:
            continue
        out.append(
            f'<h2 id="{section.key}">{_e(section.title)} ({len(actions)})</h2>'
            + (f'<p class="note">{_e(section.note)}</p>' if section.note else "")
        )
        out.append(
            f'<table class="kind" data-section="{section.key}"><thead><tr><th>#</th>'
            "<th>Target</th><th>Employee</th><th>Changes (old → new)</th><th>Reason</th>"
            "</tr></thead><tbody>"
        )
        for i, a in enumerate(actions, 1):
            out.append(
                f"<tr><td>{i}</td><td>{_e(action_label(a))}</td>"
                f"<td>{_e(employee_label(a, names))}</td><td>{_changes_html(a)}</td>"
                f"<td>{_e(a.reason)}</td></tr>"
            )
        out.append("</tbody></table>")

    if plan.conflicts:
        out.append(f'<h2 id="conflicts">Conflicts ({len(plan.conflicts)})</h2>')
        out.append('<p class="note">The engine will not guess: resolve these in HR or Exmail. '
                   "The people concerned get no actions.</p>")  # fmt: skip
        out.append("<table><thead><tr><th>Kind</th><th>Employees</th><th>Addresses</th>"
                   "<th>What is wrong</th></tr></thead><tbody>")  # fmt: skip
        for c in plan.conflicts:
            out.append(
                f"<tr><td>{_e(c.kind.value)}</td><td>{_e(', '.join(c.employee_ids))}</td>"
                f"<td>{_e(', '.join(c.emails))}</td><td>{_e(c.message)}</td></tr>"
            )
        out.append("</tbody></table>")

    for key, heading, items, note in (
        ("unmanaged", "Unmanaged mailboxes", plan.unmanaged, "No HR record; left alone."),
        ("protected", "Protected accounts", plan.protected, "Never touched."),
        ("quarantined", "Quarantined employees", plan.quarantined,
         "Rows with problems in the HR snapshot: not synced, never treated as leavers."),
        ("held", "Held mailboxes", tuple(_held_line(h) for h in plan.held),
         "Never disabled, deleted or adopted until HR fixes the row."),
    ):  # fmt: skip
        if items:
            out.append(f'<h2 id="{key}">{_e(heading)} ({len(items)})</h2>')
            out.append(f'<p class="note">{_e(note)}</p><ul>')
            out += [f"<li>{_e(x)}</li>" for x in items]
            out.append("</ul>")

    if plan.explanations:
        out.append('<h2 id="explanations">Explanations</h2>')
        for eid, steps in plan.explanations.items():
            label = f"{eid} {names.get(eid, '')}".strip()
            out.append(f"<h3>{_e(label)}</h3><ol>")
            out += [f"<li>{_e(s.strip())}</li>" for s in steps]
            out.append("</ol>")

    out.append(f'<p class="note" id="totals">{_e(summary_line(plan, release))}</p></body></html>')
    return "\n".join(out) + "\n"
