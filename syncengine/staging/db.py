"""Engines, sessions and schema migrations for the staging database.

One place decides how a URL becomes a working engine on each backend:
- SQLite: foreign keys ON, WAL journal, a busy timeout, and every transaction opened with
  ``BEGIN IMMEDIATE``. The last point matters: with Python's default deferred transactions a
  read followed by a write in one transaction can fail at once with "database is locked" when
  another process wrote in between (the busy timeout does not apply to that case); taking the
  write lock at BEGIN makes concurrent writers (a nightly run, the hook worker) simply wait.
- PostgreSQL through psycopg 3: ``postgresql://`` and ``postgres://`` are rewritten to
  ``postgresql+psycopg://``.

Migrations are Alembic's, run from the repository's ``migrations/`` folder. Every command that
opens the database calls :func:`check_schema` first: a database behind the code is refused
with the command that fixes it; a brand-new empty SQLite database is created and upgraded on
the spot, so the demo and a new config's first run need no extra step.

Alembic itself is imported only to migrate: importing it costs about 0.1 s, which every
command would pay. The check reads the revisions from the migration files' ``revision`` and
``down_revision`` assignments (:func:`revision_graph`, with Alembic's own reading as the
fallback for anything that is not a plain literal) and the database's from its version table.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import syncengine
from syncengine.errors import DatabaseBehindError, StagingError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
UPGRADE_COMMAND = "syncengine db upgrade"
VERSION_TABLE = "alembic_version"


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL and pick psycopg 3 for PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StagingError(
            "not a valid database URL",
            where="database.url",
            hint="use sqlite:///path/to/file.db or postgresql://user@host/dbname",
        ) from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: str | URL) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _sqlite_path(url: URL) -> Path | None:
    """The file of a file-backed SQLite URL, None for memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return None
    return Path(database)


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see the module docstring).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _create_private(path: Path) -> None:
    """Create a new SQLite file with mode 0600 before SQLite does (with the umask's 0644): it
    holds personal data. SQLite gives its -wal/-shm/-journal files the database's mode. An
    existing file is left as its owner set it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StagingError(f"cannot create the SQLite database: {exc.strerror}",
                           where=str(path)) from None  # fmt: skip
    os.close(fd)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for the staging database with the backend settings above."""
    parsed = normalise_url(url)
    path = _sqlite_path(parsed)
    if path is not None and not path.parent.is_dir():
        raise StagingError(
            f"the folder for the SQLite database does not exist: {path.parent}",
            where="database.url",
            hint="create the folder or point database.url elsewhere",
        )
    if path is not None:
        _create_private(path)
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise StagingError(
            f"no SQLAlchemy driver for {parsed.drivername!r}",
            where="database.url",
            hint="use sqlite:///FILE or postgresql://... (psycopg 3 is installed with syncengine)",
        ) from None
    except ModuleNotFoundError as exc:
        raise StagingError(
            f"the database driver {exc.name!r} is not installed",
            where="database.url",
            hint="use postgresql:// (psycopg 3) or sqlite:///",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _install_sqlite_pragmas(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (plain read-outs)."""
    return sessionmaker(engine, expire_on_commit=False)


# --- migrations -----------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The repository's ``migrations/`` folder (present in the editable install)."""
    folder = Path(syncengine.__file__).resolve().parent.parent / "migrations"
    if not (folder / "env.py").is_file():
        raise StagingError(
            f"the Alembic migrations folder is missing: {folder}",
            hint="install syncengine from its source checkout (pip install -e .), "
            "which keeps migrations/ beside the package",
        )
    return folder


def alembic_config(url: str | URL) -> AlembicConfig:
    """An Alembic config built in code: our migrations folder and the given database."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a URL (escaped passwords) must be doubled.
    rendered = normalise_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def _literal_assignments(path: Path) -> dict[str, Any] | None:
    """The module-level ``revision`` and ``down_revision`` of one migration file, or None when
    either is not a plain literal (then Alembic's own reading decides)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in {"revision", "down_revision"}:
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                return None
    if not isinstance(found.get("revision"), str) or "down_revision" not in found:
        return None
    return found


@functools.cache
def revision_graph() -> dict[str, tuple[str, ...]]:
    """Each migration's revision and the revisions it follows, read from the files in
    ``migrations/versions/`` (Alembic's reading when a file is not plain literals)."""
    graph: dict[str, tuple[str, ...]] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        found = _literal_assignments(path)
        if found is None:
            return _alembic_graph()
        graph[found["revision"]] = _downs(found["down_revision"])
    return graph


def _alembic_graph() -> dict[str, tuple[str, ...]]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision: _downs(rev.down_revision) for rev in script.walk_revisions()}


def _downs(down: Any) -> tuple[str, ...]:
    return () if down is None else (down,) if isinstance(down, str) else tuple(down)


def head_revision() -> str:
    graph = revision_graph()
    followed = {down for downs in graph.values() for down in downs}
    heads = sorted(set(graph) - followed)
    if not heads:
        raise StagingError("the migrations folder has no revisions", where=str(migrations_dir()))
    if len(heads) > 1:
        raise StagingError(
            f"the migrations have {len(heads)} heads ({', '.join(heads)}); they need one",
            where=str(migrations_dir() / "versions"),
            hint="add a merge migration (alembic merge heads)",
        )
    return heads[0]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the code's migrations."""

    url: str  # password masked
    current: str | None
    head: str
    known: bool  # the current revision is one of ours (False: a newer syncengine wrote it)
    empty: bool  # no tables at all (a brand-new database)
    bare: bool  # no tables but Alembic's version table (migrated down to base)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _connect_error(url: str | URL, exc: Exception) -> StagingError:
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()
    return StagingError(
        f"cannot open the staging database: {detail[0] if detail else type(exc).__name__}",
        where=display_url(url),
        hint="check database.url in the config and that the server is running",
    )


def schema_status(engine: Engine) -> SchemaStatus:
    """Read the database's Alembic revision and compare it with the code's head."""
    head = head_revision()
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            revisions = (
                [row[0] for row in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
                if VERSION_TABLE in tables
                else []
            )
    except (OperationalError, DBAPIError) as exc:
        raise _connect_error(engine.url, exc) from None
    if len(revisions) > 1:
        raise StagingError(
            f"the database records {len(revisions)} schema revisions "
            f"({', '.join(sorted(revisions))}); syncengine's migrations have one line",
            where=display_url(engine.url),
            hint=f"table {VERSION_TABLE}: keep the one row of the revision the schema is at",
        )
    current = revisions[0] if revisions else None
    return SchemaStatus(
        url=display_url(engine.url),
        current=current,
        head=head,
        known=current is None or current in revision_graph(),
        empty=not tables,
        bare=set(tables) == {VERSION_TABLE},
    )


def current(url: str | URL) -> tuple[str | None, str]:
    """``(the database's revision or None, the code's head revision)``."""
    engine = make_engine(url)
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    return status.current, status.head


def search_path_schema(url: str | URL) -> str | None:
    """The schema a PostgreSQL URL's ``options=-csearch_path=NAME`` puts first (a tenant's
    schema, see :mod:`syncengine.tenants`), else None."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    options = parsed.query.get("options")
    text_value = " ".join(options) if isinstance(options, tuple) else (options or "")
    match = re.search(r"-c\s*search_path=([A-Za-z_][A-Za-z0-9_]*)", text_value)
    return match.group(1) if match else None


def _create_search_path_schema(engine: Engine) -> None:
    """Create the tenant's schema the URL's ``search_path`` names, when missing."""
    schema = search_path_schema(engine.url)
    if schema is None:
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except (OperationalError, DBAPIError) as exc:
        raise _connect_error(engine.url, exc) from None


def upgrade(url: str | URL, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database to ``revision``; returns (revision before, revision after). A
    tenant's PostgreSQL schema is created first when missing."""
    engine = make_engine(url)
    try:
        _create_search_path_schema(engine)
        before = schema_status(engine)
        if not before.known:
            raise _newer_error(before)
        try:
            _migrate(engine, lambda cfg: _alembic_command().upgrade(cfg, revision))
        except (OperationalError, DBAPIError) as exc:
            raise StagingError(
                f"migration failed: {str(getattr(exc, 'orig', exc)).strip()}",
                where=display_url(url),
                hint="the database was left at its previous revision; fix the cause and rerun "
                f"'{UPGRADE_COMMAND}'",
            ) from None
        after = schema_status(engine)
    finally:
        engine.dispose()
    return before.current, after.current


def downgrade(url: str | URL, revision: str) -> None:
    """Migrate down to ``revision`` (``base`` drops everything); for tests and rollbacks."""
    engine = make_engine(url)
    try:
        _migrate(engine, lambda cfg: _alembic_command().downgrade(cfg, revision))
    finally:
        engine.dispose()


def stamp(url: str | URL, revision: str) -> None:
    """Record ``revision`` as the database's without running anything (for tests and repairs)."""
    engine = make_engine(url)
    try:
        _migrate(engine, lambda cfg: _alembic_command().stamp(cfg, revision))
    finally:
        engine.dispose()


def _alembic_command() -> ModuleType:
    """``alembic.command``, imported when a migration runs (see the module docstring)."""
    from alembic import command

    return command


_MIGRATING = threading.Lock()
"""One migration at a time in a process: Alembic runs through module-level proxies
(``alembic.context``, ``alembic.op``), so two threads migrating two tenants' new databases
at once would tear each other's down (``KeyError: 'script'``)."""


def _migrate(engine: Engine, action: Callable[[AlembicConfig], None]) -> None:
    """Run one Alembic command on ``engine`` in a single transaction.

    On SQLite, foreign keys are switched off for the duration (the PRAGMA only works outside a
    transaction): batch migrations rebuild a table by copy-drop-rename, and dropping a parent
    table with enforcement on would first delete, or cascade-delete, the rows that refer to it.
    Integrity is checked with ``PRAGMA foreign_key_check`` before committing instead.
    """
    cfg = alembic_config(engine.url)
    is_sqlite = engine.dialect.name == "sqlite"
    with _MIGRATING, engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        if is_sqlite:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                action(cfg)
                if is_sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StagingError(
                            f"the migration left {len(broken)} broken foreign keys "
                            f"(first: {tuple(broken[0])}); nothing was changed",
                            where=display_url(engine.url),
                        )
        finally:
            if is_sqlite:
                raw.execute("PRAGMA foreign_keys = ON")


def _newer_error(status: SchemaStatus) -> StagingError:
    return StagingError(
        f"the database is at revision {status.current}, which this version of syncengine "
        f"does not know (its newest is {status.head})",
        where=status.url,
        hint="a newer syncengine migrated this database: upgrade syncengine itself",
    )


def check_schema(engine: Engine, *, create_sqlite: bool = True) -> SchemaStatus:
    """Refuse a database the code cannot work with; create a brand-new SQLite one.

    Called by every command that opens the database. A completely empty SQLite database (a new
    file) is migrated to head on the spot, with a log line, so the demo and a new config's first
    run work without ``db upgrade``. Anything else not at head is an error naming the fix.
    """
    status = schema_status(engine)
    if status.up_to_date:
        return status
    if not status.known:
        raise _newer_error(status)
    if status.current is None and status.empty:
        if create_sqlite and engine.url.get_backend_name() == "sqlite":
            log.info(
                "new staging database at %s: creating the schema (%s)", status.url, status.head
            )
            _migrate(engine, lambda cfg: _alembic_command().upgrade(cfg, "head"))
            return schema_status(engine)
        raise DatabaseBehindError(
            "the staging database is empty (no syncengine schema yet)",
            where=status.url,
            hint=f"run '{UPGRADE_COMMAND}' to create it",
        )
    if status.current is None and status.bare:
        raise DatabaseBehindError(
            f"the staging database is at the base revision (no schema), the code needs "
            f"{status.head}",
            where=status.url,
            hint=f"run '{UPGRADE_COMMAND}'",
        )
    if status.current is None:
        raise StagingError(
            "the database has tables but no syncengine schema revision",
            where=status.url,
            hint="point database.url at a database of its own, or at an empty one and run "
            f"'{UPGRADE_COMMAND}'",
        )
    raise DatabaseBehindError(
        f"the staging database is at revision {status.current}, the code needs {status.head}",
        where=status.url,
        hint=f"run '{UPGRADE_COMMAND}' (back the database up first)",
    )
