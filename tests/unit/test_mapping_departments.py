"""A separate department table (id, name, parent id): paths, checks, and people referencing it."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncengine.connectors.base import ROW_KEY
from syncengine.connectors.config import DepartmentsConfig, MappingConfig
from syncengine.connectors.mapping import build_department_table, map_records
from syncengine.domain import MAX_DEPARTMENT_DEPTH, Department, parent_path

CONFIG = DepartmentsConfig.model_validate(
    {"source": {"type": "csv", "path": "d.csv"}, "root_ids": ["1"]}
)
PEOPLE = MappingConfig.model_validate(
    {"employee_id": "id", "name": "name", "departments": {"field": "dept", "split": ";"}}
)


def table(*rows: tuple[str, str, str], config: DepartmentsConfig = CONFIG) -> Any:
    records = [
        {"id": i, "name": n, "parent_id": p, ROW_KEY: row}
        for row, (i, n, p) in enumerate(rows, start=2)
    ]
    return build_department_table(records, config)


TREE = [
    ("1", "总部", ""),
    ("10", "研发中心", "1"),
    ("101", "平台部", "10"),
    ("1011", "基础架构组", "101"),
    ("20", "市场部", "1"),
    ("30", "独立部门", ""),
    ("40", "也在顶层", "0"),
]


def test_paths_are_built_from_parents_and_keep_hr_ids() -> None:
    t = table(*TREE)
    assert t.problems == ()
    assert {d.hr_id: d.path for d in t.departments} == {
        "10": "研发中心",
        "101": "研发中心/平台部",
        "1011": "研发中心/平台部/基础架构组",
        "20": "市场部",
        "30": "独立部门",
        "40": "也在顶层",
    }
    assert t.by_id["1"] == ""  # the company root is the root of Exmail's tree
    assert t.parent_ids["1011"] == "101"
    assert t.parent_ids["10"] is None


def test_rows_in_any_order() -> None:
    assert {d.path for d in table(*reversed(TREE)).departments} == {
        d.path for d in table(*TREE).departments
    }


def test_a_cycle_is_reported_and_everything_below_it_is_unusable() -> None:
    t = table(*TREE, ("a", "甲", "b"), ("b", "乙", "a"), ("c", "丙", "a"))
    assert {d.hr_id for d in t.departments} == {"10", "101", "1011", "20", "30", "40"}
    cycle = [p for p in t.problems if "cycle" in p.reason]
    assert {p.row for p in cycle} == {9, 10}
    assert "a → b → a" in cycle[0].reason or "b → a → b" in cycle[0].reason
    assert {"a", "b", "c"} <= set(t.invalid)


def test_a_self_parent_is_a_cycle() -> None:
    t = table(("x", "自己", "x"))
    assert t.departments == ()
    assert "cycle" in t.problems[0].reason


def test_unknown_parent() -> None:
    t = table(("5", "孤儿", "99"), ("6", "孤儿的孩子", "5"))
    assert t.departments == ()
    assert t.problems[0].value == "99"
    assert "not in the department table" in t.problems[0].reason
    assert "6" in t.invalid


def test_duplicate_id_makes_both_unusable() -> None:
    t = table(("5", "甲", ""), ("5", "乙", ""))
    assert t.departments == ()
    assert "duplicate department id" in t.problems[0].reason


def test_missing_id_and_bad_name() -> None:
    t = table(("", "无号", ""), ("7", "坏/名", ""), ("8", "", ""))
    assert t.departments == ()
    reasons = " | ".join(p.reason for p in t.problems)
    assert "department id is missing" in reasons
    assert "forbidden characters" in reasons
    assert "is empty" in reasons


def test_unusable_department_ids() -> None:
    t = table(("D" * 65, "甲", ""), ("x\ty", "乙", ""), ("5", "丙", ""))
    assert [d.hr_id for d in t.departments] == ["5"]
    assert [p.row for p in t.problems] == [2, 3]


def test_too_deep() -> None:
    rows = [(str(i), f"L{i}", str(i - 1) if i > 1 else "") for i in range(1, 8)]
    t = table(*rows, config=DepartmentsConfig.model_validate({"source": {"type": "csv"}}))
    assert [d.hr_id for d in t.departments] == ["1", "2", "3", "4", "5"]
    assert "6 levels deep" in t.invalid["6"]
    assert "7" in t.invalid


def test_siblings_with_one_name_cannot_both_exist() -> None:
    t = table(("5", "同名", ""), ("6", "同名", ""), ("7", "下级", "5"))
    assert t.departments == ()
    assert "would all be 同名" in t.problems[0].reason


def test_people_reference_departments_by_id() -> None:
    dept_records = [{"id": i, "name": n, "parent_id": p} for i, n, p in TREE]
    people = [
        {"id": "E1", "name": "张三", "dept": "1011;20", ROW_KEY: 2},
        {"id": "E2", "name": "李四", "dept": "999", ROW_KEY: 3},
        {"id": "E3", "name": "王五", "dept": "1", ROW_KEY: 4},
    ]
    result = map_records(people, PEOPLE, department_records=dept_records, departments=CONFIG)
    by_id = {p.employee_id: p for p in result.people}
    assert by_id["E1"].departments == ("研发中心/平台部/基础架构组", "市场部")
    assert by_id["E3"].departments == ()  # the company root itself
    assert result.quarantined == {"E2"}
    assert "unknown department id" in result.problems[0].reason
    assert len(result.departments) == 6  # the whole table, even departments nobody is in yet
    assert result.department_parents()["研发中心/平台部"] == "10"


def test_a_person_in_an_unusable_department_is_quarantined_with_the_reason() -> None:
    dept_records = [
        {"id": "a", "name": "甲", "parent_id": "b"},
        {"id": "b", "name": "乙", "parent_id": "a"},
    ]
    people = [{"id": "E1", "name": "张三", "dept": "a"}]
    result = map_records(people, PEOPLE, department_records=dept_records, departments=CONFIG)
    assert result.quarantined == {"E1"}
    assert any("cycle" in p.reason and p.employee_id == "E1" for p in result.problems)
    assert any("cycle" in p.reason and p.employee_id is None for p in result.problems)


def test_people_reference_departments_by_name() -> None:
    config = CONFIG.model_copy(update={"reference": "name"})
    dept_records = [{"id": i, "name": n, "parent_id": p} for i, n, p in TREE] + [
        {"id": "21", "name": "平台部", "parent_id": "20"}
    ]
    people = [
        {"id": "E1", "name": "张三", "dept": "基础架构组"},
        {"id": "E2", "name": "李四", "dept": "平台部"},
    ]
    result = map_records(people, PEOPLE, department_records=dept_records, departments=config)
    assert [p.departments for p in result.people] == [("研发中心/平台部/基础架构组",)]
    assert "ambiguous" in result.problems[0].reason


ids = st.sampled_from(["", "0", "1", "2", "3", "4", "5", "6", "7", "8"])
names = st.one_of(st.sampled_from(["甲", "乙", "丙", "a/b", "", "同名"]), st.text(max_size=8))
dept_rows = st.lists(
    st.fixed_dictionaries({"id": ids, "name": names, "parent_id": ids}), max_size=14
)


@settings(max_examples=300, deadline=None)
@given(dept_rows, st.lists(st.sampled_from(["0", "1", "2", "3", "5", "9", ""]), max_size=5))
def test_department_table_never_raises_and_yields_a_sound_tree(
    rows: list[dict[str, Any]], refs: list[str]
) -> None:
    config = DepartmentsConfig.model_validate({"source": {"type": "csv"}, "root_ids": ["1"]})
    people = [{"id": f"E{i}", "name": "某", "dept": r} for i, r in enumerate(refs)]
    result = map_records(people, PEOPLE, department_records=rows, departments=config)
    paths = {d.path for d in result.departments}
    hr_ids = [d.hr_id for d in result.departments]
    assert len(hr_ids) == len(set(hr_ids))
    assert len(paths) == len(result.departments)
    for dept in result.departments:
        assert dept.path.count("/") < MAX_DEPARTMENT_DEPTH
        parent = parent_path(dept.path)
        assert parent == "" or parent in paths  # every parent exists: no dangling, no cycle
    for person in result.people:
        assert all(Department(p) in {Department(d.path) for d in result.departments}
                   for p in person.departments)  # fmt: skip
