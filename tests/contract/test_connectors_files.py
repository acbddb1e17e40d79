"""File connectors beyond the contract: encodings, sniffing, headers, sheets, JSON paths, errors."""

from __future__ import annotations

import codecs
import json
import shutil
import subprocess
import sys
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from syncengine.config import parse_config
from syncengine.connectors.base import ERROR_KEY, ROW_KEY, make_connector
from syncengine.connectors.config import MappingConfig
from syncengine.connectors.mapping import map_records
from syncengine.errors import ConfigError, SourceError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HEADER = "工号,姓名,部门\r\n"
ROWS = "E1,张三,研发中心/平台部\r\nE2,李四,市场部\r\n"


def read(tmp_path: Path, **options: Any) -> list[dict[str, Any]]:
    connector = make_connector(options, tmp_path)
    return list(connector.records())


def data(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != ROW_KEY} for r in records]


# --- encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("gbk", "gb18030"),
        ("gb18030", "gb18030"),
        ("utf-8", "utf-8-sig"),
        ("utf-8-sig", "utf-8-sig"),
        ("utf-16", "utf-16"),
    ],
)
def test_encoding_is_detected(tmp_path: Path, encoding: str, expected: str) -> None:
    (tmp_path / "p.csv").write_bytes((HEADER + ROWS).encode(encoding))
    connector = make_connector({"type": "csv", "path": "p.csv"}, tmp_path)
    records = list(connector.records())
    assert data(records) == [
        {"工号": "E1", "姓名": "张三", "部门": "研发中心/平台部"},
        {"工号": "E2", "姓名": "李四", "部门": "市场部"},
    ]
    assert f"encoding {expected}" in connector.describe()


def test_gb18030_only_characters(tmp_path: Path) -> None:
    # 𠮷 (U+20BB7) is outside GBK: only GB18030 (four bytes) can hold it.
    text = HEADER + "E3,𠮷野家,餐饮部\r\n"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    (tmp_path / "p.csv").write_bytes(text.encode("gb18030"))
    assert read(tmp_path, type="csv", path="p.csv")[0]["姓名"] == "𠮷野家"


def test_bom_does_not_stick_to_the_first_column(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_bytes(codecs.BOM_UTF8 + (HEADER + ROWS).encode("utf-8"))
    # even when the encoding is pinned to plain utf-8, which keeps the BOM as a character
    for encoding in ("auto", "utf-8"):
        first = read(tmp_path, type="csv", path="p.csv", encoding=encoding)[0]
        assert "工号" in first and first["工号"] == "E1"


def test_gbk_late_in_a_big_file_is_still_detected(tmp_path: Path) -> None:
    # 200 KB of ASCII, then a Chinese name: a sample-based guess would say ASCII/UTF-8.
    rows = "".join(f"E{i},name{i},dept\r\n" for i in range(10_000))
    text = HEADER + rows + "E99999,王五,市场部\r\n"
    (tmp_path / "p.csv").write_bytes(text.encode("gbk"))
    records = read(tmp_path, type="csv", path="p.csv")
    assert records[-1]["姓名"] == "王五"


def test_wrong_pinned_encoding_names_the_row_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_bytes((HEADER + ROWS).encode("gbk"))
    with pytest.raises(SourceError) as caught:
        read(tmp_path, type="csv", path="p.csv", encoding="utf-8")
    assert "p.csv" in str(caught.value)
    assert "source.encoding" in str(caught.value)


# --- delimiters, headers, rows ------------------------------------------------------------


@pytest.mark.parametrize("delimiter", ["\t", ";", "|", ","])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    text = (HEADER + ROWS).replace(",", delimiter)
    (tmp_path / "p.txt").write_text(text, "utf-8")
    connector = make_connector({"type": "csv", "path": "p.txt"}, tmp_path)
    records = list(connector.records())
    assert records[1]["部门"] == "市场部"
    assert f"delimiter {delimiter!r}" in connector.describe()


def test_tsv_sniffing_with_commas_inside_values(tmp_path: Path) -> None:
    text = "工号\t姓名\t职位\r\nE1\t张三\t工程师, 后端\r\nE2\t李四\t经理, 市场\r\n"
    (tmp_path / "p.tsv").write_text(text, "utf-8")
    records = read(tmp_path, type="csv", path="p.tsv")
    assert [r["职位"] for r in records] == ["工程师, 后端", "经理, 市场"]


def test_tsv_type_and_configured_delimiter(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("a\tb\r\n1\t2\r\n", "utf-8")
    assert data(read(tmp_path, type="tsv", path="p.tsv")) == [{"a": "1", "b": "2"}]
    (tmp_path / "p.csv").write_text("a;b\r\n1;2\r\n", "utf-8")
    assert data(read(tmp_path, type="csv", path="p.csv", delimiter=";")) == [{"a": "1", "b": "2"}]


def test_row_numbers_count_as_a_spreadsheet_does(tmp_path: Path) -> None:
    text = (
        "员工花名册 2026-11\r\n"  # a title row above the header
        "\r\n" + HEADER + 'E1,"张三\r\n(外派)",研发中心\r\n'  # a value spanning two lines
        ",,\r\n"  # a blank row
        "E2,李四,市场部\r\n"
    )
    (tmp_path / "p.csv").write_text(text, "utf-8")
    records = read(tmp_path, type="csv", path="p.csv", header_row=3)
    assert [(r[ROW_KEY], r["工号"]) for r in records] == [(4, "E1"), (6, "E2")]
    assert records[0]["姓名"] == "张三\r\n(外派)"


def test_short_rows_and_long_rows_are_flagged(tmp_path: Path) -> None:
    # Issue 10: a short row is a cut or a lost delimiter, not blank fields to push to Exmail.
    (tmp_path / "p.csv").write_text(HEADER + "E1,张三\r\nE2,李四,市场部,多余\r\n", "utf-8")
    records = read(tmp_path, type="csv", path="p.csv")
    assert records[0]["部门"] == ""
    assert "line 2: the row has 2 values but the header has 3 columns" in records[0][ERROR_KEY]
    assert "line 3: the row has 4 values but the header has 3 columns" in records[1][ERROR_KEY]
    result = map_records(
        records, MappingConfig.model_validate({"employee_id": "工号", "name": "姓名"})
    )
    assert result.quarantined == {"E1", "E2"}
    assert [p.row for p in result.problems] == [2, 3]


def test_rename_columns(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(HEADER + ROWS, "utf-8")
    records = read(tmp_path, type="csv", path="p.csv", rename={"工号": "employee_id"})
    assert records[0]["employee_id"] == "E1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header row"),
        (HEADER, "no data rows"),
        (HEADER + ",,\r\n\r\n", "no data rows"),
        ("工号,姓名,工号\r\nE1,a,b\r\n", "appears twice"),
        (",,\r\nE1,a,b\r\n", "header row is empty"),
    ],
)
def test_source_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.csv").write_text(text, "utf-8")
    with pytest.raises(SourceError) as caught:
        read(tmp_path, type="csv", path="p.csv")
    assert message in str(caught.value)
    assert "p.csv" in str(caught.value)


def test_a_directory_is_not_a_source(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(SourceError, match="not a regular file"):
        read(tmp_path, type="csv", path="d.csv")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"type": "csv", "path": "p.csv", "encodng": "gbk"}, "source.encodng"),
        ({"type": "csv", "path": "p.csv", "encoding": "klingon"}, "source.encoding"),
        ({"type": "csv", "path": "p.csv", "delimiter": ",,"}, "source.delimiter"),
        ({"type": "csv", "path": "p.csv", "header_row": 0}, "source.header_row"),
        ({"type": "csv"}, "source.path"),
        ({"type": "xlsx", "path": "p.xlsx", "sheet": [1]}, "source.sheet"),
        ({"type": "json", "path": "p.json", "record_path": "x"}, "source.record_path"),
        ({"type": "jsonl", "path": "p.jsonl", "records_path": "x"}, "source.records_path"),
        ({"type": "excel", "path": "p.xls"}, "source.type"),
        ({"path": "p.csv"}, "source.type"),
    ],
)
def test_bad_options_name_the_key(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_connector(options, tmp_path)
    assert key in str(caught.value)


def test_department_source_options_are_named_under_their_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"departments\.source\.encodng"):
        make_connector({"type": "csv", "path": "d.csv", "encodng": "x"}, tmp_path,
                       key="departments.source")  # fmt: skip


def test_config_file_errors_name_the_mapping_key() -> None:
    base = {"exmail": {"corp_id": "x", "secrets": {"contacts": "s"}}}
    with pytest.raises(ConfigError, match=r"mapping\.emial"):
        parse_config({**base, "mapping": {"emial": "邮箱"}})
    with pytest.raises(ConfigError, match=r"mapping\.email\.splt"):
        parse_config({**base, "mapping": {"email": {"field": "邮箱", "splt": ";"}}})
    with pytest.raises(ConfigError, match=r"mapping\.name.*exactly one"):
        parse_config({**base, "mapping": {"name": {"field": "a", "constant": "b"}}})
    with pytest.raises(ConfigError, match=r"departments\.source"):
        parse_config({**base, "departments": {"id_field": "id"}})
    cfg = parse_config({**base, "source": {"type": "csv", "path": "x.csv", "encoding": "gbk"}})
    assert cfg.source is not None
    assert cfg.source.options == {"type": "csv", "path": "x.csv", "encoding": "gbk"}


# --- xlsx ---------------------------------------------------------------------------------


def _workbook(path: Path) -> None:
    wb = openpyxl.Workbook()
    cover = wb.active
    cover.title = "封面"
    cover.append(["员工花名册"])
    people = wb.create_sheet("员工")
    people.append(["工号", "姓名", "手机", "入职日期", None])
    people.append([1001, "张三", 13800138000, datetime(2020, 1, 2), None])
    people.append([None, None, None, None, None])
    people.append(["1002", "李四", "13900000000", "2021-05-06", None])
    people.append(["1003", "王五", None, None, "多余"])
    wb.save(path)


def test_xlsx_sheet_by_name_and_by_index(tmp_path: Path) -> None:
    _workbook(tmp_path / "p.xlsx")
    by_name = read(tmp_path, type="xlsx", path="p.xlsx", sheet="员工")
    by_index = read(tmp_path, type="xlsx", path="p.xlsx", sheet=1)
    assert by_name == by_index
    assert [r[ROW_KEY] for r in by_name] == [2, 4, 5]
    assert by_name[0]["工号"] == 1001  # cell types are kept ...
    config = MappingConfig.model_validate(
        {"employee_id": "工号", "name": "姓名", "mobile": "手机", "start_date": "入职日期"}
    )
    result = map_records(by_name, config)  # ... and mapping reads them as a person would
    first = result.people[0]
    assert (first.employee_id, first.mobile, first.start_date) == (
        "1001",
        "13800138000",
        date(2020, 1, 2),
    )
    assert result.people[1].start_date == date(2021, 5, 6)
    assert result.quarantined == {"1003"}  # a value beyond the header's columns
    with pytest.raises(SourceError, match=r"封面.*no data rows"):  # default: the first sheet
        read(tmp_path, type="xlsx", path="p.xlsx")


def test_xlsx_errors(tmp_path: Path) -> None:
    _workbook(tmp_path / "p.xlsx")
    with pytest.raises(SourceError, match=r"no sheet named .人员.*封面, 员工"):
        read(tmp_path, type="xlsx", path="p.xlsx", sheet="人员")
    with pytest.raises(SourceError, match="no sheet #5"):
        read(tmp_path, type="xlsx", path="p.xlsx", sheet=5)
    (tmp_path / "fake.xlsx").write_text("工号,姓名\r\n", "utf-8")
    with pytest.raises(SourceError, match=r"not a readable \.xlsx"):
        read(tmp_path, type="xlsx", path="fake.xlsx")
    with pytest.raises(SourceError, match="file not found"):
        read(tmp_path, type="xlsx", path="none.xlsx")


# --- JSON and JSON Lines ------------------------------------------------------------------


def test_json_records_path_and_nested_fields(tmp_path: Path) -> None:
    doc = {
        "data": {
            "total": 2,
            "employees": [
                {"id": "E1", "name": {"full": "张三"}, "aliases": ["a@x.com", "b@x.com"]},
                ["not", "an", "object"],
            ],
        }
    }
    (tmp_path / "p.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    records = read(tmp_path, type="json", path="p.json", records_path="data.employees")
    assert [r[ROW_KEY] for r in records] == [1, 2]
    assert "record 2 is a list" in records[1][ERROR_KEY]
    config = MappingConfig.model_validate(
        {"employee_id": "id", "name": "name.full", "aliases": {"field": "aliases", "split": ","}}
    )
    result = map_records(records, config)
    assert result.people[0].name == "张三"
    assert result.people[0].aliases == ("a@x.com", "b@x.com")
    assert result.problems[0].row == 2


def test_json_top_level_list_and_index_in_path(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"id": "E1"}]', "utf-8")
    assert data(read(tmp_path, type="json", path="a.json")) == [{"id": "E1"}]
    (tmp_path / "b.json").write_text('{"pages": [{"items": [{"id": "E2"}]}]}', "utf-8")
    records = read(tmp_path, type="json", path="b.json", records_path="pages.0.items")
    assert data(records) == [{"id": "E2"}]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ('{"data": {"staff": []}}', "data.employees", "has keys: staff"),
        ('{"data": {"employees": {}}}', "data.employees", "is an object, not a list"),
        ('{"employees": [1], "x": 2}', "", "lists here: employees"),
        ('{"data": {"employees": []}}', "data.employees", "list of records is empty"),
        ('{"data": ', "", "not valid JSON"),
    ],
)
def test_json_source_errors(tmp_path: Path, text: str, path: str, message: str) -> None:
    (tmp_path / "p.json").write_text(text, "utf-8")
    with pytest.raises(SourceError) as caught:
        read(tmp_path, type="json", path="p.json", records_path=path)
    assert message in str(caught.value)
    assert "p.json" in str(caught.value)


def test_jsonl_lines_blank_lines_and_bad_lines(tmp_path: Path) -> None:
    text = '{"id": "E1", "name": "张三"}\n\n{"id": "E2", "name": \n"null"\n{"id": "E3"}\n'
    (tmp_path / "p.jsonl").write_text(text, "utf-8")
    records = read(tmp_path, type="jsonl", path="p.jsonl")
    assert [r[ROW_KEY] for r in records] == [1, 3, 4, 5]
    assert "not valid JSON" in records[1][ERROR_KEY]
    assert "line 4 is a string" in records[2][ERROR_KEY]
    (tmp_path / "empty.jsonl").write_text("\n\n", "utf-8")
    with pytest.raises(SourceError, match="has no records"):
        read(tmp_path, type="jsonl", path="empty.jsonl")


# --- the samples --------------------------------------------------------------------------


def test_sample_csv_and_xlsx_give_the_same_people(tmp_path: Path) -> None:
    for name in ("hr-export.csv", "hr-export.xlsx", "departments.csv"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    toml = (SAMPLES / "syncengine.toml").read_text("utf-8")
    cfg = parse_config(tomllib.loads(toml), path=tmp_path / "syncengine.toml")
    assert cfg.departments is not None
    departments = list(make_connector(cfg.departments.source.options, tmp_path).records())
    results = []
    for options in (
        {"type": "csv", "path": "hr-export.csv"},
        {"type": "xlsx", "path": "hr-export.xlsx", "sheet": "员工"},
    ):
        people = make_connector(options, tmp_path).records()
        results.append(
            map_records(
                people, cfg.mapping, department_records=departments, departments=cfg.departments
            )
        )
    csv_result, xlsx_result = results
    assert csv_result.people == xlsx_result.people
    assert csv_result.problems == xlsx_result.problems
    assert 290 <= len(csv_result.people) <= 310
    assert csv_result.quarantined == {"E0042", "E0121"}
    # the department table is also a sheet of the workbook
    sheet = list(make_connector({"type": "xlsx", "path": "hr-export.xlsx", "sheet": "部门"},
                                tmp_path).records())  # fmt: skip
    assert len(sheet) == len(departments)


def test_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    """The committed samples are the generator's output (regenerate them, do not hand-edit)."""
    subprocess.run(
        [sys.executable, str(SAMPLES / "make_samples.py"), "--out", str(tmp_path)],
        check=True,
        timeout=120,
    )
    for name in ("hr-export.csv", "departments.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    for sheet in ("员工", "部门"):
        options = {"type": "xlsx", "path": "hr-export.xlsx", "sheet": sheet}
        assert read(tmp_path, **options) == read(SAMPLES, **options)


def test_sample_config_matches_the_emulator_seed() -> None:
    seed = json.loads((SAMPLES / "emulator-seed.json").read_text("utf-8"))
    cfg = parse_config(
        tomllib.loads((SAMPLES / "syncengine.toml").read_text("utf-8")),
        path=SAMPLES / "syncengine.toml",
    )
    assert cfg.exmail.corp_id == seed["corp_id"]
    assert list(cfg.exmail.domains) == seed["domains"]
    assert {k: v.get_secret_value() for k, v in cfg.exmail.secrets.items()} == seed["secrets"]
    ids = {u.get("extid") for u in seed["users"]} - {""}
    export = read(SAMPLES, type="csv", path="hr-export.csv")
    assert ids <= {r["工号"] for r in export}  # the demo directory's people are in HR


def test_a_file_neither_utf8_nor_gb18030_names_the_bytes_and_offers_a_guess(
    tmp_path: Path,
) -> None:
    """The refusal (with charset-normalizer's guess in the hint, imported only for it)."""
    (tmp_path / "p.csv").write_bytes("工号,姓名\r\nE1,".encode() + b"\xff\xfe\xff\r\n")
    with pytest.raises(SourceError) as caught:
        read(tmp_path, type="csv", path="p.csv")
    message = str(caught.value)
    assert "line 2, column 4: bytes 0xff 0xfe" in message and "p.csv" in message
    assert "charset-normalizer guesses" in message
