"""Loading and validating the TOML configuration.

Where the config comes from: ``--config FILE``, else ``$SYNCENGINE_CONFIG``, else
``./syncengine.toml``. Every table is a pydantic model with ``extra="forbid"``, so a misspelt
key is an error that names the key and the file, never a silently ignored setting. Relative
paths in the config (database file, source files, secret files) are taken relative to the
config file's folder, so a config works from any working directory.

Each adapter package owns the model of its own table (``providers.config.ExmailConfig``...);
this module only composes them and turns validation failures into :class:`ConfigError`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncengine import clock
from syncengine.apply_config import ApplyConfig, PasswordsConfig
from syncengine.connectors.config import DepartmentsConfig, MappingConfig, SourceConfig
from syncengine.errors import ConfigError
from syncengine.groups_config import GroupsConfig
from syncengine.hooks.config import HooksConfig
from syncengine.notify_config import NotificationsConfig
from syncengine.policy_config import AddressesConfig, LifecycleConfig, PolicyConfig
from syncengine.providers.config import ExmailConfig
from syncengine.review_config import ReviewConfig
from syncengine.secrets import check_secrets, label_secrets
from syncengine.textfile import MetricsConfig

DEFAULT_CONFIG_NAME = "syncengine.toml"
CONFIG_ENV = "SYNCENGINE_CONFIG"


MIN_KEEP_SNAPSHOTS = 21
"""The oldest snapshot whose rows a plan can read: the planner's window for moves and former
employees (``PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1``) and the review's for leavers' names
(``NAME_SNAPSHOTS``); a test checks both against this."""


class DatabaseConfig(BaseModel):
    """``[database]``: where the staging database lives (SQLite file or PostgreSQL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "sqlite:///syncengine.db"
    keep_snapshots: int = Field(default=60, ge=MIN_KEEP_SNAPSHOTS)
    """How many of the newest complete HR snapshots keep their rows (people, departments,
    problems); older ones keep only their counts and times. At least
    :data:`MIN_KEEP_SNAPSHOTS`: the planner looks that far back (moves, former employees,
    leavers' names). Housekeeping only: it is not part of the config's fingerprint."""


class GeneralConfig(BaseModel):
    """``[general]``: settings of the whole engine.

    ``timezone`` is the company's calendar (an IANA name): every date decision and every time
    shown to people uses it; ``$SYNCENGINE_TZ`` overrides it (see :mod:`syncengine.clock`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = clock.DEFAULT_TIMEZONE

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        clock.zone(value)
        return value.strip()


class Config(BaseModel):
    """The whole configuration. Tables not given take their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exmail: ExmailConfig
    general: GeneralConfig = Field(default_factory=GeneralConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    source: SourceConfig | None = None
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    departments: DepartmentsConfig | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    addresses: AddressesConfig = Field(default_factory=AddressesConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    apply: ApplyConfig = Field(default_factory=ApplyConfig)
    passwords: PasswordsConfig = Field(default_factory=PasswordsConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    groups: GroupsConfig | None = None

    _path: Path | None = PrivateAttr(default=None)
    _source: str | None = PrivateAttr(default=None)
    _tenant: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _group_labels(self) -> Config:
        """Every ``[[groups.by_field]]`` names a label the mapping keeps on people."""
        for i, f in enumerate(self.groups.by_field if self.groups else ()):
            if f.field not in self.mapping.labels:
                known = sorted(self.mapping.labels) or "none"
                raise ValueError(
                    f"groups.by_field[{i}].field = {f.field!r} is not a label of "
                    f'[mapping.labels] (labels: {known}); add {f.field} = "<HR column>" there'
                )
        if (
            self.groups
            and self.exmail.api == "v1"
            and (self.groups.adopt or self.groups.adopt_existing)
        ):
            key = "groups.adopt" if self.groups.adopt else "groups.adopt_existing"
            raise ValueError(
                f'{key}: Gen 1 ([exmail] api = "v1") has no call that reads a mail group '
                "(no group/get), so the engine cannot learn an existing group's members to "
                "take it over; remove it, or delete the group by hand and let the engine "
                "create it"
            )
        return self

    @property
    def path(self) -> Path | None:
        """The file this config was read from (None when built in code)."""
        return self._path

    @property
    def tenant(self) -> str | None:
        """The tenant (corp) this config is, in a multi-tenant config (see
        :mod:`syncengine.tenants`); None for a plain single-company config."""
        return self._tenant

    @property
    def origin(self) -> str:
        """Where this config comes from, as messages name it (a file, or a file's tenant)."""
        return self._source or (str(self._path) if self._path else "config")

    @property
    def timezone(self) -> ZoneInfo:
        """The company's time zone: ``$SYNCENGINE_TZ`` if set, else ``[general] timezone``."""
        override = os.environ.get(clock.TZ_ENV, "").strip()
        if not override:
            return clock.zone(self.general.timezone)
        try:
            return clock.zone(override)
        except ValueError as exc:
            raise ConfigError(str(exc), where=f"environment variable {clock.TZ_ENV}") from None

    def require_secrets(self, *tables: str) -> None:
        """Read now every secret of these tables (``exmail``, ``source``, ``notifications``,
        ``hooks``...): a ConfigError naming each one that is missing, before any work."""
        check_secrets(self, self.origin, tables)

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def resolve_path(self, value: str | os.PathLike[str]) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made relative to the config file."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve_path(url[len(prefix) :]))
        return url

    def beside_database(self, name: str) -> Path:
        """A file kept next to the SQLite database file (the engine's own state: the password
        file, the plan-signing key), else next to the config file (PostgreSQL). A tenant's
        files carry its name (``acme.plan-signing.key``): tenants share no key and no file."""
        if self._tenant is not None:
            name = f"{self._tenant}.{name}"
        url = self.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and ":memory:" not in url:
            return Path(url[len(prefix) :]).parent / name
        return self.base_dir / name


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config to use: the explicit one, ``$SYNCENGINE_CONFIG``, or ``./syncengine.toml``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / DEFAULT_CONFIG_NAME


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not item.startswith("function-") and item not in {"literal", "str"}:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def config_error_from_validation(exc: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's report into one message that names every bad key."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = _format_location(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the README for the keys)"
        elif err["type"] == "missing":
            msg = "is required but missing"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return ConfigError("; ".join(lines), where=source)


def parse_config(
    data: dict[str, Any], *, path: Path | None = None, source: str | None = None
) -> Config:
    """Validate an already-parsed TOML document; ``source`` names it in messages (default:
    the file)."""
    source = source or (str(path) if path else "config")
    base_dir = path.parent if path else Path.cwd()
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise config_error_from_validation(exc, source) from None
    cfg._path = path.resolve() if path else None
    cfg._source = source
    label_secrets(cfg, source)  # env:/file: secrets are read on first use, naming key and file
    return cfg


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read, parse and validate the config file; every failure is a :class:`ConfigError`."""
    path = find_config_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "configuration file not found",
            where=str(path),
            hint=f"pass --config FILE, set {CONFIG_ENV}, or create {DEFAULT_CONFIG_NAME}",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", where=str(path)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError("configuration is not UTF-8 text", where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from None
    return parse_config(data, path=path)
