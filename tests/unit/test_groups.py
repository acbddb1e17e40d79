"""Table tests of the pure group planner (:mod:`syncengine.groups`) over real user plans made
by :func:`syncengine.planner.diff`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest

from syncengine.config import parse_config
from syncengine.domain import Department, IdentityLink, Mailbox, MailboxState, Person, Status
from syncengine.errors import ConfigError
from syncengine.groups import (
    GroupPlan,
    GroupRules,
    OwnedGroup,
    plan_groups,
    render_address,
    with_groups,
)
from syncengine.plan import ActionKind, ConflictKind, Plan, Release
from syncengine.planner import Desired, diff
from syncengine.policy import Brakes, Policy

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
TODAY = NOW.date()
POLICY = Policy(domain="x.com", brakes=Brakes(min_existing=1000))
RULES = GroupRules(template="dept-{code}@x.com", keeper="keeper@x.com")
DEPTS = (Department("研发", "10"), Department("研发/平台", "101"), Department("市场", "20"))
SEEN = datetime(2026, 1, 1, tzinfo=UTC)


def person(eid: str, dept: str, status: Status = Status.ACTIVE) -> Person:
    return Person(eid, f"name {eid}", f"{eid.lower()}@x.com", departments=(dept,), status=status)


def mailbox(eid: str, dept: str) -> Mailbox:
    return Mailbox(f"{eid.lower()}@x.com", f"name {eid}", ext_id=eid, departments=(dept,))


def world(
    people: list[Person], *, existing: list[str] | None = None
) -> tuple[Desired, MailboxState, dict[str, IdentityLink], Plan]:
    """HR ``people``; Exmail has a mailbox (and link) for each of ``existing`` (default all)."""
    have = {p.employee_id for p in people} if existing is None else set(existing)
    by_id = {p.employee_id: p for p in people}
    boxes = tuple(
        mailbox(e, by_id[e].departments[0] if e in by_id else "市场") for e in sorted(have)
    )
    state = MailboxState(mailboxes=boxes, parties=())
    links = {m.ext_id: IdentityLink(m.ext_id, m.email, SEEN) for m in boxes}
    desired = Desired(people=tuple(people), departments=DEPTS)
    return desired, state, links, diff(desired, state, links, POLICY, NOW)


def run(
    people: list[Person],
    owned: Sequence[OwnedGroup] = (),
    *,
    rules: GroupRules = RULES,
    taken: set[str] | None = None,
    existing: list[str] | None = None,
    today: date = TODAY,
) -> tuple[GroupPlan, Plan]:
    desired, _state, links, plan = world(people, existing=existing)
    gp = plan_groups(
        rules,
        people=desired.people,
        departments=desired.departments,
        links=links,
        owned=owned,
        user_plan=plan,
        taken=taken or set(),
        today=today,
    )
    return gp, plan


def test_a_group_per_department_with_its_people() -> None:
    gp, _ = run([person("E1", "研发/平台"), person("E2", "研发/平台"), person("E3", "市场")])
    assert [(a.key, a.group.members if a.group else None) for a in gp.actions] == [
        ("create_group:dept-101@x.com", ("e1@x.com", "e2@x.com")),
        ("create_group:dept-20@x.com", ("e3@x.com",)),
    ]  # 研发 has no member of its own and no group; sub-departments' people are not its
    sub = run([person("E1", "研发/平台")], rules=GroupRules("dept-{code}@x.com",
                                                     include_subdepartments=True))[0]  # fmt: skip
    assert {a.target: a.group.members for a in sub.actions if a.group} == {
        "dept-10@x.com": ("e1@x.com",),
        "dept-101@x.com": ("e1@x.com",),
    }


def test_new_people_join_after_their_mailbox_is_made_and_leavers_do_not() -> None:
    people = [person("E1", "研发/平台"), person("E2", "研发/平台"),
              person("E3", "研发/平台", Status.TERMINATED)]  # fmt: skip
    gp, plan = run(people, existing=["E1", "E3"])
    (create,) = gp.actions
    assert create.group is not None and create.group.members == ("e1@x.com", "e2@x.com")
    assert create.depends_on == ("create_user:e2@x.com",)
    assert plan.count(ActionKind.DISABLE_USER) == 1  # E3 leaves: not a member


def test_nothing_to_do_when_the_group_is_as_owned() -> None:
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com", "e2@x.com"))]
    gp, _ = run([person("E1", "研发/平台"), person("E2", "研发/平台")], owned)
    assert gp.actions == () and gp.conflicts == () and gp.blocked == ()


def test_minimal_change_and_rename_keeps_the_address() -> None:
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "旧名", ("e1@x.com", "e9@x.com"))]
    gp, _ = run(
        [person("E1", "研发/平台"), person("E2", "研发/平台")], owned, existing=["E1", "E2"]
    )
    (update,) = gp.actions
    assert update.kind is ActionKind.UPDATE_GROUP and update.target == "dept-101@x.com"
    assert update.group is not None
    assert (update.group.add, update.group.remove) == (("e2@x.com",), ("e9@x.com",))
    assert update.changes["name"] == ("旧名", "平台")
    gen1 = run([person("E1", "研发/平台"), person("E2", "研发/平台")], owned,
               rules=GroupRules("dept-{code}@x.com", can_rename=False))[0]  # fmt: skip
    (kept,) = gen1.actions
    assert "name" not in kept.changes and kept.group is not None and kept.group.name == "旧名"


@pytest.mark.parametrize("taken", ["mailbox", "alias", "group"])
def test_an_address_in_use_is_a_conflict(taken: str) -> None:
    people = [person("E1", "研发/平台")]
    if taken == "mailbox":
        people.append(Person("E7", "Dept", "dept-101@x.com", departments=("市场",)))
    gp, _ = run(people, taken={"dept-101@x.com"} if taken != "mailbox" else None,
                existing=["E1"])  # fmt: skip
    assert not [a for a in gp.actions if a.target == "dept-101@x.com"]
    (conflict,) = [c for c in gp.conflicts if "dept-101@x.com" in c.emails]
    assert conflict.kind is ConflictKind.GROUP_ADDRESS_TAKEN


def test_a_gone_department_retires_to_the_keeper_then_goes() -> None:
    owned = [OwnedGroup("dept:20", "dept-20@x.com", "市场", ("e3@x.com",))]
    gp, _ = run([person("E1", "研发/平台")], owned)
    retire = next(a for a in gp.actions if a.target == "dept-20@x.com")
    assert retire.kind is ActionKind.UPDATE_GROUP and retire.group is not None
    assert retire.group.members == ("keeper@x.com",) and retire.group.retiring_since == TODAY
    since = [OwnedGroup("dept:20", "dept-20@x.com", "市场", ("keeper@x.com",), TODAY)]
    assert not [a for a in run([person("E1", "研发/平台")], since,
                               today=TODAY + timedelta(days=29))[0].actions
                if a.target == "dept-20@x.com"]  # fmt: skip
    late = run([person("E1", "研发/平台")], since, today=TODAY + timedelta(days=30))[0]
    assert [a.kind for a in late.actions if a.target == "dept-20@x.com"] == [
        ActionKind.DELETE_GROUP
    ]
    no_keeper = run([person("E1", "研发/平台")], owned, rules=GroupRules("dept-{code}@x.com"))[0]
    assert [a.kind for a in no_keeper.actions if a.target == "dept-20@x.com"] == [
        ActionKind.DELETE_GROUP
    ]


def test_a_group_losing_more_than_its_share_blocks_the_plan() -> None:
    members = tuple(f"e{i}@x.com" for i in range(1, 9))
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", members)]
    people = [person(f"E{i}", "研发/平台") for i in range(1, 4)]
    people += [person(f"E{i}", "市场") for i in range(4, 9)]  # five of eight move away
    gp, plan = run(people, owned)
    (brake,) = gp.blocked
    assert brake.brake == "group_member_loss" and brake.needed == 5
    assert "dept-101@x.com loses 5 of 8" in brake.message
    full = with_groups(plan, gp)
    assert full.is_blocked() and not full.is_blocked(Release(allow_removals=5))
    # Four of eight is not more than half: not blocked.
    people[3] = person("E4", "研发/平台")
    assert run(people, owned)[0].blocked == ()


def test_the_plan_with_groups_round_trips_and_is_checksummed() -> None:
    gp, plan = run([person("E1", "研发/平台"), person("E2", "研发/平台")], existing=["E1"])
    full = with_groups(plan, gp)
    assert full.checksum != plan.checksum and full.summary["create_group"] == 1
    assert Plan.from_json(full.to_json()) == full
    assert with_groups(plan, run([], [])[0]) is plan  # no group part: the same plan


def test_template_fields() -> None:
    assert render_address("dept-{code}@X.com", "研发/平台", "A 101") == "dept-a101@x.com"
    assert render_address("{pinyin}@x.com", "研发/平台", "101") == "pingtai@x.com"
    assert render_address("{path_pinyin}@x.com", "研发/平台", "101") == "yanfa-pingtai@x.com"
    assert render_address("{initials}-team@x.com", "研发/平台", "101") == "pt-team@x.com"


def test_a_quarantined_member_stays_in_the_group() -> None:
    """A row with a problem is held back, not gone: its mailbox keeps its group membership."""
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com", "e2@x.com"))]
    desired, _state, links, plan = world([person("E1", "研发/平台"), person("E2", "研发/平台")])
    desired = Desired(people=desired.people[:1], departments=DEPTS, quarantined=frozenset({"E2"}))
    gp = plan_groups(RULES, people=desired.people, departments=desired.departments, links=links,
                     owned=owned, user_plan=plan, taken=set(), today=TODAY,
                     held=("e2@x.com",))  # fmt: skip
    assert gp.actions == ()


def test_a_group_name_over_64_bytes_is_a_conflict() -> None:
    rules = GroupRules("dept-{code}@x.com", name_template="{path}" + "部" * 22)
    gp, _ = run([person("E1", "研发/平台")], rules=rules)
    assert gp.actions == ()
    (conflict,) = gp.conflicts
    assert "64 bytes" in conflict.message and "研发/平台" in conflict.message
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com",))]
    renamed, _ = run([person("E1", "研发/平台")], owned, rules=rules)
    assert renamed.actions == () and len(renamed.conflicts) == 1  # keeps its name


def test_an_address_held_by_another_departments_retiring_group_is_a_conflict() -> None:
    # 研发/平台 was D999 once; its retiring group holds dept-101@x.com's address.
    owned = [OwnedGroup("dept:999", "dept-101@x.com", "旧", ("keeper@x.com",), TODAY)]
    gp, _ = run([person("E1", "研发/平台")], owned)
    assert not [a for a in gp.actions if a.kind is ActionKind.CREATE_GROUP]
    (conflict,) = gp.conflicts
    assert conflict.kind is ConflictKind.GROUP_ADDRESS_TAKEN and "retiring" in conflict.message


def test_who_may_post_follows_the_config_where_the_api_can_change_it() -> None:
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com",))]  # company (0)
    rules = GroupRules("dept-{code}@x.com", posting=3, allow_list=("boss@x.com",))
    (update,) = run([person("E1", "研发/平台")], owned, rules=rules)[0].actions
    assert update.kind is ActionKind.UPDATE_GROUP and update.group is not None
    assert update.changes["posting"] == (0, 3) and update.group.allow_list == ("boss@x.com",)
    assert update.group.add == () and update.group.remove == ()
    # Gen 1 cannot change it after creation: nothing to do, the ledger keeps what is there.
    gen1 = GroupRules("dept-{code}@x.com", posting=3, allow_list=("boss@x.com",),
                      can_rename=False)  # fmt: skip
    assert run([person("E1", "研发/平台")], owned, rules=gen1)[0].actions == ()


def test_static_members_of_one_department() -> None:
    rules = GroupRules("dept-{code}@x.com", department_members={"101": ("cto@x.com",)})
    gp, _ = run([person("E1", "研发/平台"), person("E3", "市场")], rules=rules)
    assert {a.target: a.group.members for a in gp.actions if a.group} == {
        "dept-101@x.com": ("cto@x.com", "e1@x.com"),
        "dept-20@x.com": ("e3@x.com",),
    }


def test_config_builds_the_rules_and_names_the_bad_key() -> None:
    base = {"exmail": {"api": "v1", "client_id": "c", "client_secret": "s"}}
    cfg = parse_config({**base, "groups": {"template": "dept-{code}@x.com", "posting": "list",
                                           "allow_list": ["Boss@x.com"]}})  # fmt: skip
    assert cfg.groups is not None
    rules = cfg.groups.rules("v1")
    assert rules.posting == 3 and rules.allow_list == ("boss@x.com",) and not rules.can_rename
    assert parse_config(base).groups is None  # no table: no groups planned
    for bad, key in (({"template": "dept-{dept}@x.com"}, "template"),
                     ({"template": "dept-{code}@{code}.com"}, "template"),
                     ({"template": "d-{code}@x.com", "keeper": "nobody"}, "keeper"),
                     ({"template": "d-{code}@x.com", "posting": "all"}, "posting")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"groups\.{key}"):
            parse_config({**base, "groups": bad})


def test_an_address_change_keeps_the_membership_and_moves_the_ledger() -> None:
    """Exmail keeps group membership per account: after ``user/swapalias`` the group already
    holds the new address. Removing the old one would resolve it (an alias now) to the same
    account and take the person out (Gen 1), so the plan sends no member change and only
    records the new address, after the swap."""
    owned = [OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com", "e2@x.com"))]
    moved = Person("E1", "name E1", "new.e1@x.com", departments=("研发/平台",))
    gp, plan = run([moved, person("E2", "研发/平台")], owned)
    swap = next(a for a in plan.actions if a.kind is ActionKind.SWAP_PRIMARY)
    (update,) = gp.actions
    assert update.group is not None
    assert (update.group.add, update.group.remove) == ((), ())
    assert update.group.members == ("e2@x.com", "new.e1@x.com")
    assert update.depends_on == (swap.key,)
