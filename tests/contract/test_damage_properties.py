"""Issue 10's property: no damage to an HR file makes a person who is not a leaver disabled.

For a random GBK CSV export (Exmail already following it: every person has a mailbox, some
linked, some only carrying their id as ``ext_id``) and one to three random damages (a cut in
the middle of a row, a stray quote anywhere, a deleted delimiter, a blanked id, a line broken
in two, invalid bytes), the real CSV connector reads the damaged file from disk, mapping
checks it, the pure planner plans against the converged directory, and then

* the source is refused (SourceError), or
* the plan is blocked by a brake, or
* every mailbox the plan disables or deletes belongs to someone HR marks as a leaver in the
  undamaged file.

A whole missing line is not among the damages: it is indistinguishable from a leaver and the
shrink brake covers it. Settings: ``max_examples=300, deadline=None`` (about 10 s here).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine.connectors.base import make_connector
from syncengine.connectors.config import MappingConfig
from syncengine.connectors.mapping import map_records
from syncengine.domain import IdentityLink, Mailbox, MailboxState
from syncengine.errors import SourceError
from syncengine.plan import ActionKind
from syncengine.planner import Desired, diff
from syncengine.policy import Policy

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
NAMES = ["王芳", "李娜", "张伟", "欧阳娜娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰"]
DEPTS = ["研发中心/平台部", "研发中心/数据部", "销售中心", "财务部"]
HEADER = ["工号", "姓名", "邮箱", "部门", "职位", "状态"]
MAPPING = MappingConfig.model_validate(
    {
        "employee_id": "工号",
        "name": "姓名",
        "email": "邮箱",
        "departments": "部门",
        "position": "职位",
        "status": "状态",
    }
)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def exports(draw: st.DrawFn) -> tuple[list[list[str]], set[str]]:
    """Rows (without the header) and the addresses of the leavers."""
    n = draw(st.integers(3, 10))
    names = draw(st.permutations(NAMES))
    rows: list[list[str]] = []
    leavers: set[str] = set()
    for i in range(n):
        email = f"p{i}@example.com"
        status = draw(st.sampled_from(["在职", "在职", "在职", "离职"]))
        if status == "离职":
            leavers.add(email)
        rows.append([f"E{i:03d}", names[i], email, draw(st.sampled_from(DEPTS)),
                     draw(st.sampled_from(["工程师", "经理", ""])), status])  # fmt: skip
    return rows, leavers


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue()


DAMAGES = ["cut", "quote", "delimiter", "blank_id", "break", "bytes"]


def damage(text: str, rows: list[list[str]], kind: str, pick: int, data: bytes) -> str | bytes:
    """One damage; ``pick`` chooses where. ``bytes`` returns the damaged encoded file."""
    body = text.index("\r\n") + 2  # never touch the header
    starts = [i + 2 for i in range(body - 2, len(text)) if text.startswith("\r\n", i)]
    lines: list[tuple[int, int]] = []
    for start in starts:
        end = text.find("\r\n", start)
        end = len(text) if end == -1 else end
        if end - start >= 2:
            lines.append((start, end))
    if kind in ("cut", "break") and not lines:
        return text
    if kind == "cut":  # strictly inside a data row's content
        start, end = lines[pick % len(lines)]
        return text[: start + 1 + pick % max(end - start - 1, 1)]
    if kind == "quote":
        at = body + pick % (len(text) - body)
        return text[:at] + '"' + text[at:]
    if kind == "delimiter":
        commas = [i for i in range(body, len(text)) if text[i] == ","]
        if not commas:
            return text
        at = commas[pick % len(commas)]
        return text[:at] + text[at + 1 :]
    if kind == "blank_id":
        row = rows[pick % len(rows)]
        return text.replace(f"\r\n{row[0]},", "\r\n,", 1)
    if kind == "break":
        start, end = lines[pick % len(lines)]
        at = start + 1 + pick % max(end - start - 1, 1)
        return text[:at] + "\r\n" + text[at:]
    encoded = text.encode("gb18030")
    at = len(encoded) // 3 + pick % (len(encoded) - len(encoded) // 3)
    return encoded[:at] + data + encoded[at:]


def directory(
    rows: list[list[str]], linked: list[bool]
) -> tuple[MailboxState, dict[str, IdentityLink]]:
    """Exmail following the undamaged export: a mailbox per person, enabled."""
    boxes = []
    links: dict[str, IdentityLink] = {}
    for row, link in zip(rows, linked, strict=False):
        eid, name, email, dept, position, _ = row
        boxes.append(Mailbox(email=email, name=name, ext_id=eid, departments=(dept,),
                             position=position))  # fmt: skip
        if link:
            links[eid] = IdentityLink(eid, email, first_seen=NOW)
    return MailboxState(mailboxes=tuple(boxes)), links


@SETTINGS
@given(
    export=exports(),
    damages=st.lists(
        st.tuples(st.sampled_from(DAMAGES), st.integers(0, 10_000)), min_size=1, max_size=3
    ),
    bad=st.sampled_from([b"\xff", b"\x80\xff", b"\xfe\xfe\xff"]),
    linked=st.lists(st.booleans(), min_size=10, max_size=10),
    disable_unmanaged=st.booleans(),
)
def test_damage_never_disables_someone_who_is_not_a_leaver(
    tmp_path_factory: pytest.TempPathFactory,
    export: tuple[list[list[str]], set[str]],
    damages: list[tuple[str, int]],
    bad: bytes,
    linked: list[bool],
    disable_unmanaged: bool,
) -> None:
    rows, leavers = export
    text: str | bytes = csv_text(rows)
    for kind, pick in damages:
        if isinstance(text, bytes):
            break  # invalid bytes end the damaging: the file is refused anyway
        text = damage(text, rows, kind, pick, bad)
    folder = tmp_path_factory.mktemp("damage")
    path = folder / "hr.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("gb18030"))

    connector = make_connector({"type": "csv", "path": "hr.csv"}, folder)
    try:
        result = map_records(connector.records(), MAPPING, domains=["example.com"])
    except SourceError:
        return  # refused: the last good snapshot stays current
    actual, links = directory(rows, linked)
    desired = Desired(
        people=result.people,
        departments=result.departments,
        quarantined=result.quarantined,
        previous_size=len(rows),
        held_reasons=result.held_reasons(),
        unidentified=result.unidentified,
    )
    plan = diff(desired, actual, links, Policy(disable_unmanaged=disable_unmanaged), NOW)
    if plan.blocked_reasons:
        return
    removed = {
        a.target
        for a in plan.actions
        if a.kind in (ActionKind.DISABLE_USER, ActionKind.DELETE_USER)
    }
    assert removed <= leavers, (
        f"disabled {sorted(removed - leavers)} after damage {damages}:\n{text!r}\n"
        f"problems: {[str(p) for p in result.problems]}"
    )
