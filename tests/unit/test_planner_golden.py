"""The planner's output on realistic directories is pinned, byte for byte.

A seeded generator builds a few thousand people against a few thousand mailboxes with the
changes a real night brings (renames, moves, address changes with old addresses kept as
aliases, HR aliases, leavers with and without a grace period running, rehires, new hires with
generated addresses that clash, unmanaged and protected mailboxes, duplicate addresses,
foreign ext_ids, a department rename). Each case's plan JSON is hashed and compared with
``golden_plans.json``, recorded from the planner before the performance work of issue 14: a
faster planner must produce the same plan, not an equivalent one.

Re-record (only for an intended change of the plan, and say so in the commit):
``SYNCENGINE_RECORD_GOLDEN=1 .venv/bin/pytest tests/unit/test_planner_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

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
from syncengine.plan import Plan, signed
from syncengine.planner import Desired, diff
from syncengine.policy import AliasMode, LeaveAction, Policy

GOLDEN = Path(__file__).with_name("golden_plans.json")
NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
DOMAIN = "example.com"
SURNAMES = "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董单欧阳"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红"
TITLES = ["工程师", "高级工程师", "专员", "主管", "经理", ""]


def world(seed: int, n: int) -> tuple[Desired, MailboxState, dict[str, IdentityLink]]:
    """``n`` people mostly in sync with their mailboxes, then a busy night of changes."""
    rng = random.Random(seed)
    centers = ["研发中心", "销售中心", "财务部", "人力资源部"]
    tree = [Department(c, f"C{i}") for i, c in enumerate(centers)]
    tree += [Department(f"{c}/{t}", f"C{i}T{j}") for i, c in enumerate(centers)
             for j, t in enumerate(["一部", "二部", "平台部"])]  # fmt: skip
    leaves = [d.path for d in tree if "/" in d.path]
    people: list[Person] = []
    boxes: list[Mailbox] = []
    links: dict[str, IdentityLink] = {}
    for i in range(n):
        eid = f"E{i:05d}"
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
        email = f"u{i}@{DOMAIN}" if i % 9 else f"U{i}@Example.COM"  # some in mixed case
        depts = (rng.choice(leaves),) if i % 13 else (rng.choice(leaves), rng.choice(leaves))
        gender = rng.choice(list(Gender))
        aliases = (f"alias{i}@{DOMAIN}",) if i % 11 == 0 else ()
        p = Person(eid, name, email, aliases=aliases, departments=depts,
                   position=rng.choice(TITLES), mobile=f"138{i:08d}", gender=gender)  # fmt: skip
        disabled = i % 17 == 0
        box_aliases = aliases + ((f"old{i}@{DOMAIN}",) if i % 7 == 0 else ())
        if i % 97 == 0:  # a full mailbox of aliases
            box_aliases = tuple(f"full{i}.{k}@{DOMAIN}" for k in range(5))
        boxes.append(Mailbox(email.lower(), name, eid if i % 23 else "", tuple(reversed(depts)),
                             box_aliases, p.position, "", p.mobile, gender,
                             enabled=not disabled))  # fmt: skip
        if disabled:  # a leaver from before: in grace, or over it
            p = replace(p, status=Status.TERMINATED)
            since = NOW.date() - timedelta(days=rng.choice([3, 45]))
            links[eid] = IdentityLink(eid, email, NOW - timedelta(days=400), since)
        elif i % 5:
            links[eid] = IdentityLink(eid, email.lower(), NOW - timedelta(days=300))
        people.append(p)

    former: dict[str, frozenset[str]] = {}
    for i in rng.sample(range(n), n // 5):  # the night's changes
        p = people[i]
        kind = rng.randrange(12)
        if kind == 0:
            p = replace(p, name=p.name + "新")
        elif kind == 1:
            p = replace(p, departments=(rng.choice(leaves),))
        elif kind == 2:
            p = replace(p, email=f"new.u{i}@{DOMAIN}")
            former[p.employee_id] = frozenset({f"u{i}@{DOMAIN}"})
        elif kind == 3:
            p = replace(p, status=Status.TERMINATED)
        elif kind == 4:
            p = replace(p, status=Status.LEAVE)
        elif kind == 5:
            p = replace(p, status=Status.ACTIVE, position="首席" + p.position)  # rehire
        elif kind == 6:
            p = replace(p, aliases=(*p.aliases, f"extra{i}@{DOMAIN}"))
        elif kind == 7:
            p = replace(p, email=f"u{(i + 1) % n}@{DOMAIN}")  # someone else's address
        elif kind == 8:
            p = replace(p, gender=Gender.UNSET, tel=f"010-{i:08d}")
        elif kind == 9:
            p = replace(p, start_date=NOW.date() + timedelta(days=rng.choice([3, 30])))
        elif kind == 10:
            p = replace(p, end_date=NOW.date() - timedelta(days=1))
        else:
            p = replace(p, email=None)  # HR lost the address: the link keeps it
        people[i] = p
    for j in range(n // 20):  # new hires, most without an address (pinyin, clashes)
        name = rng.choice(SURNAMES[:6]) + rng.choice(GIVEN[:4])
        hire_email = f"hire{j}@{DOMAIN}" if j % 4 == 0 else None
        people.append(Person(f"N{j:05d}", name, hire_email, departments=(rng.choice(leaves),),
                             start_date=date(2026, 11, 1)))  # fmt: skip
    for k in range(n // 50):  # unmanaged, protected and unlinked mailboxes
        boxes.append(Mailbox(f"svc{k}@{DOMAIN}", f"服务{k}", departments=(leaves[0],)))
    boxes.append(Mailbox(f"admin@{DOMAIN}", "管理员"))
    boxes.append(Mailbox(f"zhangwei@{DOMAIN}", "张伟", "X999"))
    for k in range(n // 100):  # links of people HR no longer has
        eid = f"G{k:05d}"
        links[eid] = IdentityLink(eid, f"gone{k}@{DOMAIN}", NOW - timedelta(days=500))
        if k % 2:
            boxes.append(Mailbox(f"gone{k}@{DOMAIN}", f"离职{k}", eid))
    renamed = [replace(d, path=d.path.replace("财务部", "财务中心", 1)) for d in tree]
    people = [
        replace(p, departments=tuple(x.replace("财务部", "财务中心", 1) for x in p.departments))
        for p in people
    ]
    rng.shuffle(people)
    rng.shuffle(boxes)
    desired = Desired(
        people=tuple(people),
        departments=tuple(renamed),
        quarantined=frozenset({"E00003"}),
        previous_size=n,
        previous_departments=tuple(tree),
        former_addresses=former,
        former=frozenset({"X999"}),
    )
    parties = (*(Party(d.path) for d in tree), Party("外包"))
    groups = (f"all@{DOMAIN}", f"hire4@{DOMAIN}")
    return desired, MailboxState(tuple(boxes), parties, groups), links


POLICIES = {
    "default": Policy(domain=DOMAIN),
    "exact": Policy(
        domain=DOMAIN,
        alias_mode=AliasMode.EXACT,
        disable_unmanaged=True,
        delete_empty_departments=True,
        leave_action=LeaveAction.DISABLE,
    ),
    "ignore": Policy(
        domain=DOMAIN,
        alias_mode=AliasMode.IGNORE,
        set_ext_id=False,
        managed_fields=frozenset({"name", "departments"}),
    ),
}
CASES = [(seed, n, name) for seed, n in ((1, 3000), (2, 600)) for name in POLICIES]


def plan_digest(seed: int, n: int, policy: str, only: list[str] | None = None) -> dict[str, object]:
    desired, state, links = world(seed, n)
    plan = diff(desired, state, links, POLICIES[policy], NOW, config_fingerprint="cfg",
                only=only)  # fmt: skip
    text = plan.to_json()
    return {
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "checksum": plan.checksum,
        "summary": {k: v for k, v in plan.summary.items() if v},
        "conflicts": len(plan.conflicts),
        "blocked_reasons": [r.brake for r in plan.blocked_reasons],
    }


def _case_id(seed: int, n: int, policy: str) -> str:
    return f"seed{seed}-n{n}-{policy}"


def _golden() -> dict[str, object]:
    return json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}


@pytest.mark.parametrize(("seed", "n", "policy"), CASES, ids=[_case_id(*c) for c in CASES])
def test_plan_matches_the_recorded_plan(seed: int, n: int, policy: str) -> None:
    got = plan_digest(seed, n, policy)
    key = _case_id(seed, n, policy)
    if os.environ.get("SYNCENGINE_RECORD_GOLDEN"):
        golden = _golden()
        golden[key] = got
        GOLDEN.write_text(json.dumps(golden, ensure_ascii=False, indent=1, sort_keys=True)
                          + "\n", encoding="utf-8")  # fmt: skip
    want = _golden().get(key)
    assert want is not None, f"{GOLDEN.name} has no entry {key}; record it (see module doc)"
    assert got == want, f"the plan of {key} changed"


def test_targeted_plan_matches_the_recorded_plan() -> None:
    """``plan --only``: explanations and the kept dependencies are pinned too."""
    only = ["E00007", "E00010", "N00001", "G00001", "E00003", "E00099"]
    got = plan_digest(2, 600, "default", only)
    if os.environ.get("SYNCENGINE_RECORD_GOLDEN"):
        golden = _golden()
        golden["only"] = got
        GOLDEN.write_text(json.dumps(golden, ensure_ascii=False, indent=1, sort_keys=True)
                          + "\n", encoding="utf-8")  # fmt: skip
    assert got == _golden().get("only"), "the targeted plan changed"


def test_the_fixture_is_busy() -> None:
    """The golden cases are only worth something if the night exercises the planner."""
    summary = plan_digest(1, 3000, "exact")["summary"]
    assert isinstance(summary, dict)
    for kind in ("create_user", "update_user", "disable_user", "delete_user", "swap_primary",
                 "add_alias", "enable_user", "move_department"):  # fmt: skip
        assert summary.get(kind), f"no {kind} in the busy night: {summary}"


def test_plan_json_is_made_once_and_never_stale() -> None:
    """The plan text is kept on the plan; a changed copy (signed) has its own."""
    desired, state, links = world(3, 200)
    plan = diff(desired, state, links, POLICIES["default"], NOW)
    text = plan.to_json()
    assert plan.to_json() is text
    other = signed(plan, b"key")
    assert other.to_json() != text
    assert json.loads(other.to_json())["signature"] == other.signature != ""
    assert Plan.from_json(other.to_json()) == other
