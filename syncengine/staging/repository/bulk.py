"""Statements the group writer runs thousands of times, as executemany with plain rows.

``Connection.execute(statement, rows)`` does, on every call, work that does not change
between the calls of an apply: it computes the statement's cache key (a walk over the whole
expression), looks the compiled form up, and builds every row's parameters through the
compiled statement (``construct_params``, a bind processor per value, a datetime formatted
per row although every row of a batch carries the same one). On the writer thread of an
apply that was most of the cost of a checkpoint, more than SQLite's own work.

A :class:`BulkStatement` compiles its statement once per dialect, keeps the parameter order
the driver expects (positional for SQLite, named for psycopg) and each parameter's bind
processor (taken from the column type, so a timezone-aware UTC datetime, a JSON document or
a boolean reaches the driver exactly as ``execute`` would send it), and runs a batch through
:meth:`Connection.exec_driver_sql`: still the Core connection (its transaction, its error
wrapping into :mod:`sqlalchemy.exc`, its events), without the per-call compilation work.
Values the same for every row of a call (``shared``) are converted once per call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the driver's order
    positional: bool
    processors: tuple[_Processor, ...]
    defaults: dict[str, Any]  # values the statement carries itself (``attempts + 1``)


class BulkStatement:
    """An INSERT, UPDATE or DELETE run as one executemany per call (see the module doc), or
    a SELECT of plain columns (:meth:`rows`).

    ``keys``: for an INSERT without ``values()``, the columns it sets (the keys of every
    row). Every row of a call must give every parameter the statement does not carry itself
    and ``shared`` does not give; a missing one is a ``KeyError`` naming it.
    """

    def __init__(self, statement: ClauseElement, keys: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._keys = list(keys) if keys is not None else None
        self._by_dialect: dict[tuple[str, str, str], _Compiled] = {}

    def __repr__(self) -> str:
        return f"BulkStatement({self._statement})"

    def _compiled(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        found = self._by_dialect.get(key)
        if found is not None:
            return found
        compiled = self._statement.compile(dialect=dialect, column_keys=self._keys)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"{self!r}: not a SQL statement")
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        if compiled.escaped_bind_names:  # the SQL would name them otherwise
            raise ValueError(f"{self!r}: parameter names that need escaping")
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(binds)
        processors = tuple(
            binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        )
        defaults = {name: binds[name].value for name in names if not binds[name].required}
        found = _Compiled(compiled.string, names, compiled.positional, processors, defaults)
        self._by_dialect[key] = found
        return found

    def run(
        self,
        conn: Connection,
        rows: Sequence[Mapping[str, Any]],
        shared: Mapping[str, Any] | None = None,
    ) -> int:
        """Run the statement once per row, in one executemany; the rows it changed."""
        if not rows:
            return 0
        c = self._compiled(conn.dialect)
        given = rows[0]
        fixed: dict[str, Any] = {}  # converted once: shared, or carried by the statement
        for name, proc in zip(c.names, c.processors, strict=True):
            if shared is not None and name in shared:
                value = shared[name]
            elif name in c.defaults and name not in given:
                value = c.defaults[name]
            else:
                continue
            fixed[name] = value if proc is None else proc(value)
        steps = [(name, name in fixed, fixed.get(name), proc)
                 for name, proc in zip(c.names, c.processors, strict=True)]  # fmt: skip
        params: list[Any] = []
        for row in rows:
            # Every value through its processor, None included (as execute does: a JSON
            # column's None is the JSON null, for one).
            values = [
                value if is_fixed else (row[name] if proc is None else proc(row[name]))
                for name, is_fixed, value, proc in steps
            ]
            params.append(
                tuple(values) if c.positional else dict(zip(c.names, values, strict=True))
            )
        result = conn.exec_driver_sql(c.sql, params)
        return int(result.rowcount)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A SELECT's rows for one set of parameters, as the driver returns them (no result
        processing: for columns the driver answers as they are, integers and text)."""
        c = self._compiled(conn.dialect)
        values = [
            params.get(name, c.defaults.get(name)) if proc is None else proc(params[name])
            for name, proc in zip(c.names, c.processors, strict=True)
        ]
        bound = tuple(values) if c.positional else dict(zip(c.names, values, strict=True))
        return [tuple(row) for row in conn.exec_driver_sql(c.sql, bound)]
