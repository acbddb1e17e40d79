"""Alembic environment for the staging database.

Used two ways:
- from code (``syncengine db upgrade``, :mod:`syncengine.staging.db`), which passes an open
  connection in ``config.attributes["connection"]``;
- from the ``alembic`` command line with the top-level ``alembic.ini``; the URL comes from
  ``-x url=...``, else ``$SYNCENGINE_DATABASE_URL``, else ``sqlalchemy.url`` in the ini.

Migrations use ``op.*`` only and never import the models. The models' metadata is given here
only as the autogenerate target (to draft a new migration and to check for drift). SQLite runs
in batch mode, so a later migration can alter a column there too.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from syncengine.staging.db import normalise_url
from syncengine.staging.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )


def _url_from_cli() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = (
        url or os.environ.get("SYNCENGINE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set SYNCENGINE_DATABASE_URL")
    return normalise_url(url).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) for a DBA to review."""
    url = _url_from_cli()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = _url_from_cli()
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
