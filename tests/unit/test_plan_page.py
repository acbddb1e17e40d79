"""The plan page's language, values and catalogues (issue 12), on the plan of every kind."""

from __future__ import annotations

import gettext
import io
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from syncengine import approvals, plan_page, render
from syncengine.hooks import review as review_pages
from syncengine.plan_page import ReviewContext
from tests.unit.test_render import every_kind_plan

LOCALE = Path(plan_page.__file__).with_name("locale")
PO = LOCALE / "zh" / "LC_MESSAGES" / "syncengine.po"
MO = PO.with_suffix(".mo")
TEMPLATE = Path(plan_page.__file__).with_name("templates") / "plan.html.j2"


def used_message_ids() -> set[str]:
    """Every message the page asks gettext for: the template's and the module's ``_()``
    calls, the section titles and notes, and the field names it labels."""
    ids = set(re.findall(r'_\("((?:[^"\\]|\\.)*)"', TEMPLATE.read_text(encoding="utf-8")))
    source = Path(plan_page.__file__).read_text(encoding="utf-8")
    ids |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', source))
    ids |= {s.title for s in render.SECTIONS} | {s.note for s in render.SECTIONS if s.note}
    ids |= set(plan_page._FIELDS)
    pages = Path(review_pages.__file__).read_text(encoding="utf-8")
    ids |= set(re.findall(r'(?:\._t|(?<![\w.])t)\("((?:[^"\\]|\\.)*)"', pages))
    ids |= {review_pages.CSRF_REFUSED, review_pages.THROTTLED, approvals.APPROVED}
    ids |= {approvals.REJECTED}
    text = Path(render.__file__).read_text(encoding="utf-8")
    ids |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"', text))
    ids |= set(re.findall(r"_\('((?:[^'\\]|\\.)*)'", text))
    for singular, _plural in re.findall(r'_\.n\(\s*"([^"]*)",\s*"([^"]*)"', text):
        ids |= {singular}
    for title, note in re.findall(r'_listing\(\s*lines, "([^"]+)", [^"]+"([^"]+)"', text):
        ids |= {title, note}
    ids |= {"mailbox state %(state)s  config %(config)s"}
    return ids


def test_every_message_has_a_chinese_translation() -> None:
    with PO.open("rb") as fh:
        catalog = read_po(fh)
    translated = {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in catalog if m.id}
    missing = sorted(i for i in used_message_ids() if not translated.get(i))
    assert not missing, f"no zh translation in {PO} for: {missing}"


def test_the_compiled_catalogue_is_the_po_file() -> None:
    """Edit the .po, then: pybabel compile -d syncengine/locale -D syncengine"""
    with PO.open("rb") as fh:
        catalog = read_po(fh)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    fresh = gettext.GNUTranslations(buf)
    with MO.open("rb") as fh:
        committed = gettext.GNUTranslations(fh)
    assert fresh._catalog == committed._catalog  # type: ignore[attr-defined]


def page(lang: str) -> str:
    ctx = ReviewContext(
        names={"E0002": "李四"},
        quarantine={},
        lang=lang,
        zone=ZoneInfo("Asia/Shanghai"),
        plan_id=3,
    )
    return render.render_html(every_kind_plan(), context=ctx)


def test_chinese_page_labels_values_and_local_time() -> None:
    zh = page("zh")
    assert '<html lang="zh-CN">' in zh
    assert "要删除的邮箱" in zh and "概览" in zh and "筛选人员和部门" in zh
    assert "被 1 个安全阈值拦截" in zh or "被 2 个安全阈值拦截" in zh
    assert "Mailboxes to delete" not in zh and "Summary" not in zh
    # 2026-11-29 09:30 UTC is 17:30 in Shanghai.
    assert "2026-11-29 17:30:00 (Asia/Shanghai)" in zh
    shown = re.sub(r"<[^>]+>", "", re.sub(r"<(script|style)>.*?</\1>", "", zh, flags=re.S))
    assert "None" not in shown and "('" not in shown  # no Python repr in what is shown


def test_english_page_and_badge() -> None:
    en = page("en")
    assert '<html lang="en">' in en and "Mailboxes to delete" in en
    plan = every_kind_plan()
    t = render.totals(plan)
    badge = re.search(r'id="badge">(.*?)</span></h1>', en, re.S)
    assert badge is not None
    text = re.sub(r"<[^>]+>", "", badge.group(1))
    assert f"+{t['to create']}" in text and f"~{t['to change']}" in text
    assert f"−{t['to disable'] + t['to delete']}" in text and "blocked" in text


def test_values_as_people_read_them() -> None:
    fmt = plan_page._value_formatter(plan_page.translations("zh").gettext)
    assert fmt(None, "departments") == "(无)"
    assert fmt(("研发中心/平台部",), "departments") == "研发中心/平台部"
    assert fmt(("a", "b"), "aliases") == "a、b"
    assert fmt(1, "gender") == "男" and fmt(2, "gender") == "女"
    assert fmt(True, "enabled") == "是" and fmt("", "tel") == "(空)"
    en = plan_page._value_formatter(plan_page.translations("en").gettext)
    assert en(1, "gender") == "male" and en(None, "x") == "(none)"


def test_explanations_show_values_without_python_reprs() -> None:
    from syncengine.domain import Gender, Mailbox, MailboxState, Party, Person
    from syncengine.planner import Desired, diff
    from syncengine.policy import Policy
    from tests.unit.test_render import NOW

    people = (
        Person("E0002", "李四", "lisi@example.com", departments=("研发中心/平台部",),
               gender=Gender.MALE),
    )  # fmt: skip
    actual = MailboxState(
        mailboxes=(Mailbox("lisi@example.com", "李四", "E0002", ()),),
        parties=(Party("研发中心"), Party("研发中心/平台部")),
    )
    plan = diff(Desired(people), actual, {}, Policy(), NOW, only=["E0002"])
    steps = "\n".join(plan.explanations["E0002"])
    assert "('" not in steps and "None" not in steps, steps
    assert "gender: unset (0) → male (1)" in steps
    assert "departments: [] → [研发中心/平台部]" in steps


def test_text_and_summary_in_chinese_with_local_time() -> None:
    plan = every_kind_plan()
    text = render.render_text(plan, lang="zh", zone=ZoneInfo("Asia/Shanghai"))
    assert "要删除的邮箱" in text and "原因：" in text and "已拦截：" in text
    assert "生成于 2026-11-29 17:30:00+08:00 (Asia/Shanghai)" in text
    assert "Mailboxes to delete" not in text and "why:" not in text
    line = render.summary_line(plan, lang="zh")
    assert line.startswith(f"计划 {plan.checksum[:12]}：新建 3，修改 6，停用 1，删除 3")
    assert "安全阈值拦截" in line
    # English stays as it was.
    assert render.summary_line(plan).startswith(f"Plan {plan.checksum[:12]}: 3 to create")
    assert "made 2026-11-29 09:30:00+00:00" in render.render_text(plan)
