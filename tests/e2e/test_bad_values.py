"""Issue 10: values that are misread, mistyped or hostile are quarantined or normalised, never
pushed to Exmail as they came. The real ``ingest`` command on real JSON, XLSX and XLS files
(made with openpyxl and xlwt), checked in the real SQLite staging database it writes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlwt
from click.testing import CliRunner, Result

from syncengine import service
from syncengine.cli import main
from syncengine.config import load_config
from syncengine.domain import Person

CONFIG = """\
[exmail]
api = "v2"
base_url = "http://127.0.0.1:9"
corp_id = "wwtest"
domains = ["example.com"]

[exmail.secrets]
contacts = "not-used"

[database]
url = "sqlite:///{db}"

[source]
type = "{kind}"
path = "{path}"

[mapping]
employee_id = "id"
name = "name"
email = "email"
departments = "dept"
position = "title"
mobile = "mobile"
start_date = "start"
"""


def ingest(folder: Path, kind: str, path: str) -> tuple[Result, dict[str, Any]]:
    config = folder / "syncengine.toml"
    config.write_text(CONFIG.format(db=folder / "staging.db", kind=kind, path=path), "utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "ingest", "--json"])
    try:
        return result, json.loads(result.stdout)
    except json.JSONDecodeError:
        return result, {}


@pytest.fixture
def people_of() -> Iterator[Any]:
    opened: list[Any] = []

    def load(folder: Path) -> dict[str, Person]:
        repo = service.open_staging(load_config(folder / "syncengine.toml"))
        opened.append(repo)
        snapshot = repo.current_snapshot()
        assert snapshot is not None
        return {p.employee_id: p for p in repo.load_people(snapshot.id)}

    yield load
    for repo in opened:
        repo.close()


def reasons(doc: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in doc["problems"]:
        key = p["employee_id"] or f"row {p['row']}"
        out[key] = (out.get(key, "") + " " + p["reason"]).strip()
    return out


def good(eid: Any, **kw: Any) -> dict[str, Any]:
    address = str(eid).lower().strip("\u200b") + "@example.com"
    row: dict[str, Any] = {"id": eid, "name": "王芳", "email": address, "dept": "研发中心",
                           "title": "工程师", "mobile": "", "start": ""}  # fmt: skip
    row.update(kw)
    return row


def test_json_values_of_the_wrong_type_or_hostile_are_quarantined(
    tmp_path: Path, people_of: Any
) -> None:
    records = [
        good("E1", name={"first": "芳", "last": "王"}),
        good("E2", name=12345),
        good("E3", title=["工程师", "经理"]),
        good("E4", name="=cmd|' /C calc'!A0"),
        good("E5", title="@SUM(1+1)"),
        good("E6", email="e6@gmail.com"),
        good("E7", name="张\u202e三"),
        good("E8", name=True),
        good(1009, mobile=13800138000),  # numbers for an id and a mobile: fine, as text
        good("E10\u200b", name="王\u3000芳"),
        good("E11", name=" Anna  Lee\u3000", dept="研发中心／平台部", start=45000),
        good("E12", title="- 工程师", dept="研发中心\\测试部"),
    ]
    (tmp_path / "hr.json").write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    result, doc = ingest(tmp_path, "json", "hr.json")
    assert result.exit_code == 0, result.output
    why = reasons(doc)
    assert set(doc["quarantined_ids"]) == {"E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8"}
    assert "name is an object" in why["E1"]
    assert "name is a number" in why["E2"]
    assert "position is a list of 2 values" in why["E3"]
    assert "formula" in why["E4"] and "formula" in why["E5"]
    assert "'gmail.com' is not one of [exmail] domains (example.com)" in why["E6"]
    assert "U+202E" in why["E7"]
    assert "name is true/false" in why["E8"]
    people = people_of(tmp_path)
    assert sorted(people) == ["1009", "E10", "E11", "E12"]
    assert people["1009"].mobile == "13800138000"
    assert people["E10"].name == "王芳"
    assert people["E11"].name == "Anna  Lee"
    assert people["E11"].departments == ("研发中心/平台部",)
    assert people["E11"].start_date == dt.date(2023, 3, 15)
    assert people["E12"].position == "- 工程师"
    assert people["E12"].departments == ("研发中心/测试部",)


def test_a_deeply_nested_json_file_is_a_clear_source_error(tmp_path: Path) -> None:
    (tmp_path / "hr.json").write_text("[" * 100_000 + "]" * 100_000, "utf-8")
    result, _ = ingest(tmp_path, "json", "hr.json")
    assert result.exit_code == 1
    assert "nested" in result.output and "hr.json" in result.output
    assert "Traceback" not in result.output


def _xlsx_rows() -> list[list[Any]]:
    return [
        ["id", "name", "email", "dept", "title", "mobile", "start"],
        ["E1", "王芳", "e1@example.com", "研发中心/平台部", "工程师", 13800138000, 45000],
        ["E2", "李四", "e2@example.com", None, "=1+1", 13800138001, dt.date(2024, 3, 1)],
        [1003, "张伟", "e3@example.com", "销售中心", "销售", "", ""],
    ]


def test_xlsx_merged_cells_formulas_and_serial_dates(tmp_path: Path, people_of: Any) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in _xlsx_rows():
        ws.append(row)
    ws["E3"] = "=1+1"  # a real formula: read as its value (none cached here), not its text
    ws.merge_cells("D2:D3")  # the department of E1 covers E2's row too
    ws["B4"] = '=HYPERLINK("http://x","张伟")'
    wb.save(tmp_path / "hr.xlsx")
    result, doc = ingest(tmp_path, "xlsx", "hr.xlsx")
    assert result.exit_code == 0, result.output
    people = people_of(tmp_path)
    assert people["E1"].start_date == dt.date(2023, 3, 15)
    assert people["E1"].mobile == "13800138000"
    assert people["E2"].departments == ("研发中心/平台部",)
    assert people["E2"].position == ""
    assert people["E2"].start_date == dt.date(2024, 3, 1)
    assert "1003" not in people  # a formula without a cached value: the name is missing
    assert doc["quarantined_ids"] == ["1003"]


def test_xls_is_read_with_merged_cells_and_text_formulas_quarantined(
    tmp_path: Path, people_of: Any
) -> None:
    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("员工")
    rows = _xlsx_rows()
    rows[2][4] = "工程师"
    rows[3][4] = "=cmd|' /C calc'!A0"  # text that is a formula injection
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if (r, c) == (1, 3) or (r, c) == (2, 3):
                continue
            if isinstance(value, dt.date):
                style = xlwt.easyxf(num_format_str="YYYY-MM-DD")
                sheet.write(r, c, value, style)
            elif value not in (None, ""):
                sheet.write(r, c, value)
    sheet.write_merge(1, 2, 3, 3, "研发中心/平台部")
    book.save(str(tmp_path / "hr.xls"))
    result, doc = ingest(tmp_path, "xls", "hr.xls")
    assert result.exit_code == 0, result.output
    people = people_of(tmp_path)
    assert sorted(people) == ["E1", "E2"]
    assert people["E2"].departments == ("研发中心/平台部",)
    assert people["E2"].start_date == dt.date(2024, 3, 1)
    assert people["E1"].start_date == dt.date(2023, 3, 15)
    assert doc["quarantined_ids"] == ["1003"]
    assert "formula" in reasons(doc)["1003"]
