"""Mapping raw records to Persons: transforms, checks, quarantine, and never raising."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine.connectors.base import ERROR_KEY, ROW_KEY
from syncengine.connectors.config import FieldSpec, MappingConfig
from syncengine.connectors.mapping import (
    field_value,
    field_values,
    map_records,
    normalise_mobile,
    parse_date,
    text_value,
)
from syncengine.domain import Department, Gender, Status

BASIC = MappingConfig.model_validate(
    {
        "employee_id": "工号",
        "name": "姓名",
        "email": "邮箱",
        "aliases": {"field": "别名", "split": ";"},
        "departments": {"field": "部门", "split": ";"},
        "position": "职位",
        "mobile": "手机",
        "tel": "座机",
        "gender": "性别",
        "status": "状态",
        "start_date": "入职日期",
        "end_date": "离职日期",
    }
)


def rec(row: int | None = None, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"工号": "E1", "姓名": "张三"}
    base.update(values)
    if row is not None:
        base[ROW_KEY] = row
    return base


def one(record: dict[str, Any], config: MappingConfig = BASIC) -> Any:
    return map_records([record], config)


# --- values and transforms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (None, ""),
        ("abc", "abc"),
        (1001, "1001"),
        (1001.0, "1001"),
        (13800138000.0, "13800138000"),
        (1.5, "1.5"),
        (float("nan"), ""),
        (True, "true"),
        (date(2024, 3, 1), "2024-03-01"),
        (datetime(2024, 3, 1), "2024-03-01"),
        (datetime(2024, 3, 1, 8, 30), "2024-03-01 08:30:00"),
        (b"\xe5\xbc\xa0", "张"),
        (Decimal("1001"), "1001"),
        (Decimal("1001.00"), "1001"),
        (Decimal("1.50"), "1.50"),
        (Decimal("sNaN"), ""),
        (["only"], "only"),
        (["a", "b"], "a,b"),
    ],
)
def test_text_value(raw: Any, text: str) -> None:
    assert text_value(raw) == text


@pytest.mark.parametrize(
    ("spec", "record", "expected"),
    [
        ({"field": "a"}, {"a": "  x  "}, "x"),
        ({"field": "a", "strip": False}, {"a": "  x "}, "  x "),
        ({"field": "a", "case": "lower"}, {"a": "ZS@Example.COM"}, "zs@example.com"),
        ({"field": "a", "case": "upper"}, {"a": "e1"}, "E1"),
        ({"constant": "工程师"}, {}, "工程师"),
        ({"template": "{first}.{last}"}, {"first": "San", "last": "Zhang"}, "San.Zhang"),
        ({"template": "{first}.{last}"}, {"first": "San", "last": " "}, ""),
        ({"template": "{first}.{last}"}, {"first": "San"}, ""),
        ({"field": "a", "map": {"M": "male"}}, {"a": "m"}, "male"),
        ({"field": "a", "map": {"M": "male"}}, {"a": "x"}, "x"),
        ({"field": "a", "default": "无"}, {"a": ""}, "无"),
        ({"field": "a", "default": "无"}, {}, "无"),
        ({"field": "a.b"}, {"a": {"b": "nested"}}, "nested"),
        ({"field": "a.b"}, {"a.b": "flat wins"}, "flat wins"),
        ({"field": "a", "split": ";"}, {"a": " ; x;y"}, "x"),
    ],
)
def test_field_value(spec: dict[str, Any], record: dict[str, Any], expected: str) -> None:
    assert field_value(FieldSpec.model_validate(spec), record) == expected


@pytest.mark.parametrize(
    ("spec", "record", "expected"),
    [
        ({"field": "a", "split": ";"}, {"a": "x; y ;;z"}, ["x", "y", "z"]),
        ({"field": "a", "split": ";"}, {"a": ["x", "y;z"]}, ["x", "y", "z"]),
        ({"field": "a", "split": ","}, {"a": ""}, []),
        ({"field": "a", "split": ",", "case": "lower"}, {"a": "A@X.COM"}, ["a@x.com"]),
        ({"field": "a", "split": ",", "map": {"1": "研发"}}, {"a": "1,2"}, ["研发", "2"]),
    ],
)
def test_field_values(spec: dict[str, Any], record: dict[str, Any], expected: list[str]) -> None:
    assert field_values(FieldSpec.model_validate(spec), record) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("13800138000", "13800138000"),
        ("138 0013 8000", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("+86-13800138000", "13800138000"),
        ("8613800138000", "13800138000"),
        ("(+86) 19912345678", "19912345678"),
        ("1380013800", None),  # one digit short
        ("12800138000", None),  # 12x is not a mobile prefix
        ("010-62000001", None),  # a landline
        ("+852 9123 4567", None),
        ("手机", None),
    ],
)
def test_mainland_mobile(text: str, expected: str | None) -> None:
    assert normalise_mobile(text) == expected


def test_any_mobile_check_accepts_foreign_numbers() -> None:
    assert normalise_mobile("+852 9123 4567", "any") == "+85291234567"
    assert normalise_mobile("12", "any") is None


@pytest.mark.parametrize(
    ("text", "formats", "expected"),
    [
        ("2024-03-01", [], date(2024, 3, 1)),
        ("2024/3/1", [], date(2024, 3, 1)),
        ("2024.03.01", [], date(2024, 3, 1)),
        ("20240301", [], date(2024, 3, 1)),
        ("2024年3月1日", [], date(2024, 3, 1)),
        ("2024-03-01 00:00:00", [], date(2024, 3, 1)),
        ("01/03/2024", ["%d/%m/%Y"], date(2024, 3, 1)),
        ("01/03/2024", [], None),
        ("2024-02-30", [], None),
        ("soon", [], None),
    ],
)
def test_parse_date(text: str, formats: list[str], expected: date | None) -> None:
    assert parse_date(text, formats) == expected


# --- people --------------------------------------------------------------------------------


def test_a_full_row_becomes_a_person() -> None:
    result = one(
        rec(
            row=2,
            邮箱=" ZhangSan@Example.com ",
            别名="san.zhang@example.com; zhangsan@example.com",
            部门="研发中心/平台部; 市场部",
            职位="工程师",
            手机="+86 138-0013-8000",
            座机="010-62000001",
            性别="男",
            状态="在职",
            入职日期="2020/1/2",
            离职日期="",
        )
    )
    assert result.problems == ()
    (person,) = result.people
    assert person.employee_id == "E1"
    assert person.email == "zhangsan@example.com"
    assert person.aliases == ("san.zhang@example.com",)  # the primary address is not an alias
    assert person.departments == ("研发中心/平台部", "市场部")
    assert person.mobile == "13800138000"
    assert person.gender is Gender.MALE
    assert person.status is Status.ACTIVE
    assert person.start_date == date(2020, 1, 2)
    assert person.end_date is None
    assert result.departments == (
        Department("市场部"),
        Department("研发中心"),
        Department("研发中心/平台部"),
    )


@pytest.mark.parametrize(
    ("value", "gender"),
    [("男", Gender.MALE), ("女", Gender.FEMALE), ("M", Gender.MALE), ("f", Gender.FEMALE),
     ("", Gender.UNSET), ("2", Gender.FEMALE)],
)  # fmt: skip
def test_gender_values(value: str, gender: Gender) -> None:
    assert one(rec(性别=value)).people[0].gender is gender


@pytest.mark.parametrize(
    ("value", "status"),
    [("在职", Status.ACTIVE), ("离职", Status.TERMINATED), ("休假", Status.LEAVE),
     ("Terminated", Status.TERMINATED), ("", Status.ACTIVE)],
)  # fmt: skip
def test_status_values(value: str, status: Status) -> None:
    assert one(rec(状态=value)).people[0].status is status


def test_value_map_extends_the_known_values() -> None:
    config = BASIC.model_copy(
        update={
            "status": FieldSpec(field="状态", map={"返聘": "active", "退休": "terminated"}),
            "gender": FieldSpec(field="性别", map={"先生": "male"}),
        }
    )
    person = one(rec(状态="退休", 性别="先生"), config).people[0]
    assert (person.status, person.gender) == (Status.TERMINATED, Gender.MALE)


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"工号": ""}, "工号", "employee id is missing"),
        ({"姓名": " "}, "姓名", "name is missing"),
        ({"姓名": "张" * 22}, "姓名", "66 bytes"),
        ({"邮箱": "zhangsan@"}, "邮箱", "not a valid email"),
        ({"邮箱": "zhang san@example.com"}, "邮箱", "not a valid email"),
        ({"别名": "ok@example.com;bad"}, "别名", "not a valid email"),
        ({"别名": ";".join(f"a{i}@example.com" for i in range(6))}, "别名", "6 aliases"),
        ({"手机": "1380013800"}, "手机", "not a mainland mobile"),
        ({"性别": "未说"}, "性别", "unknown gender"),
        ({"状态": "在岗?"}, "状态", "unknown status"),
        ({"入职日期": "2024-13-01"}, "入职日期", "not a date"),
        ({"职位": "经理" * 11}, "职位", "bytes long"),
        ({"部门": "A/B/C/D/E/F"}, "部门", "6 levels deep"),
        ({"部门": "研发:中心"}, "部门", "forbidden characters"),
        ({"部门": ";".join(f"D{i}" for i in range(21))}, "部门", "21 departments"),
    ],
)
def test_row_problems_quarantine(values: dict[str, Any], field: str, reason: str) -> None:
    result = one(rec(row=7, **values))
    assert result.people == ()
    assert len(result.problems) == 1
    (problem,) = result.problems
    assert (problem.row, problem.field) == (7, field)
    assert reason in problem.reason
    employee_id = values.get("工号", "E1")
    if employee_id:
        assert result.quarantined == {"E1"}
        assert problem.employee_id == "E1"
    else:
        assert result.quarantined == frozenset()  # no id: nothing to protect or sync


def test_every_problem_of_a_row_is_reported() -> None:
    result = one(rec(row=3, 邮箱="x@", 手机="123", 性别="?"))
    assert sorted(p.field or "" for p in result.problems) == ["性别", "手机", "邮箱"]
    assert result.counts["quarantined"] == 1


def test_connector_error_on_a_record_quarantines_it() -> None:
    result = one(rec(row=9, **{ERROR_KEY: "row has 14 values but the header has 13 columns"}))
    assert result.people == ()
    assert result.quarantined == {"E1"}
    assert "14 values" in result.problems[0].reason


def test_identical_duplicate_is_kept_once_with_a_note() -> None:
    result = map_records([rec(row=2, 手机="13800000001"), rec(row=5, 手机="138 0000 0001")], BASIC)
    assert [p.employee_id for p in result.people] == ["E1"]
    assert result.problems == ()
    assert result.quarantined == frozenset()
    assert len(result.notes) == 1
    assert result.notes[0].row == 5
    assert "identical duplicate of row 2" in result.notes[0].reason


def test_conflicting_duplicates_are_both_quarantined() -> None:
    records = [rec(row=2), rec(row=3, 工号="E2", 姓名="李四"), rec(row=8, 姓名="张三丰")]
    result = map_records(records, BASIC)
    assert [p.employee_id for p in result.people] == ["E2"]
    assert result.quarantined == {"E1"}
    assert [(p.row, p.value) for p in result.problems] == [(2, "E1"), (8, "E1")]
    assert "also in row 8" in result.problems[0].reason


def test_a_duplicate_of_a_bad_row_is_held_back_too() -> None:
    result = map_records([rec(row=2, 手机="123"), rec(row=3, 手机="123")], BASIC)
    assert result.people == ()
    assert result.quarantined == {"E1"}
    assert {p.row for p in result.problems} == {2, 3}


def test_an_address_given_to_two_employees_holds_both_back() -> None:
    records = [
        rec(row=2, 邮箱="zs@example.com"),
        rec(row=3, 工号="E2", 姓名="张珊", 邮箱="ZS@example.com"),
        rec(row=4, 工号="E3", 姓名="李四", 邮箱="ls@example.com", 别名="zhang@example.com"),
        rec(row=5, 工号="E4", 姓名="张强", 邮箱="zhang@example.com"),
        rec(row=6, 工号="E5", 姓名="王五", 邮箱="ww@example.com"),
    ]
    result = map_records(records, BASIC)
    assert [p.employee_id for p in result.people] == ["E5"]
    assert result.quarantined == {"E1", "E2", "E3", "E4"}
    by_id = {p.employee_id: p for p in result.problems}
    assert by_id["E1"].field == "邮箱"
    assert "employee E2 (row 3)" in by_id["E1"].reason
    assert (by_id["E3"].field, by_id["E3"].value) == ("别名", "zhang@example.com")


def test_control_characters_in_a_name_or_position() -> None:
    assert "line break" in one(rec(姓名="张三\r\n(外派)")).problems[0].reason
    assert one(rec(职位="工程师\t")).people  # surrounding whitespace is stripped
    assert "control character" in one(rec(职位="工程\x00师")).problems[0].reason


def test_unusable_employee_ids_are_problems_without_an_id() -> None:
    for bad_id in ("E" * 65, "E1\nE2"):
        result = one(rec(row=4, 工号=bad_id))
        assert result.people == ()
        assert result.quarantined == frozenset()  # not a key anyone could be matched on
        (problem,) = result.problems
        assert (problem.row, problem.field, problem.employee_id) == (4, "工号", None)
        assert "employee id" in problem.reason


def test_long_values_are_quoted_short_and_long_addresses_are_invalid() -> None:
    long_mail = "a" * 250 + "@example.com"
    result = one(rec(邮箱=long_mail, 手机="9" * 5000))
    by_field = {p.field: p for p in result.problems}
    assert "not a valid email" in by_field["邮箱"].reason
    shown = by_field["手机"].value or ""
    assert len(shown) <= 201 and shown.endswith("…")


def test_row_numbers_default_to_position() -> None:
    result = map_records([rec(工号="E1"), rec(工号="")], BASIC)
    assert result.problems[0].row == 2


def test_department_separator_and_ancestors() -> None:
    config = BASIC.model_copy(update={"department_separator": ">"})
    result = one(rec(部门="总部 > 研发中心 > 平台部"), config)
    assert result.people[0].departments == ("总部/研发中心/平台部",)
    assert [d.path for d in result.departments] == ["总部", "总部/研发中心", "总部/研发中心/平台部"]


def test_departments_of_quarantined_people_are_not_created() -> None:
    result = map_records([rec(部门="甲"), rec(工号="E2", 部门="乙", 手机="1")], BASIC)
    assert [d.path for d in result.departments] == ["甲"]


def test_unmapped_fields_stay_empty_and_defaults_read_employee_id_and_name() -> None:
    result = map_records([{"employee_id": 7, "name": "王五", "email": "ignored@x.com"}],
                         MappingConfig())  # fmt: skip
    (person,) = result.people
    assert (person.employee_id, person.name, person.email) == ("7", "王五", None)


def test_missing_fields_are_reported() -> None:
    result = map_records([rec(), rec(工号="E2")], BASIC)
    assert "手机" in result.missing_fields
    assert "工号" not in result.missing_fields
    assert result.columns == ("工号", "姓名")


def test_spreadsheet_types_are_understood() -> None:
    result = one(rec(工号=1001.0, 手机=13800138000, 入职日期=datetime(2021, 5, 6)))
    person = result.people[0]
    assert (person.employee_id, person.mobile, person.start_date) == (
        "1001",
        "13800138000",
        date(2021, 5, 6),
    )


def test_template_and_constant_fields() -> None:
    config = MappingConfig.model_validate(
        {
            "employee_id": "id",
            "name": {"template": "{last}{first}"},
            "email": {"template": "{first}.{last}@example.com", "case": "lower"},
            "position": {"constant": "员工"},
        }
    )
    person = one({"id": "1", "first": "San", "last": "Zhang"}, config).people[0]
    assert (person.name, person.email, person.position) == (
        "ZhangSan",
        "san.zhang@example.com",
        "员工",
    )


# --- mapping never raises ------------------------------------------------------------------

KEYS = ["工号", "姓名", "邮箱", "别名", "部门", "职位", "手机", "座机", "性别", "状态", "入职日期",
        "离职日期", "first", "last", ROW_KEY, ERROR_KEY]  # fmt: skip
scalar = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(
        ["男", "离职", "2024-02-30", "+86 13800138000", "a@b.co", "A/B", "E1", "", " "]
    ),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=10),
)
value = st.one_of(
    scalar,
    st.lists(scalar, max_size=4),
    st.dictionaries(st.text(max_size=5), scalar, max_size=3),
)
record = st.dictionaries(st.sampled_from(KEYS), value, max_size=len(KEYS))

FULL = MappingConfig.model_validate(
    {
        "employee_id": {"field": "工号", "case": "upper"},
        "name": {"template": "{last}{姓名}"},
        "email": {"field": "邮箱", "case": "lower", "default": ""},
        "aliases": {"field": "别名", "split": ";"},
        "departments": {"field": "部门", "split": ";"},
        "position": "职位",
        "mobile": "手机",
        "tel": "座机",
        "gender": {"field": "性别", "map": {"先生": "male"}},
        "status": {"field": "状态", "map": {"x": "nonsense"}},
        "start_date": {"field": "入职日期", "date_format": ["%d.%m.%Y", "%Y"]},
        "end_date": "离职日期",
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record, max_size=12))
def test_mapping_never_raises_on_arbitrary_rows(records: list[dict[str, Any]]) -> None:
    result = map_records(records, FULL)
    ids = [p.employee_id for p in result.people]
    assert len(ids) == len(set(ids))
    assert not set(ids) & result.quarantined
    problem_ids = {p.employee_id for p in result.problems}
    assert result.quarantined <= problem_ids  # every quarantined employee says why
    assert result.rows == len(records)
    assert len(result.people) + len(result.quarantined) <= len(records)
    addresses = [a for p in result.people for a in (p.email, *p.aliases) if a]
    assert len(addresses) == len(set(addresses))  # no address is given to two people
    for person in result.people:
        assert person.name and person.employee_id
        for path in person.departments:
            assert Department(path) in result.departments


def test_a_status_flag_may_be_true_or_false_but_a_name_may_not() -> None:
    """LDAP/AD gives ``disabled`` as a boolean: a status, not a damaged value."""
    from syncengine.connectors.values import type_problem

    assert type_problem(True, numbers=True, flags=True) is None
    assert type_problem(False, numbers=False) == "is true/false, not text"
