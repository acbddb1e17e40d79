"""The SQL connector against a real SQLite file and the real PostgreSQL server.

``database_url`` (``tests/fixtures/databases.py``) gives a fresh empty database on each backend;
each test creates a small HR table in it the way an HR system's database would hold it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncengine.connectors.base import make_connector
from syncengine.connectors.sql_source import SqlConnector, plain_value
from syncengine.errors import ConfigError, SourceError

pytestmark = pytest.mark.timeout(120)

SURNAMES = "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静磊洋艳勇军杰娟涛明超"
N_PEOPLE = 250

metadata = sa.MetaData()
hr_people = sa.Table(
    "hr_people",
    metadata,
    sa.Column("emp_no", sa.Integer, primary_key=True),
    sa.Column("full_name", sa.String(64), nullable=False),
    sa.Column("dept_path", sa.String(200)),
    sa.Column("hired_on", sa.Date),
    sa.Column("left_on", sa.Date),
    sa.Column("salary_grade", sa.Numeric(6, 2)),
    sa.Column("mobile", sa.String(20)),
)


def person(i: int) -> dict[str, Any]:
    return {
        "emp_no": 10001 + i,
        "full_name": SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)],
        "dept_path": ["研发中心/平台部", "销售部/华东区", "人力资源部", None][i % 4],
        "hired_on": dt.date(2015, 1, 1) + dt.timedelta(days=17 * i),
        "left_on": dt.date(2025, 6, 30) if i % 50 == 7 else None,
        "salary_grade": decimal.Decimal("3.50") if i % 2 else decimal.Decimal("4"),
        "mobile": f"138{i:08d}",
    }


QUERY = (
    "SELECT emp_no AS employee_id, full_name AS name, dept_path AS departments, "
    "hired_on AS start_date, left_on AS end_date, salary_grade AS grade, mobile "
    "FROM hr_people ORDER BY emp_no"
)


@pytest.fixture
def hr_url(database_url: str) -> Iterator[str]:
    """``database_url`` holding the HR table with N_PEOPLE people."""
    engine = sa.create_engine(database_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(hr_people.insert(), [person(i) for i in range(N_PEOPLE)])
        yield database_url
    finally:
        engine.dispose()


def sql(options: dict[str, Any], base_dir: Path) -> SqlConnector:
    conn = make_connector({"type": "sql", **options}, base_dir)
    assert isinstance(conn, SqlConnector)
    return conn


def test_reads_every_row_keyed_by_label_with_plain_values(hr_url: str, tmp_path: Path) -> None:
    records = list(sql({"url": hr_url, "query": QUERY, "batch_size": 40}, tmp_path).records())
    assert len(records) == N_PEOPLE
    first, eighth = records[0], records[7]
    assert list(first) == [
        "employee_id",
        "name",
        "departments",
        "start_date",
        "end_date",
        "grade",
        "mobile",
    ]
    assert first == {
        "employee_id": 10001,
        "name": "王伟",
        "departments": "研发中心/平台部",
        "start_date": "2015-01-01",
        "end_date": None,
        "grade": 4,
        "mobile": "13800000000",
    }
    assert eighth["end_date"] == "2025-06-30"
    assert eighth["grade"] in ("3.50", 3.5)  # an exact decimal; SQLite stores a float
    assert records[3]["departments"] is None
    assert [r["employee_id"] for r in records] == [10001 + i for i in range(N_PEOPLE)]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_reads_through_a_server_side_cursor_in_batches(
    hr_url: str, tmp_path: Path
) -> None:
    """While the generator is paused, the server shows our session FETCHing batches."""
    conn = sql({"url": hr_url, "query": QUERY, "batch_size": 37}, tmp_path)
    records = conn.records()
    head = [next(records) for _ in range(3)]  # one row to start, then a batch is buffered
    assert [r["employee_id"] for r in head] == [10001, 10002, 10003]
    dbname = sa.make_url(hr_url).database
    watcher = sa.create_engine(hr_url)
    try:
        with watcher.connect() as w:
            seen = w.execute(
                sa.text(
                    "SELECT state, query FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": dbname},
            ).all()
    finally:
        watcher.dispose()
    assert any(q.startswith("FETCH FORWARD 37 FROM") for _, q in seen), seen
    assert any(state == "idle in transaction" for state, _ in seen), seen
    rest = list(records)
    assert len(rest) == N_PEOPLE - 3


def test_stopping_early_releases_the_connection(hr_url: str, tmp_path: Path) -> None:
    records = sql({"url": hr_url, "query": QUERY, "batch_size": 10}, tmp_path).records()
    assert next(records)["employee_id"] == 10001
    records.close()  # no error, no zero-rows complaint when the caller stops early
    # The table is still readable and writable: no lock is left behind.
    engine = sa.create_engine(hr_url)
    try:
        with engine.begin() as conn:
            conn.execute(hr_people.delete().where(hr_people.c.emp_no == 10001))
    finally:
        engine.dispose()


def test_zero_rows_is_a_source_error(hr_url: str, tmp_path: Path) -> None:
    query = "SELECT emp_no AS employee_id FROM hr_people WHERE emp_no < 0"
    with pytest.raises(SourceError, match="zero rows"):
        list(sql({"url": hr_url, "query": query}, tmp_path).records())


def test_a_failing_query_is_a_source_error(hr_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        list(sql({"url": hr_url, "query": "SELECT * FROM no_such_view"}, tmp_path).records())
    assert "query failed" in str(err.value) and "no_such_view" in str(err.value)


def test_a_statement_that_is_not_a_select_changes_nothing(hr_url: str, tmp_path: Path) -> None:
    # SQLite runs it and returns no rows; PostgreSQL cannot DECLARE a cursor over it.
    with pytest.raises(SourceError, match="must be a SELECT"):
        list(sql({"url": hr_url, "query": "DELETE FROM hr_people"}, tmp_path).records())
    engine = sa.create_engine(hr_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(hr_people)).scalar()
    finally:
        engine.dispose()
    assert count == N_PEOPLE  # the transaction was rolled back


def test_duplicate_column_labels_are_refused(hr_url: str, tmp_path: Path) -> None:
    query = "SELECT emp_no AS id, full_name AS id FROM hr_people"
    with pytest.raises(SourceError, match="several columns named id"):
        list(sql({"url": hr_url, "query": query}, tmp_path).records())


def test_query_file_and_relative_sqlite_path_are_taken_from_the_config_folder(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hr.db'}")
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(hr_people.insert(), [person(i) for i in range(5)])
    finally:
        engine.dispose()
    (tmp_path / "staff.sql").write_text("\ufeff" + QUERY + "\n", encoding="utf-8")
    conn = sql({"url": "sqlite:///hr.db", "query_file": "staff.sql"}, tmp_path)
    assert [r["name"] for r in conn.records()] == [person(i)["full_name"] for i in range(5)]
    assert str(tmp_path / "hr.db") in conn.describe()


def test_refused_connection_is_a_source_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TEST_HR_DB_PASSWORD", "Db-Pa55-secret")
    conn = sql(
        {
            "url": f"postgresql+psycopg://hr@127.0.0.1:{port}/hr?connect_timeout=3",
            "password": "env:TEST_HR_DB_PASSWORD",
            "query": QUERY,
        },
        tmp_path,
    )
    assert "hr:***@127.0.0.1" in conn.describe()
    with pytest.raises(SourceError) as err:
        list(conn.records())
    text = str(err.value)
    assert "cannot connect" in text and "Db-Pa55-secret" not in text
    assert "hr:***@127.0.0.1" in text


def test_a_missing_driver_is_a_config_error_naming_it(tmp_path: Path) -> None:
    conn = sql({"url": "mssql+pyodbc://hr@dsn", "query": "SELECT 1"}, tmp_path)
    with pytest.raises(ConfigError, match="driver"):
        list(conn.records())


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "not a url", "query": "SELECT 1"}, "source.url"),
        ({"url": "sqlite:///x.db"}, "source"),
        ({"url": "sqlite:///x.db", "query": "SELECT 1", "query_file": "a.sql"}, "source"),
        ({"url": "sqlite:///x.db", "query": "   "}, "source"),
        ({"url": "sqlite:///x.db", "query_file": "missing.sql"}, "missing.sql"),
        ({"url": "sqlite:///x.db", "query": "SELECT 1", "batch_size": 0}, "source.batch_size"),
        ({"url": "sqlite:///x.db", "query": "SELECT 1", "fetch": 10}, "source.fetch"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_connector({"type": "sql", **options}, tmp_path)
    assert key in str(err.value)


def test_plain_value() -> None:
    assert plain_value(dt.datetime(2024, 1, 31, 8, 30)) == "2024-01-31T08:30:00"
    assert plain_value(decimal.Decimal("1001")) == 1001
    assert plain_value(decimal.Decimal("1.10")) == "1.10"
    assert plain_value(b"\xe5\xbc\xa0") == "张"
    assert plain_value(memoryview(b"\xff\x00")) == b"\xff\x00"  # not text: never base64
    assert plain_value("张".encode("gbk"), "gbk") == "张"
    assert plain_value(None) is None and plain_value(True) is True
