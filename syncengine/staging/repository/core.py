"""The repository core: the engine, one transaction per call, the clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Self

from sqlalchemy import (
    Connection,
    Engine,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from syncengine.errors import StagingError
from syncengine.staging.db import display_url
from syncengine.staging.repository.records import (
    DEFAULT_BATCH,
    first_line,
    utcnow,
)

log = logging.getLogger(__name__)


class RepositoryCore:
    """What every part of the repository shares: the engine, transactions and the clock."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._batch = batch_size
        self._joined = threading.local()  # the transaction this thread's calls join, if any

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self._clock()

    @contextmanager
    def joined(self, what: str, conn: Connection | None = None) -> Iterator[Connection]:
        """One transaction that every repository call made by this thread inside the block
        joins (instead of opening its own); committed at the end, rolled back on an error.
        ``conn``: a connection the caller holds open (the group writer keeps one, sparing a
        pool check-out per batch); else one from the pool. The group writer's batches use it.
        """
        if getattr(self._joined, "conn", None) is not None:
            raise StagingError(f"{what}: a joined transaction is already open in this thread")
        with self._tx(what, conn) as tx:
            self._joined.conn = tx
            try:
                yield tx
            finally:
                self._joined.conn = None

    @contextmanager
    def _tx(self, what: str, held: Connection | None = None) -> Iterator[Connection]:
        """A transaction (or the joined one, see :meth:`joined`); driver failures become
        StagingError naming the operation."""
        try:
            joined: Connection | None = getattr(self._joined, "conn", None)
            if joined is not None:
                yield joined
                return
            if held is not None:
                with held.begin():
                    yield held
                return
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise StagingError(
                f"{what} failed: {first_line(exc)}",
                where=display_url(self._engine.url),
                hint="check that the database is reachable and not locked by another program",
            ) from None
