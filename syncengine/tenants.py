"""Several Exmail corps (tenants) in one config: which tenants there are and each one's Config.

Two ways to describe them, both validated by the same pydantic models as a single config:

* **one file** with ``[tenants.NAME]`` tables. Every other top-level table of the file is a
  default shared by all tenants (``[apply]``, ``[general]``, ``[database]``...); a tenant's own
  tables are merged over it, key by key (``[tenants.acme.exmail]`` over ``[exmail]``).
* **a folder** of ``NAME.toml`` files, one per tenant (``--config /etc/syncengine/tenants.d``).

A config without ``[tenants]`` stays what it always was: one implicit tenant, no name.

Each tenant has its own staging database, so isolation is structural (no repository query
needs a tenant filter): on SQLite a file per tenant (the default ``sqlite:///{tenant}.db``;
``{tenant}`` in ``[database] url`` is replaced by the name, and two tenants resolving to the
same file are refused); on PostgreSQL one schema per tenant (``tenant_NAME``) in the shared
database, reached through the connection's ``search_path``.

The tenant's name is part of its :class:`~syncengine.config.Config` (``config.tenant``), and of
the config fingerprint a plan records: a plan made for one tenant is refused by another.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from syncengine.config import Config, find_config_path, load_config, parse_config
from syncengine.errors import ConfigError

TENANTS_KEY = "tenants"
TENANT_ENV = "SYNCENGINE_TENANT"
TENANT_PLACEHOLDER = "{tenant}"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
"""A tenant name: it appears in URLs (``/hooks/hr/NAME``), file names and PostgreSQL schema
names, so it is kept to lower-case letters, digits and ``_`` (at most 40, a letter first)."""
SCHEMA_PREFIX = "tenant_"


@dataclass(frozen=True)
class Tenant:
    """One corp: its name (None for the implicit tenant of a plain config) and its config."""

    name: str | None
    config: Config

    @property
    def label(self) -> str:
        return self.name or "default"


@dataclass(frozen=True)
class Tenants:
    """The tenants a config describes, in name order (one nameless one for a plain config)."""

    source: Path
    tenants: tuple[Tenant, ...]

    @property
    def multi(self) -> bool:
        return any(t.name is not None for t in self.tenants)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tenants if t.name is not None]

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)

    def get(self, name: str) -> Tenant:
        """The tenant called ``name``; a ConfigError listing the known ones otherwise."""
        for t in self.tenants:
            if t.name == name:
                return t
        if not self.multi:
            raise ConfigError(f"--tenant {name}: this config describes one company and has no "
                              "[tenants] tables", where=str(self.source),
                              hint="leave --tenant out, or add [tenants.NAME] tables")  # fmt: skip
        raise ConfigError(f"--tenant {name}: no such tenant", where=str(self.source),
                          hint="the tenants are: " + ", ".join(self.names))  # fmt: skip

    def choose(self, name: str | None) -> Tenant:
        """The one tenant a command works on: ``name`` (``--tenant``, else
        ``$SYNCENGINE_TENANT``), or the only one there is."""
        name = name or os.environ.get(TENANT_ENV, "").strip() or None
        if name is not None:
            return self.get(name)
        if len(self.tenants) == 1:
            return self.tenants[0]
        raise ConfigError(
            f"this config describes {len(self.tenants)} tenants ({', '.join(self.names)}): "
            "say which one",
            where=str(self.source),
            hint="pass --tenant NAME (or set $SYNCENGINE_TENANT); 'sync --all' runs every one",
        )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base`` table by table (a value that is not a table replaces)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_name(name: str, where: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"tenant name {name!r} is not allowed",
            where=where,
            hint="use lower-case letters, digits and _ (a letter first, at most 40): the name "
            "appears in URLs, file names and database schema names",
        )
    return name


def _with_postgres_schema(url: str, schema: str) -> str:
    """The URL with the connection's ``search_path`` set to ``schema`` (psycopg ``options``)."""
    option = quote(f"-csearch_path={schema}", safe="")
    return url + ("&" if "?" in url else "?") + f"options={option}"


def tenant_database(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The tenant's ``[database]`` table: its own SQLite file or its own PostgreSQL schema."""
    table = dict(data.get("database") or {})
    url = str(table.get("url", f"sqlite:///{TENANT_PLACEHOLDER}.db"))
    if TENANT_PLACEHOLDER in url:
        url = url.replace(TENANT_PLACEHOLDER, name)
    elif re.match(r"postgres(ql)?(\+\w+)?:", url) and "search_path" not in url:
        url = _with_postgres_schema(url, SCHEMA_PREFIX + name)
    table["url"] = url
    return {**data, "database": table}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("configuration file not found", where=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", where=str(path)) from None
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError("configuration is not UTF-8 text", where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from None


def _tenant_config(data: dict[str, Any], name: str, path: Path, where: str) -> Config:
    """One tenant's Config; a validation error names the tenant and the key."""
    config = parse_config(tenant_database(data, name), path=path, source=where)
    config._tenant = name
    return config


def _refuse_shared_databases(tenants: list[Tenant], source: Path) -> None:
    """Two tenants on one staging database (one SQLite file, one PostgreSQL schema) would
    share runs, locks, links and audit: refused."""
    from syncengine.staging.db import display_url

    seen: dict[str, str] = {}
    for t in tenants:
        url = t.config.database_url
        other = seen.setdefault(url, t.label)
        if other != t.label:
            kind = "SQLite database" if url.startswith("sqlite:") else "database and schema"
            raise ConfigError(
                f"tenants {other} and {t.label} would share the {kind} {display_url(url)}",
                where=str(source),
                hint="give each tenant its own: put {tenant} in [database] url (PostgreSQL: "
                "leave search_path out, each tenant gets schema tenant_NAME)",
            )


def load_tenants(explicit: str | os.PathLike[str] | None = None) -> Tenants:
    """Read the config (file or folder) and build every tenant's validated Config."""
    path = find_config_path(explicit)
    if not path.exists():
        load_config(path)  # the not-found error, with its hint (--config, $SYNCENGINE_CONFIG)
    tenants: list[Tenant] = []
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise ConfigError("the tenant folder holds no *.toml file", where=str(path),
                              hint="one NAME.toml per tenant")  # fmt: skip
        for file in files:
            name = check_name(file.stem, str(file))
            where = f"{file} (tenant {name})"
            tenants.append(Tenant(name, _tenant_config(_read_toml(file), name, file, where)))
    else:
        data = _read_toml(path)
        table = data.pop(TENANTS_KEY, None)
        if table is None:
            return Tenants(path.resolve(), (Tenant(None, parse_config(data, path=path)),))
        if not isinstance(table, dict) or not table:
            raise ConfigError("[tenants] must hold at least one [tenants.NAME] table",
                              where=str(path))  # fmt: skip
        for name in sorted(table):
            where = f"{path} [tenants.{name}]"
            check_name(name, where)
            own = table[name]
            if not isinstance(own, dict):
                raise ConfigError(f"tenants.{name} must be a table", where=str(path))
            tenants.append(Tenant(name, _tenant_config(_merge(data, own), name, path, where)))
    _refuse_shared_databases(tenants, path)
    return Tenants(path.resolve(), tuple(tenants))
