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

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

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
    Section("groups_create", "Mail groups to create", (ActionKind.CREATE_GROUP,), "+", "green"),
    Section("groups_update", "Mail groups to change", (ActionKind.UPDATE_GROUP,), "~", "yellow",
            "only the members that join or leave are sent"),
    Section("groups_delete", "Mail groups to delete", (ActionKind.DELETE_GROUP,), "-", "red"),
    Section("groups_adopt", "Existing mail groups to adopt", (ActionKind.ADOPT_GROUP,), "~",
            "yellow", "taken over as they are in Exmail, then only the member changes"),
    Section("links", "Identity links to record (no Exmail change)",
            (ActionKind.LINK, ActionKind.UNLINK), "=", "blue"),
)  # fmt: skip
"""The order sections are shown in; every :class:`ActionKind` is in exactly one."""

_TOTAL_GROUPS: tuple[tuple[str, frozenset[ActionKind]], ...] = (
    (
        "to create",
        frozenset({ActionKind.CREATE_DEPARTMENT, ActionKind.CREATE_USER, ActionKind.CREATE_GROUP}),
    ),
    (
        "to change",
        frozenset(
            {
                ActionKind.MOVE_DEPARTMENT,
                ActionKind.UPDATE_USER,
                ActionKind.ADD_ALIAS,
                ActionKind.SWAP_PRIMARY,
                ActionKind.ENABLE_USER,
                ActionKind.UPDATE_GROUP,
                ActionKind.ADOPT_GROUP,
            }
        ),
    ),
    ("to disable", frozenset({ActionKind.DISABLE_USER})),
    (
        "to delete",
        frozenset({ActionKind.DELETE_USER, ActionKind.DELETE_DEPARTMENT, ActionKind.DELETE_GROUP}),
    ),
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


class _Tr:
    """gettext and ngettext of one language (English: the message ids themselves), loaded
    from the package's catalogues by :mod:`syncengine.plan_page`."""

    def __init__(self, lang: str) -> None:
        from syncengine.translations import translations

        t = translations(lang)
        self.gettext = t.gettext
        self.ngettext = t.ngettext

    def __call__(self, text: str, **values: object) -> str:
        out = self.gettext(text)
        return out % values if values else out

    def n(self, singular: str, plural: str, n: int, **values: object) -> str:
        return self.ngettext(singular, plural, n) % {"n": n, **values}


def _totals_phrase(plan: Plan, lang: str = "en") -> str:
    _ = _Tr(lang)
    t = totals(plan)
    if not t["actions"]:
        return _("no changes")
    words = {
        "to create": _("%(n)d to create", n=t["to create"]),
        "to change": _("%(n)d to change", n=t["to change"]),
        "to disable": _("%(n)d to disable", n=t["to disable"]),
        "to delete": _("%(n)d to delete", n=t["to delete"]),
    }
    parts = [words[label] for label, _kinds in _TOTAL_GROUPS]
    if t["links"]:
        parts.append(_.n("%(n)d link record", "%(n)d link records", t["links"]))
    return _(", ").join(parts)


def summary_line(plan: Plan, release: Release | None = None, lang: str = "en") -> str:
    """One line for a terminal or a log: the plan's short id, what it does, whether it is
    blocked and how to release it (in ``lang``: en or zh)."""
    _ = _Tr(lang)
    t = totals(plan)
    text = _("Plan %(short)s: %(what)s", short=plan.checksum[:12], what=_totals_phrase(plan, lang))
    extra = []
    if t["conflicts"]:
        extra.append(_.n("%(n)d conflict", "%(n)d conflicts", t["conflicts"]))
    if t["unmanaged"]:
        extra.append(_("%(n)d unmanaged", n=t["unmanaged"]))
    if t["quarantined"]:
        extra.append(_("%(n)d quarantined", n=t["quarantined"]))
    if plan.held:
        extra.append(_("%(n)d held", n=len(plan.held)))
    if extra:
        text += _("; ") + _(", ").join(extra)
    left = plan.unreleased(release)
    if left:
        text += _.n(
            "; BLOCKED by %(n)d brake (%(hint)s)",
            "; BLOCKED by %(n)d brakes (%(hint)s)",
            len(left),
            hint=_release_hint(left, lang),
        )
    elif plan.blocked_reasons:
        text += _.n("; %(n)d brake released", "; %(n)d brakes released", len(plan.blocked_reasons))
    return text


def _release_hint(reasons: Sequence[BlockedReason], lang: str = "en") -> str:
    """The one release that lifts all of ``reasons``: the largest N per option."""
    _ = _Tr(lang)
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
        return _("after review pass --force")
    return _("after review pass %(options)s, or --force", options=" ".join(opts))


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
    lines: list[str], title: str, items: Sequence[str], note: str, style: Styler, limit: int,
    _: _Tr,
) -> None:  # fmt: skip
    if not items:
        return
    lines.append(style(f"{_(title)} ({len(items)})", "bold") + (f" — {_(note)}" if note else ""))
    shown = items if limit <= 0 else items[:limit]
    lines.extend(f"  {x}" for x in shown)
    if len(items) > len(shown):
        more = _("  ... and %(n)d more (see the JSON plan)", n=len(items) - len(shown))
        lines.append(style(more, "dim"))
    lines.append("")


def _blocked_lines(plan: Plan, release: Release | None, style: Styler, _: _Tr) -> list[str]:
    if not plan.blocked_reasons:
        return []
    left = plan.unreleased(release)
    lines: list[str] = []
    if left:
        lines.append(
            style(
                _.n(
                    "BLOCKED: %(n)d safety brake stops this plan from being applied",
                    "BLOCKED: %(n)d safety brakes stop this plan from being applied",
                    len(left),
                ),
                "bold",
                "red",
            )
        )
    else:
        lines.append(
            style(_("Safety brakes fired but are released for this run:"), "bold", "yellow")
        )
    for r in plan.blocked_reasons:
        released = r.released_by(release)
        mark = style("✓", "green") if released else style("✗", "red")
        lines.append(f"  {mark} {style(r.brake, 'bold')}: {r.message}")
        if released:
            lines.append(style("      " + _("released by the options given"), "dim"))
        else:
            lines.append("      " + _("to release: %(how)s", how=r.how_to_release))
    lines.append("")
    return lines


def _made_at(plan: Plan, zone: ZoneInfo | None) -> str:
    if zone is None or plan.created_at.tzinfo is None:
        return plan.created_at.isoformat(sep=" ", timespec="seconds")
    local = plan.created_at.astimezone(zone)
    return f"{local.isoformat(sep=' ', timespec='seconds')} ({zone.key})"


def render_text(
    plan: Plan,
    *,
    color: bool = False,
    release: Release | None = None,
    names: Mapping[str, str] | None = None,
    list_limit: int = LIST_LIMIT,
    lang: str = "en",
    zone: ZoneInfo | None = None,
) -> str:
    """The plan for a terminal (see the module docstring). ``names`` (employee id -> name)
    labels actions whose name the plan does not carry; ``release`` marks the brakes the
    operator's options lift; ``list_limit`` <= 0 lists every unmanaged address; ``lang``
    (en, zh) the headings and totals; ``zone`` the time zone of the plan's time."""
    _ = _Tr(lang)
    style = _styler(color)
    names = names or {}
    lines = [
        style(_("Plan %(short)s", short=plan.checksum[:12]), "bold")
        + "  "
        + _("made %(when)s", when=_made_at(plan, zone)),
        style(
            "  "
            + _("checksum %(checksum)s", checksum=plan.checksum)
            + "\n  "
            + _(
                "mailbox state %(state)s  config %(config)s",
                state=plan.state_fingerprint[:12],
                config=plan.config_fingerprint[:12],
            ),
            "dim",
        ),
        "",
    ]
    lines += _blocked_lines(plan, release, style, _)
    grouped = _grouped(plan)
    for section in SECTIONS:
        actions = grouped[section.key]
        if not actions:
            continue
        head = style(f"{_(section.title)} ({len(actions)})", "bold")
        lines.append(head + (style(f" — {_(section.note)}", "dim") if section.note else ""))
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
            lines.append(style("      " + _("why: %(reason)s", reason=a.reason), "dim"))
        lines.append("")
    if plan.conflicts:
        lines.append(
            style(f"{_('Conflicts')} ({len(plan.conflicts)})", "bold", "magenta")
            + " — "
            + _("the engine will not guess; resolve these in HR or Exmail")
        )
        for c in plan.conflicts:
            lines.append(f"  {style('!', 'magenta', 'bold')} {c.kind.value}: {c.message}")
        lines.append("")
    _listing(lines, "Unmanaged mailboxes", plan.unmanaged,
             "no HR record; left alone", style, list_limit, _)  # fmt: skip
    _listing(lines, "Protected accounts", plan.protected,
             "matched a protected pattern; never touched", style, list_limit, _)  # fmt: skip
    _listing(lines, "Quarantined employees", plan.quarantined,
             "rows with problems in the HR snapshot; not synced, never treated as leavers",
             style, list_limit, _)  # fmt: skip
    _listing(lines, "Held mailboxes", [_held_line(h) for h in plan.held],
             "never disabled, deleted or adopted until HR fixes the row", style,
             list_limit, _)  # fmt: skip
    if plan.actions:
        lines.append(style(_("Plan: "), "bold") + _totals_phrase(plan, lang) + _("."))
    else:
        lines.append(
            style(_("No changes."), "bold", "green") + " " + _("Exmail already follows HR.")
        )
    left = plan.unreleased(release)
    if left:
        lines.append(
            style(_("This plan is blocked: "), "bold", "red") + _release_hint(left, lang) + _(".")
        )
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


def render_html(
    plan: Plan,
    *,
    release: Release | None = None,
    names: Mapping[str, str] | None = None,
    plan_id: int | None = None,
    context: Any = None,
) -> str:
    """One self-contained page for approvers, from :mod:`syncengine.plan_page` (a Jinja2
    template, zh/en catalogues). ``context`` is a :class:`~syncengine.plan_page.ReviewContext`;
    without one, ``names`` and ``plan_id`` make an English page in UTC."""
    from syncengine.plan_page import ReviewContext, render_page

    ctx = context or ReviewContext(names=dict(names or {}), plan_id=plan_id)
    return render_page(plan, release=release, context=ctx)
