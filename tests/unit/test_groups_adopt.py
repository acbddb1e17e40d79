"""Adoption (``[groups] adopt`` / ``adopt_existing``): table tests of the pure planner over
real user plans, and the config that refuses adoption on Gen 1."""

from __future__ import annotations

import pytest

from syncengine.config import parse_config
from syncengine.domain import Person
from syncengine.errors import ConfigError
from syncengine.groups import GroupRules, OwnedGroup, plan_groups
from syncengine.plan import ActionKind, ConflictKind, adoption_writes
from tests.unit.test_groups import TODAY, person, world

RULES = GroupRules(template="dept-{code}@x.com", adopt=("dept-101@x.com",))


def live(address: str, *members: str, name: str = "平台", posting: int = 0) -> OwnedGroup:
    return OwnedGroup("", address, name, tuple(sorted(members)), posting=posting)


def plan(people: list[Person], rules: GroupRules, adoptable: dict[str, OwnedGroup],
         owned: tuple[OwnedGroup, ...] = ()):  # type: ignore[no-untyped-def]  # fmt: skip
    desired, _state, links, user_plan = world(people)
    return plan_groups(rules, people=desired.people, departments=desired.departments,
                       links=links, owned=owned, user_plan=user_plan,
                       taken=set(adoptable), today=TODAY, adoptable=adoptable)  # fmt: skip


def test_a_listed_existing_group_is_adopted_with_the_minimal_change() -> None:
    people = [person("E1", "研发/平台"), person("E2", "研发/平台"), person("E3", "市场")]
    existing = {"dept-101@x.com": live("dept-101@x.com", "e1@x.com", "boss@x.com"),
                "dept-20@x.com": live("dept-20@x.com", "e3@x.com", name="市场")}  # fmt: skip
    gp = plan(people, RULES, existing)
    (adopt,) = [a for a in gp.actions if a.kind is ActionKind.ADOPT_GROUP]
    assert adopt.target == "dept-101@x.com" and adopt.group is not None
    assert adopt.group.key == "dept:101"  # owned from now on, under the department's key
    assert (adopt.group.add, adopt.group.remove) == (("e2@x.com",), ("boss@x.com",))
    assert adopt.group.members == ("e1@x.com", "e2@x.com")
    assert (
        "already exists in Exmail with 2 member(s) and is adopted (listed in [groups] adopt)"
        in (adopt.reason)
    )
    assert adoption_writes(adopt)
    # dept-20 exists too but is not listed: a conflict as before, not adopted
    assert [(c.kind, c.emails) for c in gp.conflicts] == [
        (ConflictKind.GROUP_ADDRESS_TAKEN, ("dept-20@x.com",))
    ]
    every = GroupRules(template="dept-{code}@x.com", adopt_existing=True)
    kinds = {a.target: a.kind for a in plan(people, every, existing).actions}
    assert kinds == {"dept-101@x.com": ActionKind.ADOPT_GROUP,
                     "dept-20@x.com": ActionKind.ADOPT_GROUP}  # fmt: skip
    same = plan(people, every, existing)
    quiet = next(a for a in same.actions if a.target == "dept-20@x.com")
    assert not adoption_writes(quiet) and "members as HR" in quiet.reason  # no call needed


def test_adopting_a_big_group_down_to_a_few_hits_the_brake() -> None:
    others = [f"o{i}@x.com" for i in range(8)]
    gp = plan([person("E1", "研发/平台")], RULES,
              {"dept-101@x.com": live("dept-101@x.com", "e1@x.com", *others)})  # fmt: skip
    assert [b.brake for b in gp.blocked] == ["group_member_loss"]
    assert gp.blocked[0].needed == 8


def test_an_adopt_entry_no_group_renders_is_a_conflict() -> None:
    rules = GroupRules(template="dept-{code}@x.com", adopt=("team@x.com",))
    gp = plan([person("E1", "研发/平台")], rules, {})
    assert [a.kind for a in gp.actions] == [ActionKind.CREATE_GROUP]
    assert "[groups] adopt lists team@x.com, but no department" in gp.conflicts[0].message
    owned = (OwnedGroup("dept:101", "dept-101@x.com", "平台", ("e1@x.com",)),)
    again = plan([person("E1", "研发/平台")], RULES, {}, owned)  # adopted before: owned now
    assert again.actions == () and again.conflicts == ()


def test_gen1_refuses_adoption_in_the_config() -> None:
    gen1 = {"exmail": {"api": "v1", "client_id": "c", "client_secret": "s"}}
    for table, key in (({"adopt": ["team@x.com"]}, "groups.adopt"),
                       ({"adopt_existing": True}, "groups.adopt_existing")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"{key}: Gen 1 .*\(no group/get\)"):
            parse_config({**gen1, "groups": {"template": "d-{code}@x.com", **table}})
    gen2 = {"exmail": {"api": "v2", "corp_id": "c", "secrets": {"contacts": "s"}}}
    cfg = parse_config({**gen2, "groups": {"template": "d-{code}@x.com", "adopt": ["T@X.com"]}})
    assert cfg.groups is not None and cfg.groups.rules("v2").adopt == ("t@x.com",)
    with pytest.raises(ConfigError, match=r"groups\.adopt"):
        parse_config({**gen2, "groups": {"template": "d-{code}@x.com", "adopt": ["nobody"]}})
