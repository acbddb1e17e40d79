"""The SQL connector: an HR database table or view, read with one query.

Any database SQLAlchemy can reach works (PostgreSQL, MySQL, SQL Server, Oracle, SQLite), as long
as its driver is installed. The query runs on a server-side cursor
(``stream_results`` + ``yield_per``) so a 100,000-row HR view is read in batches instead of
being loaded whole; each row becomes a dict keyed by the column *label*, so the config's field
map names columns the way the query's ``AS`` clauses do.

The query runs inside a transaction that is rolled back at the end: the engine only reads the
HR database, and a mistaken statement in the config cannot change it.

Config (``[source]``)::

    type = "sql"
    url = "postgresql+psycopg://sync@hr-db.corp/hr"
    password = "env:HR_DB_PASSWORD"      # optional; merged into the URL, never shown
    query = "SELECT emp_no AS employee_id, name, dept_path FROM v_staff"
    # or: query_file = "staff.sql"       (relative to the config file)
    batch_size = 1000
"""

from __future__ import annotations

import codecs
import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import create_engine, exc, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

from syncengine.connectors.base import ERROR_KEY, RawRecord
from syncengine.errors import ConfigError, SourceError
from syncengine.secrets import Secret

log = logging.getLogger(__name__)


class SqlOptions(BaseModel):
    """The ``[source]`` table of a ``type = "sql"`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    password: Secret | None = None
    query: str | None = None
    query_file: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    encoding: str = "utf-8"  # of text the database hands over as bytes (BLOB/VARBINARY)

    _query_text: str = PrivateAttr(default="")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. 'utf-8', 'gbk')") from None
        return value

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            make_url(value)
        except exc.ArgumentError:
            raise ValueError(
                "is not a database URL (write it like postgresql+psycopg://user@host/db "
                "or sqlite:///hr.db)"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_query(self, info: ValidationInfo) -> SqlOptions:
        if (self.query is None) == (self.query_file is None):
            raise ValueError("give exactly one of query or query_file")
        if self.query is not None:
            text_ = self.query
        else:
            path = Path(self.query_file or "").expanduser()
            base = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            try:
                text_ = path.read_text(encoding="utf-8-sig")
            except OSError as err:
                raise ValueError(f"cannot read the query file {path}: {err.strerror}") from None
        if not text_.strip():
            raise ValueError("the query is empty")
        self._query_text = text_
        return self

    @property
    def query_text(self) -> str:
        """The SQL to run: ``query`` itself or the contents of ``query_file``."""
        return self._query_text


def plain_value(value: Any, encoding: str = "utf-8") -> Any:
    """A database value as a plain, JSON-friendly Python value.

    Mapping and the staging hash work on text and numbers; dates become ISO strings, decimals
    stay exact (an integral one becomes an int, so ``NUMBER(10)`` employee ids read as ids),
    bytes become text when they decode as ``encoding`` (the source's, UTF-8 by default) and
    stay bytes otherwise: the connector then marks the record bad, naming the column, rather
    than sending base64 or mojibake to Exmail.
    """
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return str(value)
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if isinstance(value, bytes):
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain_value(v, encoding) for v in value]
    return str(value)


def _bytes_marked(record: RawRecord, columns: list[str], encoding: str, row: int) -> RawRecord:
    """A record whose byte columns did not decode: those emptied, the row marked bad."""
    first = record[columns[0]]
    shown = " ".join(f"0x{b:02x}" for b in first[:4])
    for k in columns:
        record[k] = ""
    record[ERROR_KEY] = (
        f"record {row}: column {columns[0]!r} holds bytes that are not {encoding} text "
        f"({shown}...); set source.encoding (e.g. 'gbk') if the database stores another one"
    )
    return record


class SqlConnector:
    """Reads the people (or departments) from an HR database with one query."""

    def __init__(self, options: SqlOptions, base_dir: Path):
        self.options = options
        self._url = self._build_url(options, base_dir)
        self._query = options.query_text

    @staticmethod
    def _build_url(options: SqlOptions, base_dir: Path) -> URL:
        """The URL with the password secret merged in and a relative SQLite path resolved."""
        url = make_url(options.url)
        if options.password is not None:
            url = url.set(password=options.password.get_secret_value())
        db = url.database
        if url.get_backend_name() == "sqlite" and db and db != ":memory:":
            path = Path(db).expanduser()
            if not db.startswith("file:") and not path.is_absolute():
                url = url.set(database=str(base_dir / path))
        return url

    def describe(self) -> str:
        shown = self._url.render_as_string(hide_password=True)
        first = " ".join(self._query.split())
        if len(first) > 80:
            first = first[:77] + "..."
        return f"sql {shown}: {first}"

    def _scrub(self, message: str) -> str:
        """Driver messages rarely echo the password, but never let one through."""
        if self.options.password is not None:
            secret = self.options.password.get_secret_value()
            if secret:
                message = message.replace(secret, "***")
        pw = self._url.password
        if isinstance(pw, str) and pw:
            message = message.replace(pw, "***")
        return message

    def _reason(self, err: BaseException) -> str:
        orig = getattr(err, "orig", None)
        text_ = str(orig if orig is not None else err).strip()
        first = text_.splitlines()[0] if text_ else type(err).__name__
        return self._scrub(first)

    def _engine(self) -> Engine:
        try:
            return create_engine(self._url, poolclass=NullPool)
        except exc.NoSuchModuleError:
            raise ConfigError(
                f"no SQLAlchemy dialect or driver for {self._url.drivername!r}",
                where=self.describe(),
                hint="install the driver package for your database (e.g. psycopg, pymysql)",
            ) from None
        except ImportError as err:
            raise ConfigError(
                f"the database driver for {self._url.drivername!r} is not installed ({err.name})",
                where=self.describe(),
                hint="pip install the driver into the engine's environment",
            ) from None

    def records(self) -> Iterator[RawRecord]:
        where = self.describe()
        engine = self._engine()
        count = 0
        try:
            try:
                conn = engine.connect()
            except exc.SQLAlchemyError as err:
                raise SourceError(
                    f"cannot connect to the HR database: {self._reason(err)}",
                    where=where,
                    hint="check source.url, the password secret and that the server is reachable",
                ) from None
            try:
                result = conn.execution_options(
                    stream_results=True, yield_per=self.options.batch_size
                ).execute(text(self._query))
                if not result.returns_rows:
                    raise SourceError(
                        "the statement returns no rows",
                        where=where,
                        hint="source.query must be a SELECT over the people or departments",
                    )
                # Fixed-size batches from the server-side cursor (the execution option alone
                # starts at one row and grows the buffer towards the limit).
                result = result.yield_per(self.options.batch_size)
                keys = list(map(str, result.keys()))
                dupes = sorted({k for k in keys if keys.count(k) > 1})
                if dupes:
                    raise SourceError(
                        f"the query returns several columns named {', '.join(dupes)}",
                        where=where,
                        hint="give each column its own label with AS",
                    )
                encoding = self.options.encoding
                for row in result:
                    count += 1
                    record = {k: plain_value(v, encoding) for k, v in zip(keys, row, strict=True)}
                    undecodable = [k for k, v in record.items() if type(v) is bytes]
                    if undecodable:
                        record = _bytes_marked(record, undecodable, encoding, count)
                    yield record
            except exc.SQLAlchemyError as err:
                raise SourceError(
                    f"the query failed after {count} rows: {self._reason(err)}",
                    where=where,
                    hint="run it by hand against the HR database to see why; "
                    "source.query must be a SELECT",
                ) from None
            finally:
                # Closing rolls the transaction back: the engine never changes the HR database.
                # A connection that died meanwhile has nothing left to roll back.
                try:
                    conn.close()
                except exc.SQLAlchemyError as err:
                    log.debug("closing the HR database connection: %s", self._reason(err))
        finally:
            engine.dispose()
        if count == 0:
            raise SourceError(
                "the query returned zero rows",
                where=where,
                hint="an empty HR source is refused so that nobody is treated as a leaver; "
                "check the query's WHERE clause and the view's contents",
            )
        log.info("read %d rows from %s", count, where)


def make_connector(options: Mapping[str, Any], base_dir: Path) -> SqlConnector:
    """Entry point ``sql``: validate the options and build the connector.

    A bad option raises pydantic's ValidationError, which :func:`~syncengine.connectors.base.
    make_connector` reports as ``source.<option>`` (or ``departments.source.<option>``).
    """
    parsed = SqlOptions.model_validate(dict(options), context={"base_dir": base_dir})
    return SqlConnector(parsed, base_dir)
