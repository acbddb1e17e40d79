"""Mail groups from an HR field (``[[groups.by_field]]``): table tests of the pure planner
over real user plans, and the label's way through the config, the mapping and the codec."""

from __future__ import annotations

from datetime import timedelta

import pytest

from syncengine.config import parse_config
from syncengine.connectors.config import MappingConfig
from syncengine.connectors.mapping import map_people
from syncengine.domain import Person, Status
from syncengine.errors import ConfigError
from syncengine.groups import GroupRules, OwnedGroup
from syncengine.groups_field import FieldGroupRule, render_field_address
from syncengine.plan import ActionKind, ConflictKind
from syncengine.staging import codec
from tests.unit.test_groups import TODAY, run

LOC = FieldGroupRule("location", "loc-{value}@x.com", "{value} office")
RULES = GroupRules(template="", keeper="keeper@x.com", by_field=(LOC,))


def at(eid: str, where: str, status: Status = Status.ACTIVE) -> Person:
    labels = (("location", where),) if where else ()
    return Person(eid, f"name {eid}", f"{eid.lower()}@x.com", departments=("市场",),
                  status=status, labels=labels)  # fmt: skip


def test_a_group_per_distinct_value_of_enabled_people() -> None:
    people = [at("E1", "上海"), at("E2", "上海"), at("E3", "New York"), at("E4", ""),
              at("E5", "上海", Status.TERMINATED)]  # fmt: skip
    gp, _ = run(people, rules=RULES)
    got = {a.target: (a.kind, a.group.key, a.group.name, a.group.members)
           for a in gp.actions if a.group}  # fmt: skip
    assert got == {
        "loc-shanghai@x.com": (
            ActionKind.CREATE_GROUP,
            "field:location:上海",
            "上海 office",
            ("e1@x.com", "e2@x.com"),
        ),
        "loc-new-york@x.com": (
            ActionKind.CREATE_GROUP,
            "field:location:New York",
            "New York office",
            ("e3@x.com",),
        ),
    }  # fmt: skip  (no empty value group, no terminated member, no department group)
    assert "location '上海' has 2 member(s)" in next(
        a.reason for a in gp.actions if a.target == "loc-shanghai@x.com"
    )
    both = GroupRules(template="dept-{code}@x.com", by_field=(LOC,))
    targets = {a.target for a in run(people, rules=both)[0].actions}
    assert targets == {"dept-20@x.com", "loc-shanghai@x.com", "loc-new-york@x.com"}


def test_a_value_change_is_a_minimal_update_and_a_gone_value_retires() -> None:
    owned = [
        OwnedGroup("field:location:上海", "loc-shanghai@x.com", "上海 office",
                   ("e1@x.com", "e2@x.com")),
        OwnedGroup("field:location:北京", "loc-beijing@x.com", "北京 office", ("e3@x.com",)),
    ]  # fmt: skip
    gp, _ = run([at("E1", "上海"), at("E2", "深圳"), at("E3", "上海")], owned, rules=RULES)
    by = {a.target: a for a in gp.actions}
    sh = by["loc-shanghai@x.com"]
    assert sh.kind is ActionKind.UPDATE_GROUP and sh.group is not None
    assert (sh.group.add, sh.group.remove) == (("e3@x.com",), ("e2@x.com",))
    assert by["loc-shenzhen@x.com"].kind is ActionKind.CREATE_GROUP
    bj = by["loc-beijing@x.com"]  # no one in 北京 any more: emptied down to the keeper
    assert bj.kind is ActionKind.UPDATE_GROUP and bj.group is not None
    assert bj.group.members == ("keeper@x.com",) and bj.group.retiring_since == TODAY
    assert "its HR value (field:location:北京) is gone" in bj.reason
    retiring = OwnedGroup("field:location:北京", "loc-beijing@x.com", "北京 office",
                          ("keeper@x.com",), retiring_since=TODAY - timedelta(days=31))  # fmt: skip
    later = run([at("E1", "上海")], [retiring], rules=RULES)[0]
    assert [a.kind for a in later.actions if a.target == "loc-beijing@x.com"] == [
        ActionKind.DELETE_GROUP
    ]
    same = [OwnedGroup("field:location:上海", "loc-shanghai@x.com", "上海 office", ("e1@x.com",))]
    assert run([at("E1", "上海")], same, rules=RULES)[0].actions == ()  # nothing changed


def test_clashing_addresses_are_conflicts_and_the_brake_holds() -> None:
    gp, _ = run([at("E1", "上海"), at("E2", "shanghai")], rules=RULES, taken={"loc-x@x.com"})
    assert [a.target for a in gp.actions] == ["loc-shanghai@x.com"]  # "shanghai" < "上海"
    assert [(c.kind, c.emails) for c in gp.conflicts] == [
        (ConflictKind.GROUP_ADDRESS_TAKEN, ("loc-shanghai@x.com",))
    ]
    taken = run([at("E1", "上海")], rules=RULES, taken={"loc-shanghai@x.com"})[0]
    assert taken.actions == () and "location '上海'" in taken.conflicts[0].message
    members = tuple(f"e{i}@x.com" for i in range(1, 7))
    owned = [OwnedGroup("field:location:上海", "loc-shanghai@x.com", "上海 office", members)]
    people = [at(f"E{i}", "上海" if i == 1 else "深圳") for i in range(1, 7)]
    braked = run(people, owned, rules=RULES)[0]
    assert [b.brake for b in braked.blocked] == ["group_member_loss"]


def test_value_addresses_are_sanitised_like_department_codes() -> None:
    assert render_field_address("loc-{value}@X.com", "上海") == "loc-shanghai@x.com"
    assert render_field_address("p-{value}@x.com", "Café Ünter/Den Linden") == (
        "p-cafe-unterden-linden@x.com"
    )
    assert render_field_address("{value}@x.com", "!!!") == ""


def test_config_names_the_bad_key() -> None:
    base = {"exmail": {"api": "v1", "client_id": "c", "client_secret": "s"},
            "mapping": {"labels": {"location": "office"}}}  # fmt: skip
    ok = {"by_field": [{"field": "location", "template": "loc-{value}@x.com"}]}
    cfg = parse_config({**base, "groups": ok})
    assert cfg.groups is not None
    assert cfg.groups.rules("v1").by_field == (
        FieldGroupRule("location", "loc-{value}@x.com", "{value}"),
    )
    assert cfg.mapping.labels["location"].field == "office"
    for bad, where in (
        ({"by_field": [{"field": "site", "template": "s-{value}@x.com"}]},
         r"groups\.by_field\[0\]\.field = 'site' is not a label"),
        ({"by_field": [{"field": "location", "template": "loc@x.com"}]},
         r"groups\.by_field\[0\]\.template"),
        ({"by_field": [{"field": "location", "template": "l-{code}@x.com"}]},
         r"groups\.by_field\[0\]\.template"),
        ({"by_field": [{"field": "location", "template": "l-{value}@x.com", "name": "{x}"}]},
         r"groups\.by_field\[0\]\.name"),
        ({}, "set template"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=where):
            parse_config({**base, "groups": bad})
    with pytest.raises(ConfigError, match=r"mapping\.labels"):
        parse_config({**base, "mapping": {"labels": {"Location": "office"}}})


def test_the_mapping_keeps_labels_and_the_codec_keeps_old_json() -> None:
    config = MappingConfig.model_validate({"labels": {"location": "office", "team": "team"}})
    records = [
        {"employee_id": "E1", "name": "张三", "office": " 上海 ", "team": ""},
        {"employee_id": "E2", "name": "李四", "office": "北京\n", "team": "a"},
        {"employee_id": "E3", "name": "王五"},
    ]
    result = map_people(records, config)
    assert [(p.employee_id, p.labels) for p in result.people] == [
        ("E1", (("location", "上海"),)),
        ("E2", (("location", "北京"), ("team", "a"))),
        ("E3", ()),
    ]
    plain = Person("E3", "王五")
    assert "labels" not in codec.person_to_dict(plain)  # unchanged JSON and hash without labels
    assert codec.person_hash(plain) == codec.content_hash(
        {
            "employee_id": "E3",
            "name": "王五",
            "email": None,
            "aliases": [],
            "departments": [],
            "position": "",
            "mobile": "",
            "tel": "",
            "gender": 0,
            "status": "active",
            "start_date": None,
            "end_date": None,
        }
    )
    for p in result.people:
        text = codec.canonical_json(codec.person_to_dict(p))
        assert codec.people_from_json_texts([text]) == [p]
        assert codec.person_from_dict(codec.person_to_dict(p)) == p


def test_a_name_exmail_refuses_is_a_conflict_not_a_failed_call() -> None:
    """Exmail refuses ``\\:*?"<>|/`` in a group name (600019): a ``{path}`` name of a
    sub-department or a ``{field}: {value}`` name is a group_invalid conflict in the plan."""
    colon = GroupRules(template="", by_field=(FieldGroupRule("location", "l-{value}@x.com",
                                                            "{field}: {value}"),))  # fmt: skip
    gp, _ = run([at("E1", "上海")], rules=colon)
    assert gp.actions == ()
    assert [c.kind for c in gp.conflicts] == [ConflictKind.GROUP_INVALID]
    assert "'location: 上海'" in gp.conflicts[0].message and ":" in gp.conflicts[0].message
    path = GroupRules(template="dept-{code}@x.com", name_template="{path}")
    gp = run([Person("E1", "n", "e1@x.com", departments=("研发/平台",))], rules=path)[0]
    assert gp.actions == () and "'研发/平台'" in gp.conflicts[0].message
