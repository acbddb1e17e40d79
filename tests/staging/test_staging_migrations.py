"""Migrations on SQLite and PostgreSQL: upgrade on empty, no drift at head, downgrade to base,
and what opening a database that is behind (or ahead of) the code does."""

from __future__ import annotations

import ast
import hashlib
import logging
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from syncengine.errors import DatabaseBehindError, StagingError
from syncengine.staging import db as staging_db
from syncengine.staging.models import Base
from tests.fixtures.databases import PostgresServer

TABLES = {
    "runs",
    "snapshots",
    "snapshot_people",
    "snapshot_departments",
    "snapshot_problems",
    "identity_links",
    "plans",
    "plan_documents",
    "plan_approvals",
    "plan_actions",
    "audit_log",
    "hook_events",
    "run_lock",
    "watch_state",
    "used_signatures",
    "mail_groups",
    "worker_leases",
}


def table_names(url: str) -> set[str]:
    engine = staging_db.make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_on_empty_database_reaches_head_with_no_drift(database_url: str) -> None:
    assert staging_db.current(database_url) == (None, staging_db.head_revision())

    before, after = staging_db.upgrade(database_url)

    assert (before, after) == (None, staging_db.head_revision())
    assert table_names(database_url) == TABLES | {"alembic_version"}
    engine = staging_db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            drift = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert drift == [], f"models and migrations differ at head: {drift}"


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    staging_db.upgrade(database_url)
    head = staging_db.head_revision()
    assert staging_db.upgrade(database_url) == (head, head)


def test_downgrade_to_base_removes_every_table(database_url: str) -> None:
    staging_db.upgrade(database_url)
    staging_db.downgrade(database_url, "base")

    assert table_names(database_url) <= {"alembic_version"}
    assert staging_db.current(database_url)[0] is None
    # ...and the way back up works again.
    staging_db.upgrade(database_url)
    assert table_names(database_url) == TABLES | {"alembic_version"}


def test_database_at_base_revision_is_behind_and_names_the_command(database_url: str) -> None:
    staging_db.upgrade(database_url)
    staging_db.downgrade(database_url, "base")
    engine = staging_db.make_engine(database_url)
    try:
        with pytest.raises(DatabaseBehindError) as err:
            staging_db.check_schema(engine)
    finally:
        engine.dispose()
    assert "syncengine db upgrade" in str(err.value)
    assert staging_db.head_revision() in str(err.value)


def test_stamped_revision_unknown_to_the_code_is_refused(staging_url: str) -> None:
    engine = staging_db.make_engine(staging_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(StagingError) as err:
            staging_db.check_schema(engine)
    finally:
        engine.dispose()
    assert not isinstance(err.value, DatabaseBehindError)
    assert "9999" in str(err.value) and "upgrade syncengine" in str(err.value)
    with pytest.raises(StagingError, match="9999"):
        staging_db.upgrade(staging_url)


def test_foreign_tables_without_revision_are_refused(database_url: str) -> None:
    engine = staging_db.make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE payroll (id INTEGER PRIMARY KEY)"))
        with pytest.raises(StagingError, match="no syncengine schema revision"):
            staging_db.check_schema(engine)
    finally:
        engine.dispose()


def test_new_sqlite_file_is_created_on_first_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    engine = staging_db.make_engine(url)
    try:
        with caplog.at_level(logging.INFO, logger="syncengine.staging.db"):
            status = staging_db.check_schema(engine)
    finally:
        engine.dispose()
    assert status.up_to_date
    assert table_names(url) == TABLES | {"alembic_version"}
    assert any("new staging database" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
def test_empty_postgres_database_is_not_created_implicitly(postgres_server: PostgresServer) -> None:
    name = "implicit_" + uuid.uuid4().hex[:8]
    url = postgres_server.create_database(name)
    try:
        engine = staging_db.make_engine(url)
        try:
            with pytest.raises(DatabaseBehindError, match="syncengine db upgrade"):
                staging_db.check_schema(engine)
        finally:
            engine.dispose()
        assert table_names(url) == set()
    finally:
        postgres_server.drop_database(name)


def test_postgres_url_spellings_use_psycopg3() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert staging_db.normalise_url(url).drivername == "postgresql+psycopg"


def test_password_never_shown_in_connection_errors() -> None:
    url = "postgresql://syncuser:hunter2-secret@127.0.0.1:1/nodb"
    with pytest.raises(StagingError) as err:
        staging_db.current(url)
    assert "hunter2" not in str(err.value)
    assert "127.0.0.1" in str(err.value)


def test_missing_sqlite_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match=r"folder .* does not exist"):
        staging_db.make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")


# --- rules for the migration files themselves ---------------------------------------------

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"

# sha256 of each released migration. A released migration is never edited (databases in the
# field already ran it): change the schema with a new revision and add its hash here.
RELEASED = {
    "0001_initial.py": "561a39754fe15b5e11ed9ad478e23572cab8cca01d70a9190e265bde114ed321",
}


def test_released_migrations_are_unchanged() -> None:
    for name, digest in RELEASED.items():
        text_ = (VERSIONS / name).read_bytes().replace(b"\r\n", b"\n")
        assert hashlib.sha256(text_).hexdigest() == digest, (
            f"migrations/versions/{name} was edited after release; restore it and put the "
            "change in a new revision (alembic revision --autogenerate -m '...')"
        )


def test_revisions_form_one_line_with_one_head() -> None:
    script = ScriptDirectory.from_config(staging_db.alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, (
        f"migrations have several heads {heads}: two branches were added in parallel; "
        "re-point one revision's down_revision at the other"
    )
    assert "0001" in {r.revision for r in script.walk_revisions()}
    files = {p.name for p in VERSIONS.glob("*.py")}
    assert set(RELEASED) <= files


def test_the_revisions_read_without_alembic_are_alembics() -> None:
    """The schema check reads the migration files itself (Alembic is imported only to
    migrate): its revisions, their order and the head must be exactly Alembic's."""
    script = ScriptDirectory.from_config(staging_db.alembic_config("sqlite://"))
    alembic_graph = {
        r.revision: (() if r.down_revision is None else (r.down_revision,))
        if isinstance(r.down_revision, str | None)
        else tuple(r.down_revision)
        for r in script.walk_revisions()
    }
    assert staging_db.revision_graph() == alembic_graph
    assert staging_db.head_revision() == script.get_current_head()


def test_a_database_recording_a_revision_from_elsewhere_is_not_known(tmp_path: Path) -> None:
    """A revision none of our files has (a newer syncengine wrote it) is refused by name."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    staging_db.upgrade(url)
    engine = staging_db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
        status = staging_db.schema_status(engine)
        assert (status.current, status.known) == ("0099_future", False)
        with pytest.raises(StagingError, match=r"0099_future.*does not know"):
            staging_db.check_schema(engine)
    finally:
        engine.dispose()


def test_migrations_use_op_only_never_the_models() -> None:
    for path in sorted(VERSIONS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.startswith("syncengine")]
            assert not bad, f"{path.name} imports {bad}: migrations use op.* only"
