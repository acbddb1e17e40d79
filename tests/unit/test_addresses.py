"""Address generation: pinyin with surname rules, templates, clashes resolved by employee id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncengine.addresses import (
    AddressAllocator,
    check_template,
    generate_addresses,
    name_parts,
    render_local,
    sanitise_local,
)
from syncengine.domain import is_valid_email
from syncengine.errors import ConfigError

T = "{pinyin_family}{pinyin_given}"


@pytest.mark.parametrize(
    ("name", "family", "given"),
    [
        ("张三", ("zhang",), ("san",)),
        ("欧阳娜娜", ("ou", "yang"), ("na", "na")),
        ("司马懿", ("si", "ma"), ("yi",)),
        ("诸葛亮", ("zhu", "ge"), ("liang",)),
        ("单雄信", ("shan",), ("xiong", "xin")),  # not dān
        ("曾国藩", ("zeng",), ("guo", "fan")),  # not céng
        ("区志强", ("ou",), ("zhi", "qiang")),  # not qū
        ("仇英", ("qiu",), ("ying",)),
        ("解缙", ("xie",), ("jin",)),
        ("吕布", ("lv",), ("bu",)),  # ü is written v
        ("李", ("li",), ()),
        ("John Smith", ("smith",), ("john",)),
        ("Zoë Ann Müller", ("muller",), ("zoe", "ann")),
        (" 王 小 二 ", ("wang",), ("xiao", "er")),
    ],
)
def test_name_parts(name: str, family: tuple[str, ...], given: tuple[str, ...]) -> None:
    parts = name_parts(name)
    assert (parts.family, parts.given) == (family, given)


def test_single_character_surname_reading_only_applies_to_the_surname() -> None:
    # 单 in a given name is read normally by pypinyin (dan), as a surname shan.
    assert render_local(T, "单单", "E1") == "shandan"


@pytest.mark.parametrize(
    ("template", "name", "expect"),
    [
        (T, "欧阳小明", "ouyangxiaoming"),
        ("{given}.{family}", "欧阳小明", "xiaoming.ouyang"),
        ("{initials}", "欧阳小明", "oyxm"),
        ("{family}{given_initial}", "张小明", "zhangx"),
        ("{given_initials}.{family}", "张小明", "xm.zhang"),
        ("{family_initial}{given}", "欧阳小明", "oxiaoming"),
        ("{family_initials}{given}", "欧阳小明", "oyxiaoming"),
        ("{pinyin_given}_{employee_id}", "李四", "si_e007"),
        ("{given}.{family}", "李", "li"),  # a lone separator is dropped
        (T, "???", ""),
    ],
)
def test_templates(template: str, name: str, expect: str) -> None:
    assert render_local(template, name, "E007") == expect


def test_unknown_placeholder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pinyin_surname"):
        check_template("{pinyin_surname}")
    with pytest.raises(ConfigError, match="malformed"):
        check_template("{given")


def test_clashes_resolved_in_employee_id_order() -> None:
    people = [("E3", "张伟"), ("E1", "张伟"), ("E2", "张 伟"), ("E4", "欧阳娜娜")]
    got = generate_addresses(
        people,
        template=T,
        fallback_template="u{employee_id}",
        domain="X.com",
        taken={"zhangwei@x.com", "ZHANGWEI3@x.com", "ouyangnana@x.com"},
    )
    assert got == {
        "E1": "zhangwei2@x.com",
        "E2": "zhangwei4@x.com",
        "E3": "zhangwei5@x.com",
        "E4": "ouyangnana2@x.com",
    }


def test_fallback_template_when_the_name_gives_nothing() -> None:
    got = generate_addresses(
        [("E9", "???")], template=T, fallback_template="u{employee_id}", domain="x.com", taken=()
    )
    assert got == {"E9": "ue9@x.com"}


def test_allocator_is_linear_for_many_equal_names() -> None:
    alloc = AddressAllocator("x.com", [])
    got = [alloc.allocate("zhangwei") for _ in range(2000)]
    assert got[0] == "zhangwei@x.com" and got[-1] == "zhangwei2000@x.com"
    assert len(set(got)) == 2000


def test_addresses_taken_in_the_callers_collections_are_skipped_as_taken_ones_are() -> None:
    owner = {"zhangwei@x.com": "zhangwei@x.com"}  # a planner's index: keys are addresses
    groups = {"zhangwei2@x.com"}
    got = generate_addresses(
        [("E1", "张伟"), ("E2", "张伟")], template="{pinyin_family}{pinyin_given}",
        fallback_template="u{employee_id}", domain="X.com", taken=["ZhangWei3@x.com"],
        taken_in=(owner, groups),
    )  # fmt: skip
    assert got == {"E1": "zhangwei4@x.com", "E2": "zhangwei5@x.com"}
    assert owner == {"zhangwei@x.com": "zhangwei@x.com"} and groups == {"zhangwei2@x.com"}
    alloc = AddressAllocator("x.com", [], taken_in=(groups,))
    assert alloc.is_taken("ZhangWei2@X.com") and not alloc.is_taken("zhangwei@x.com")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=12), st.sampled_from([T, "{given}.{family}", "{initials}-{family}"]))
def test_any_name_gives_a_valid_lowercase_address(name: str, template: str) -> None:
    (addr,) = generate_addresses(
        [("E1", name)], template=template, fallback_template="u{employee_id}", domain="x.com",
        taken=(),
    ).values()  # fmt: skip
    assert is_valid_email(addr) and addr == addr.lower() and addr.isascii()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["张伟", "王芳", "欧阳娜娜", "李娜"]), max_size=12))
def test_generated_addresses_are_unique_and_avoid_taken(names: list[str]) -> None:
    people = [(f"E{i:02d}", n) for i, n in enumerate(names)]
    taken = {"zhangwei@x.com", "wangfang2@x.com"}
    got = generate_addresses(
        people, template=T, fallback_template="u{employee_id}", domain="x.com", taken=taken
    )
    assert len(set(got.values())) == len(people)
    assert not set(got.values()) & taken


def test_sanitise_local() -> None:
    assert sanitise_local("..A--b__c..") == "a-b_c"
    assert sanitise_local("Ünïcödé") == "unicode"
