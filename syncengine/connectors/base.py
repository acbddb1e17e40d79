"""The connector interface and the plug-in registry.

A connector is a generator of raw records (``dict[str, Any]``, keys as the source names them)
plus a one-line description of where they come from. It knows nothing of the engine's Person:
:mod:`syncengine.connectors.mapping` turns records into Persons with the config's field map.

Errors follow the Singer SDK split: a failure of the source as a whole (file missing, refused
connection, the query fails) raises :class:`syncengine.errors.SourceError`, which aborts the
ingest; a bad *row* is not the connector's business: it is yielded as it is, and mapping
quarantines it with the row number, field and reason.

Connectors are found by name through the ``syncengine.connectors`` entry-point group (the
built-ins register there too), so a company can ship its own HR system's connector as a
package: an entry point ``myhr = mypkg:make_connector`` where ``make_connector(options,
base_dir)`` returns a :class:`Connector`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from syncengine.connectors.config import options_error
from syncengine.errors import ConfigError
from syncengine.secrets import label_secrets

ENTRY_POINT_GROUP = "syncengine.connectors"

RawRecord = dict[str, Any]

# Reserved keys a connector may add to a record. ROW_KEY: the record's number as a human counts
# it in the source (a file's header is row 1; JSON/SQL/LDAP records count from 1), so problems
# name the row. ERROR_KEY: why the connector could not read this one record properly (a line
# that is not JSON, more cells than the header has columns); mapping quarantines the row.
# RAW_KEY: the text of a record that could not be read (a JSON line cut short), so mapping can
# still find whose row it was and hold that person rather than count them gone.
ROW_KEY = "__row__"
ERROR_KEY = "__error__"
RAW_KEY = "__raw__"
MAX_RAW_CHARS = 4096


class TextRecord(dict[str, Any]):
    """A record whose values are all text (a CSV row): mapping need not check their types."""

    __slots__ = ()


@runtime_checkable
class Connector(Protocol):
    """A source of raw HR records."""

    def describe(self) -> str:
        """Where the records come from, for messages and reports (no secrets)."""
        ...

    def records(self) -> Iterator[RawRecord]:
        """Yield every record, streaming; raise SourceError if the source fails as a whole."""
        ...


def source_fingerprint(connector: Connector) -> str | None:
    """A digest of everything the connector would read (a file's bytes), or None when the
    source cannot be fingerprinted without reading it record by record (SQL, LDAP, HTTP):
    then every ingest reads it. A connector opts in with a ``fingerprint() -> str`` method."""
    method = getattr(connector, "fingerprint", None)
    if not callable(method):
        return None
    value = method()
    return value if isinstance(value, str) and value else None


class ConnectorFactory(Protocol):
    def __call__(self, options: Mapping[str, Any], base_dir: Path) -> Connector: ...


def installed_connectors() -> dict[str, EntryPoint]:
    """Every connector type installed (the built-ins and any company plug-ins), not loaded:
    loading one imports its library (ldap3, calamine, a database driver)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_connectors() -> dict[str, ConnectorFactory]:
    """Every connector type installed, loaded."""
    return {name: ep.load() for name, ep in installed_connectors().items()}


def make_connector(options: Mapping[str, Any], base_dir: Path, *, key: str = "source") -> Connector:
    """Build the connector a ``[source]``-like config table names with its ``type`` key."""
    kind = options.get("type")
    installed = installed_connectors()
    if not isinstance(kind, str) or not kind:
        raise ConfigError(
            f"{key}.type is required (one of: {', '.join(sorted(installed)) or 'none installed'})"
        )
    entry = installed.get(kind)
    if entry is None:
        raise ConfigError(
            f"{key}.type = {kind!r} is not an installed connector "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"
        )
    factory: ConnectorFactory = entry.load()  # only the connector the config names
    rest = {k: v for k, v in options.items() if k != "type"}
    try:
        connector = factory(rest, base_dir)
    except ValidationError as exc:
        # Connectors validate their options with their own pydantic model; name the keys.
        raise options_error(exc, key) from None
    # A connector is built to be read: its env:/file: secrets are read now, named by key.
    for value in list(getattr(connector, "__dict__", {}).values()):
        if isinstance(value, BaseModel):
            for secret in label_secrets(value, "config", prefix=key):
                secret.get_secret_value()
    return connector
