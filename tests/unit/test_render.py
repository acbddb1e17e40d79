"""Rendering plans: text groups and totals, colours only when asked, the JSON file, the HTML
page (escaped user data, self-contained), explanations. Plans are built with the real
:func:`syncengine.plan.make_plan` and, for explanations, the real planner."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from syncengine import render
from syncengine.domain import Gender, Mailbox, MailboxState, Party, Person, UserUpdate
from syncengine.plan import (
    Action,
    ActionKind,
    BlockedReason,
    Conflict,
    ConflictKind,
    GroupRecord,
    LinkRecord,
    PasswordPolicy,
    Plan,
    Release,
    ReleaseKind,
    action_key,
    make_plan,
)
from syncengine.planner import Desired, diff
from syncengine.policy import Policy

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
EVIL = "<script>alert('x')</script>"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def act(kind: ActionKind, target: str, **kw: object) -> Action:
    key = action_key(kind, str(kw.get("employee_id") if kind is ActionKind.LINK else target))
    return Action(key=key, kind=kind, target=target, reason=str(kw.pop("reason", "because")), **kw)  # type: ignore[arg-type]


def every_kind_plan(*, blocked: bool = True, evil_name: str = "孙七") -> Plan:
    dept = act(
        ActionKind.CREATE_DEPARTMENT,
        "研发中心/数据部",
        reason="HR has this department and Exmail does not",
    )
    move = act(
        ActionKind.MOVE_DEPARTMENT,
        "市场部",
        new_path="市场中心",
        changes={"path": ("市场部", "市场中心")},
    )
    create = act(
        ActionKind.CREATE_USER,
        "sunqi@example.com",
        employee_id="E0005",
        mailbox=Mailbox("sunqi@example.com", evil_name, "E0005", ("研发中心/数据部",)),
        changes={
            "email": (None, "sunqi@example.com"),
            "name": (None, evil_name),
            "departments": (None, ("研发中心/数据部",)),
        },
        depends_on=(dept.key,),
        password=PasswordPolicy(delivery="file"),
        link=LinkRecord("E0005", "sunqi@example.com"),
    )
    update = act(
        ActionKind.UPDATE_USER,
        "lisi@example.com",
        employee_id="E0002",
        changes={"position": ("工程师", "高级工程师"), "gender": (0, 2)},
        update=UserUpdate(position="高级工程师", gender=Gender.FEMALE),
        reason="HR differs in gender, position",
    )
    add = act(
        ActionKind.ADD_ALIAS,
        "wangwu@example.com",
        employee_id="E0003",
        alias="wu.wang@example.com",
        changes={"aliases": ((), ("wu.wang@example.com",))},
    )
    swap = act(
        ActionKind.SWAP_PRIMARY,
        "wangwu@example.com",
        employee_id="E0003",
        alias="wu.wang@example.com",
        depends_on=(add.key,),
        changes={"email": ("wangwu@example.com", "wu.wang@example.com")},
    )
    enable = act(
        ActionKind.ENABLE_USER,
        "zhaoliu@example.com",
        employee_id="E0004",
        changes={"enabled": (False, True)},
    )
    disable = act(
        ActionKind.DISABLE_USER,
        "zhouba@example.com",
        employee_id="E0006",
        changes={"enabled": (True, False)},
        reason="leaver: end date has passed",
    )
    delete = act(
        ActionKind.DELETE_USER,
        "wujiu@example.com",
        employee_id="E0007",
        changes={"exists": (True, False)},
    )
    link = act(
        ActionKind.LINK,
        "zhangsan@example.com",
        employee_id="E0001",
        changes={"link": (None, "zhangsan@example.com")},
    )
    unlink = act(ActionKind.UNLINK, "gone@example.com", employee_id="E0008")
    drop = act(ActionKind.DELETE_DEPARTMENT, "旧部门", depends_on=(delete.key,))
    group = act(
        ActionKind.CREATE_GROUP,
        "dept-103@example.com",
        depends_on=(create.key,),
        changes={"members": ((), ("sunqi@example.com",)), "name": (None, evil_name)},
        group=GroupRecord("dept:103", "dept-103@example.com", evil_name, ("sunqi@example.com",)),
        reason="department 研发中心/数据部 has 1 member(s) and no group yet",
    )
    regroup = act(
        ActionKind.UPDATE_GROUP,
        "dept-101@example.com",
        changes={"added": ((), ("lisi@example.com",)), "removed": (("zhouba@example.com",), ())},
        group=GroupRecord("dept:101", "dept-101@example.com", "平台部", ("lisi@example.com",),
                          add=("lisi@example.com",), remove=("zhouba@example.com",)),
    )  # fmt: skip
    ungroup = act(
        ActionKind.DELETE_GROUP,
        "dept-9@example.com",
        changes={"members": (("keeper@example.com",), ())},
        group=GroupRecord("dept:9", "dept-9@example.com", "旧部门", ()),
    )
    reasons = (
        [
            BlockedReason(
                "source_shrank",
                "the HR source shrank from 10 to 2 people",
                ReleaseKind.ALLOW_REMOVALS,
                needed=2,
            )
        ]
        if blocked
        else []
    )
    return make_plan(
        created_at=NOW,
        config_fingerprint="c" * 64,
        state_fingerprint="s" * 64,
        actions=[
            dept,
            move,
            create,
            update,
            add,
            swap,
            enable,
            link,
            disable,
            delete,
            unlink,
            drop,
            group,
            regroup,
            ungroup,
        ],
        conflicts=[
            Conflict(
                ConflictKind.ADDRESS_TAKEN,
                f"employee E0009 wants {EVIL}@x",
                ("E0009",),
                ("a@example.com",),
            )
        ],
        unmanaged=["stray@example.com"],
        protected=["admin@example.com"],
        quarantined=["E0042"],
        blocked_reasons=reasons,
    )


# --- text -----------------------------------------------------------------------------------


def test_every_kind_has_exactly_one_section() -> None:
    placed = [k for s in render.SECTIONS for k in s.kinds]
    assert sorted(placed) == sorted(ActionKind) and len(placed) == len(set(placed))


def test_text_groups_blocked_first_then_sections_then_totals() -> None:
    text = render.render_text(every_kind_plan())
    headings = [
        "BLOCKED: 1 safety brake stops this plan from being applied",
        "Departments to create (1)",
        "Departments to move or rename (1)",
        "Mailboxes to create (1)",
        "Mailboxes to update (1)",
        "Address changes (2)",
        "Mailboxes to enable (1)",
        "Mailboxes to disable (1)",
        "Mailboxes to delete (1)",
        "Departments to delete (1)",
        "Mail groups to create (1)",
        "Mail groups to change (1)",
        "Mail groups to delete (1)",
        "Identity links to record (no Exmail change) (2)",
        "Conflicts (1)",
        "Unmanaged mailboxes (1)",
        "Protected accounts (1)",
        "Quarantined employees (1)",
        "Plan: 3 to create, 6 to change, 1 to disable, 3 to delete, 2 link records.",
        "This plan is blocked: after review pass --allow-removals 2, or --force.",
    ]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    assert "source_shrank: the HR source shrank from 10 to 2 people" in text
    assert "to release: review the plan, then pass --allow-removals 2 (or --force)" in text


def test_text_shows_field_diffs_and_labels() -> None:
    text = render.render_text(every_kind_plan(), names={"E0002": "李四"})
    assert "  ~ lisi@example.com  E0002 李四\n      gender: unset (0) → female (2)\n" in text
    assert '      position: "工程师" → "高级工程师"\n' in text
    assert "  ~ 市场部 → 市场中心" in text
    assert "wangwu@example.com → wu.wang@example.com (old address kept as alias)" in text
    assert "      enabled: no → yes" in text
    # A create lists the new values only, and says how the password is handled (never shown).
    assert "      departments: [研发中心/数据部]\n" in text
    assert (
        "password: generated at apply (16 characters, must change at first login), "
        "delivered via file" in text
    )
    assert "      why: leaver: end date has passed" in text


def test_colour_only_when_asked_and_same_text_underneath() -> None:
    plan = every_kind_plan()
    plain = render.render_text(plan)
    coloured = render.render_text(plan, color=True)
    assert not ANSI.search(plain)
    assert "\x1b[31m" in coloured and "\x1b[32m" in coloured and "\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == plain


def test_released_brake_is_shown_as_released() -> None:
    plan = every_kind_plan()
    text = render.render_text(plan, release=Release(allow_removals=2))
    assert "released for this run" in text and "This plan is blocked" not in text
    assert "BLOCKED" not in text
    # Too small a release leaves it blocked.
    assert "BLOCKED" in render.render_text(plan, release=Release(allow_removals=1))
    assert "BLOCKED" not in render.render_text(plan, release=Release(force=True))


def test_no_changes() -> None:
    plan = make_plan(created_at=NOW, config_fingerprint="c", state_fingerprint="s", actions=[])
    text = render.render_text(plan)
    assert "No changes." in text and "Plan:" not in text
    assert render.summary_line(plan) == f"Plan {plan.checksum[:12]}: no changes"


def test_long_lists_are_cut_in_text_only() -> None:
    many = [f"u{i:03d}@example.com" for i in range(120)]
    plan = make_plan(
        created_at=NOW, config_fingerprint="c", state_fingerprint="s", actions=[], unmanaged=many
    )
    text = render.render_text(plan, list_limit=10)
    assert "u009@example.com" in text and "u010@example.com" not in text
    assert "... and 110 more (see the JSON plan)" in text
    assert "u119@example.com" in render.render_text(plan, list_limit=0)
    assert "u119@example.com" in render.render_html(plan)


def test_summary_line_and_totals() -> None:
    plan = every_kind_plan()
    t = render.totals(plan)
    assert t == {
        "to create": 3,
        "to change": 6,
        "to disable": 1,
        "to delete": 3,
        "links": 2,
        "actions": 15,
        "conflicts": 1,
        "unmanaged": 1,
        "protected": 1,
        "quarantined": 1,
    }
    line = render.summary_line(plan)
    assert line.startswith(f"Plan {plan.checksum[:12]}: 3 to create, 6 to change")
    assert line.endswith("BLOCKED by 1 brake (after review pass --allow-removals 2, or --force)")
    assert "1 brake released" in render.summary_line(plan, Release(force=True))


def test_json_is_the_plan_file() -> None:
    plan = every_kind_plan(evil_name=EVIL)
    assert Plan.from_json(render.render_json(plan)) == plan


# --- HTML -----------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects tags, the text of the page and the rows of each action table."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.section: str | None = None
        self.rows: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        self.attrs.append(a)
        if tag == "details":  # each section is one collapsible block with one table
            self.section = a.get("data-section")
        if tag == "tr" and self.section:
            self.rows[self.section] = self.rows.get(self.section, 0) + 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def test_html_escapes_user_data() -> None:
    page = render.render_html(every_kind_plan(evil_name=EVIL), names={"E0002": EVIL})
    assert page.lower().count("<script") == 1  # the page's own filter script, nothing else
    assert "&lt;script&gt;alert(" in page
    parsed = parse(page)
    assert parsed.tags.count("script") == 1
    assert EVIL in "".join(parsed.text)  # shown as text, not run


def test_html_is_self_contained_with_blocked_reasons_first() -> None:
    plan = every_kind_plan()
    page = render.render_html(plan, plan_id=7)
    parsed = parse(page)
    assert parsed.tags.count("style") == 1
    assert not {"link", "img", "iframe", "object"} & set(parsed.tags)
    assert parsed.tags.count("script") == 1  # inline: the filter
    for attrs in parsed.attrs:
        for name in ("src", "href"):
            assert name not in attrs
    assert "http://" not in page and "https://" not in page and "url(" not in page
    # Header, blocked reasons before the summary and before any action table.
    assert page.index(plan.checksum) < page.index('id="blocked"') < page.index('id="summary"')
    assert page.index('id="summary"') < page.index('data-section="users_delete"')
    # Removals come first, then the rest in the text's order.
    assert page.index('data-section="departments_delete"') < page.index(
        'data-section="departments_create"'
    )
    assert "#7" in page and "s" * 64 in page and "c" * 64 in page
    assert "to release: review the plan, then pass --allow-removals 2 (or --force)" in page
    # One table per kind group, one row per action plus the header row.
    grouped = {s.key: sum(plan.count(k) for k in s.kinds) for s in render.SECTIONS}
    assert parsed.rows == {k: n + 1 for k, n in grouped.items() if n}
    assert '<td class="count" data-key="to create">3</td>' in page


def test_html_without_brakes_or_changes() -> None:
    released = render.render_html(every_kind_plan(), release=Release(force=True))
    assert 'class="released"' in released and 'class="blocked"' not in released
    empty = make_plan(created_at=NOW, config_fingerprint="c", state_fingerprint="s", actions=[])
    assert 'id="nochanges"' in render.render_html(empty)
    assert 'id="blocked"' not in render.render_html(every_kind_plan(blocked=False))


# --- explanations ---------------------------------------------------------------------------


def test_explanation_from_the_real_planner() -> None:
    people = (
        Person("E0002", "李四", "lisi@example.com", departments=("研发中心/平台部",)),
        Person("E0005", "孙七", "sunqi@example.com", departments=("研发中心",)),
    )
    actual = MailboxState(
        mailboxes=(Mailbox("lisi@example.com", "李四", "E0002", ("研发中心/移动部",)),),
        parties=(Party("研发中心"), Party("研发中心/平台部"), Party("研发中心/移动部")),
    )
    plan = diff(Desired(people), actual, {}, Policy(), NOW, only=["E0002", "E0404"])
    text = render.render_explanation(plan, names={"E0002": "李四"})
    lisi, missing = text.split("Employee E0404")
    assert lisi.startswith("Employee E0002 (李四)\n")
    assert "   1. match: lisi@example.com by ext_id" in lisi
    assert "   2. lifecycle: active" in lisi
    assert "=> 1 action:" in lisi
    assert "departments: [研发中心/移动部] → [研发中心/平台部]" in lisi
    assert "sunqi" not in text  # nobody else
    assert "=> no action" in missing
    assert "No explanation" in render.render_explanation(every_kind_plan())
    assert "Explanations" in render.render_html(plan)


def test_render_module_is_pure() -> None:
    source = Path(render.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = {"click", "sqlalchemy", "httpx", "starlette", "os", "pathlib", "time"}
    assert not imported & forbidden
    assert not {m for m in imported if m.startswith("syncengine.")} - {
        "syncengine.plan",
        "syncengine.plan_page",
        "syncengine.translations",
    }, "render.py should need nothing but the Plan (its page module and catalogues)"


def test_plan_page_module_is_pure() -> None:
    from syncengine import plan_page

    source = Path(plan_page.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = {"click", "sqlalchemy", "httpx", "starlette", "os", "time", "random"}
    assert not imported & forbidden
    assert {m for m in imported if m.startswith("syncengine.")} <= {
        "syncengine.plan",
        "syncengine.render",
        "syncengine.translations",
    }


@pytest.mark.parametrize(
    "value,field,shown",
    [
        (None, "", "(none)"),
        ("", "", '""'),
        (("a", "b"), "", "[a, b]"),
        ((), "", "[]"),
        (True, "", "yes"),
        (2, "gender", "female (2)"),
        (3, "", "3"),
        ('say "hi"', "", r'"say \"hi\""'),
    ],
)
def test_format_value(value: object, field: str, shown: str) -> None:
    assert render.format_value(value, field) == shown  # type: ignore[arg-type]
