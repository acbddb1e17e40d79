"""The connector contract: ONE set of checks, run over every connector.

Each case is a factory that builds a configured connector over the same canonical data set
(``CANONICAL``), another that builds one whose source is missing or fails, and what its
``describe()`` must mention or must never show. Every check runs against every case:

- all records come back, with the same values (compared as text, as mapping reads them), and
  mapping them gives the same Persons as mapping the canonical data directly;
- records are plain dicts; row numbers, when a connector gives them, are distinct and >= 1;
- ``records()`` is lazy and streaming: an iterator, and calling it touches nothing yet;
- ``describe()`` names the source and shows no secret;
- a missing or failing source raises SourceError (naming the source), and so does zero rows.

Adding a connector: append a ``ConnectorCase`` to ``CASES`` at the end of this file (see the
marker there). A case's factories get a ``CaseContext`` with ``tmp_path`` and ``fixture(name)``
(``request.getfixturevalue``), so a case can use a session fixture such as a database or a
directory server.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from syncengine.connectors.base import ERROR_KEY, ROW_KEY, Connector, make_connector
from syncengine.connectors.config import MappingConfig
from syncengine.connectors.mapping import map_records, text_value
from syncengine.errors import SourceError

FIELDS = ["employee_id", "name", "email", "departments", "mobile", "gender", "start_date"]
CANONICAL: list[dict[str, str]] = [
    {"employee_id": "E0001", "name": "张三", "email": "zhangsan@example.com",
     "departments": "研发中心/平台部", "mobile": "13800000001", "gender": "男",
     "start_date": "2019-03-01"},
    {"employee_id": "E0002", "name": "李四", "email": "lisi@example.com",
     "departments": "研发中心/移动部;市场部", "mobile": "+86 138 0000 0002", "gender": "女",
     "start_date": "2020-07-15"},
    {"employee_id": "E0003", "name": '欧阳 "小明", 二世', "email": "",
     "departments": "市场部", "mobile": "", "gender": "男", "start_date": "2021-01-04"},
    {"employee_id": "E0004", "name": "Zoë Wang", "email": "zoe.wang@example.com",
     "departments": "人力资源部", "mobile": "13900000004", "gender": "女",
     "start_date": "2018-11-30"},
    {"employee_id": "E0005", "name": "赵六", "email": "zhaoliu@example.com",
     "departments": "", "mobile": "13900000005", "gender": "", "start_date": ""},
]  # fmt: skip
CANONICAL_MAPPING = MappingConfig.model_validate(
    {
        "employee_id": "employee_id",
        "name": "name",
        "email": "email",
        "departments": {"field": "departments", "split": ";"},
        "mobile": "mobile",
        "gender": "gender",
        "start_date": "start_date",
    }
)


@dataclass
class CaseContext:
    """What a case factory may use: a fresh temp dir and any pytest fixture by name."""

    tmp_path: Path
    request: pytest.FixtureRequest

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


@dataclass(frozen=True)
class ConnectorCase:
    """One connector configured over given records (``[]`` must give a zero-row source)."""

    id: str
    make: Callable[[CaseContext, list[dict[str, str]]], Connector]
    make_failing: Callable[[CaseContext], Connector]
    # describe() must contain this; the failing source's SourceError must name it too
    names: Callable[[CaseContext], str]
    secrets: tuple[str, ...] = ()
    marks: tuple[Any, ...] = field(default=())


# --- file cases ---------------------------------------------------------------------------


def _write_delimited(
    path: Path, records: list[dict[str, str]], delimiter: str, encoding: str
) -> None:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(records)


def _delimited_case(
    case_id: str, kind: str, suffix: str, sep: str, file_encoding: str, **options: Any
) -> ConnectorCase:
    def make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
        path = ctx.tmp_path / f"people{suffix}"
        _write_delimited(path, records, sep, file_encoding)
        return make_connector({"type": kind, "path": path.name, **options}, ctx.tmp_path)

    def failing(ctx: CaseContext) -> Connector:
        return make_connector({"type": kind, "path": f"missing{suffix}", **options}, ctx.tmp_path)

    return ConnectorCase(case_id, make, failing, names=lambda ctx: suffix)


def _xlsx_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    wb = openpyxl.Workbook()
    wb.active.title = "说明"
    wb.active.append(["this sheet is not the data"])
    sheet = wb.create_sheet("员工")
    sheet.append(FIELDS)
    for r in records:
        sheet.append([r[f] for f in FIELDS])
    wb.save(ctx.tmp_path / "people.xlsx")
    return make_connector({"type": "xlsx", "path": "people.xlsx", "sheet": "员工"}, ctx.tmp_path)


def _json_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    doc = {"meta": {"exported": "2026-11-29"}, "data": {"employees": records}}
    (ctx.tmp_path / "people.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    options = {"type": "json", "path": "people.json", "records_path": "data.employees"}
    return make_connector(options, ctx.tmp_path)


def _jsonl_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    (ctx.tmp_path / "people.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    return make_connector({"type": "jsonl", "path": "people.jsonl"}, ctx.tmp_path)


def _missing(kind: str, name: str) -> Callable[[CaseContext], Connector]:
    return lambda ctx: make_connector({"type": kind, "path": name}, ctx.tmp_path)


CASES: list[ConnectorCase] = [
    _delimited_case("csv-utf8", "csv", ".csv", ",", "utf-8"),
    _delimited_case("csv-gb18030-semicolon", "csv", ".txt", ";", "gb18030"),
    _delimited_case(
        "csv-utf8-bom-pinned", "csv", ".csv", ",", "utf-8-sig", encoding="utf-8-sig", delimiter=","
    ),
    _delimited_case("tsv", "tsv", ".tsv", "\t", "utf-8"),
    _delimited_case("tsv-utf16-excel", "tsv", ".tsv", "\t", "utf-16"),
    ConnectorCase("xlsx", _xlsx_make, _missing("xlsx", "gone.xlsx"), lambda ctx: ".xlsx"),
    ConnectorCase("json", _json_make, _missing("json", "gone.json"), lambda ctx: ".json"),
    ConnectorCase("jsonl", _jsonl_make, _missing("jsonl", "gone.jsonl"), lambda ctx: ".jsonl"),
]

# --- more connectors: append their cases below this line ---------------------------------
# e.g. CASES.append(ConnectorCase("sql-sqlite", make=..., make_failing=..., names=...,
#                                 secrets=("the-password",), marks=(pytest.mark.postgres,)))


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=c.marks) for c in CASES]


@pytest.fixture
def ctx(tmp_path: Path, request: pytest.FixtureRequest) -> CaseContext:
    return CaseContext(tmp_path, request)


def _as_text(record: dict[str, Any]) -> dict[str, str]:
    return {f: text_value(record.get(f)) for f in FIELDS}


def _drain(records: Iterator[dict[str, Any]], limit: int = 10_000) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        out.append(rec)
        assert len(out) <= limit, "the connector yields more records than the source holds"
    return out


@pytest.mark.parametrize("case", _params())
def test_yields_every_record_with_the_same_values(case: ConnectorCase, ctx: CaseContext) -> None:
    records = _drain(case.make(ctx, CANONICAL).records())
    assert all(isinstance(r, dict) and all(isinstance(k, str) for k in r) for r in records)
    assert not any(ERROR_KEY in r for r in records)
    got = sorted((_as_text(r) for r in records), key=lambda r: r["employee_id"])
    assert got == CANONICAL


@pytest.mark.parametrize("case", _params())
def test_mapping_the_records_gives_the_same_people(case: ConnectorCase, ctx: CaseContext) -> None:
    expected = map_records(CANONICAL, CANONICAL_MAPPING)
    assert len(expected.people) == len(CANONICAL)  # the canonical data is clean
    result = map_records(case.make(ctx, CANONICAL).records(), CANONICAL_MAPPING)
    assert result.problems == ()
    assert result.people == expected.people
    assert result.departments == expected.departments


@pytest.mark.parametrize("case", _params())
def test_row_numbers_are_distinct_and_positive(case: ConnectorCase, ctx: CaseContext) -> None:
    records = _drain(case.make(ctx, CANONICAL).records())
    rows = [r[ROW_KEY] for r in records if ROW_KEY in r]
    assert all(isinstance(n, int) and n >= 1 for n in rows)
    assert len(rows) == len(set(rows))


@pytest.mark.parametrize("case", _params())
def test_records_stream_lazily(case: ConnectorCase, ctx: CaseContext) -> None:
    connector = case.make_failing(ctx)
    stream = connector.records()  # must not touch the (failing) source yet
    assert isinstance(stream, Iterator)
    with pytest.raises(SourceError):
        next(stream)
    good = case.make(ctx, CANONICAL).records()
    assert isinstance(good, Iterator)
    first = next(good)
    assert isinstance(first, dict)
    assert len(_drain(good)) == len(CANONICAL) - 1


@pytest.mark.parametrize("case", _params())
def test_describes_itself_without_secrets(case: ConnectorCase, ctx: CaseContext) -> None:
    connector = case.make(ctx, CANONICAL)
    text = connector.describe()
    assert isinstance(text, str) and text.strip()
    assert case.names(ctx) in text
    _drain(connector.records())
    after = connector.describe()  # describing after reading may add detail, never a secret
    for secret in case.secrets:
        assert secret not in text
        assert secret not in after


@pytest.mark.parametrize("case", _params())
def test_missing_or_failing_source_raises_source_error(
    case: ConnectorCase, ctx: CaseContext
) -> None:
    connector = case.make_failing(ctx)
    with pytest.raises(SourceError) as caught:
        _drain(connector.records())
    message = str(caught.value)
    assert case.names(ctx) in message
    for secret in case.secrets:
        assert secret not in message


@pytest.mark.parametrize("case", _params())
def test_zero_rows_is_a_source_error(case: ConnectorCase, ctx: CaseContext) -> None:
    with pytest.raises(SourceError) as caught:
        _drain(case.make(ctx, []).records())
    for secret in case.secrets:
        assert secret not in str(caught.value)
