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

# SQL, LDAP and HTTP: the same records in a real SQLite file, on the real PostgreSQL server, in
# the real slapd (tests/fixtures/ldap.py) and behind a real paged JSON API on loopback. Imports
# are local so that this block stays apart from the file cases above.
SQL_PASSWORD = "Sql-Contract-Pa55"  # PostgreSQL's test cluster trusts; the secret must not show
HTTP_TOKEN = "http-contract-token-7f3a"
LDAP_WRONG_PASSWORD = "Wrong-Contract-Pa55"
SQL_QUERY = "SELECT * FROM people ORDER BY employee_id"


def _sql_fill(url: str, records: list[dict[str, str]]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        table = sa.Table("people", sa.MetaData(), *(sa.Column(f, sa.Text) for f in FIELDS))
        table.create(engine)
        with engine.begin() as conn:
            if records:
                conn.execute(table.insert(), records)
    finally:
        engine.dispose()


def _sqlite_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    _sql_fill(f"sqlite:///{ctx.tmp_path / 'people.db'}", records)
    options = {"type": "sql", "url": "sqlite:///people.db", "query": SQL_QUERY, "batch_size": 2}
    return make_connector(options, ctx.tmp_path)


def _sqlite_failing(ctx: CaseContext) -> Connector:
    url = "sqlite:///no-such-folder/people.db"  # SQLite cannot create a file in a missing folder
    return make_connector({"type": "sql", "url": url, "query": SQL_QUERY}, ctx.tmp_path)


def _pg_database(ctx: CaseContext) -> Any:
    import uuid

    server = ctx.fixture("postgres_server")
    name = f"contract_{uuid.uuid4().hex[:10]}"
    server.create_database(name)
    ctx.request.addfinalizer(lambda: server.drop_database(name))
    return server, name


def _pg_url(server: Any, name: str) -> str:
    return f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"


def _pg_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    server, name = _pg_database(ctx)
    _sql_fill(server.url(name), records)
    options = {
        "type": "sql",
        "url": _pg_url(server, name),
        "password": SQL_PASSWORD,
        "query": SQL_QUERY,
        "batch_size": 2,
    }
    return make_connector(options, ctx.tmp_path)


def _pg_failing(ctx: CaseContext) -> Connector:
    server = ctx.fixture("postgres_server")
    url = _pg_url(server, "no_such_database_here")
    options = {"type": "sql", "url": url, "password": SQL_PASSWORD, "query": SQL_QUERY}
    return make_connector(options, ctx.tmp_path)


def _pg_names(ctx: CaseContext) -> str:
    server = ctx.fixture("postgres_server")
    return f"{server.host}:{server.port}"


# Each canonical field in an attribute that inetOrgPerson allows; empty values are left out.
LDAP_ATTRIBUTES = {
    "employee_id": "employeeNumber",
    "name": "cn",
    "email": "mail",
    "departments": "departmentNumber",
    "mobile": "mobile",
    "gender": "employeeType",
    "start_date": "description",
}


def _ldap_options(server: Any, base_dn: str, password: str) -> dict[str, Any]:
    return {
        "type": "ldap",
        "url": server.url,
        "bind_dn": server.bind_dn,
        "password": password,
        "base_dn": base_dn,
        "filter": "(objectClass=inetOrgPerson)",
        "attribute_map": LDAP_ATTRIBUTES,
        "page_size": 2,
    }


def _ldap_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    import uuid

    import ldap3

    server = ctx.fixture("ldap_server")
    base_dn = f"ou=contract-{uuid.uuid4().hex[:10]},{server.suffix}"
    dns = [f"uid={r['employee_id']},{base_dn}" for r in records]
    conn = ldap3.Connection(
        ldap3.Server(server.url, get_info=ldap3.NONE, connect_timeout=5),
        server.admin_dn,
        server.admin_password,
        receive_timeout=10,
    )
    assert conn.bind(), conn.result
    try:
        assert conn.add(base_dn, "organizationalUnit"), conn.result
        for dn, r in zip(dns, records, strict=True):
            attrs = {a: r[f] for f, a in LDAP_ATTRIBUTES.items() if r[f]}
            attrs["sn"] = r["name"]
            assert conn.add(dn, "inetOrgPerson", attrs), conn.result
    finally:
        conn.unbind()

    def cleanup() -> None:
        c = ldap3.Connection(
            ldap3.Server(server.url, get_info=ldap3.NONE, connect_timeout=5),
            server.admin_dn,
            server.admin_password,
            receive_timeout=10,
        )
        if c.bind():
            for dn in [*dns, base_dn]:
                c.delete(dn)
            c.unbind()

    ctx.request.addfinalizer(cleanup)
    return make_connector(_ldap_options(server, base_dn, server.password), ctx.tmp_path)


def _ldap_failing(ctx: CaseContext) -> Connector:
    server = ctx.fixture("ldap_server")
    options = _ldap_options(server, server.base_dn, LDAP_WRONG_PASSWORD)  # bind refused
    return make_connector(options, ctx.tmp_path)


def _ldap_secrets() -> tuple[str, ...]:
    from tests.fixtures.ldap import BIND_PASSWORD

    return (BIND_PASSWORD, LDAP_WRONG_PASSWORD)


def _http_make(ctx: CaseContext, records: list[dict[str, str]]) -> Connector:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.fixtures.loopback import serve_in_thread

    async def people(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {HTTP_TOKEN}":
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        start = int(request.query_params.get("cursor") or 0)
        nxt = str(start + 2) if start + 2 < len(records) else None
        return JSONResponse({"data": {"list": records[start : start + 2], "next": nxt}})

    server = serve_in_thread(Starlette(routes=[Route("/hr/people", people)]))
    ctx.request.addfinalizer(server.stop)
    options = {
        "type": "http",
        "url": f"{server.base_url}/hr/people",
        "token": HTTP_TOKEN,
        "records_path": "data.list",
        "paging": "cursor",
        "cursor_path": "data.next",
    }
    return make_connector(options, ctx.tmp_path)


def _http_failing(ctx: CaseContext) -> Connector:
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {
        "type": "http",
        "url": f"http://127.0.0.1:{port}/hr/people",
        "token": HTTP_TOKEN,
        "retries": 1,
        "backoff": 0.01,
    }
    return make_connector(options, ctx.tmp_path)


CASES += [
    ConnectorCase("sql-sqlite", _sqlite_make, _sqlite_failing, lambda ctx: "people.db"),
    ConnectorCase(
        "sql-postgresql",
        _pg_make,
        _pg_failing,
        _pg_names,
        secrets=(SQL_PASSWORD,),
        marks=(pytest.mark.postgres,),
    ),
    ConnectorCase(
        "ldap",
        _ldap_make,
        _ldap_failing,
        lambda ctx: ctx.fixture("ldap_server").url,
        secrets=_ldap_secrets(),
        marks=(pytest.mark.ldap,),
    ),
    ConnectorCase(
        "http-cursor", _http_make, _http_failing, lambda ctx: "/hr/people", secrets=(HTTP_TOKEN,)
    ),
]


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
