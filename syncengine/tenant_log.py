"""The tenant of the work at hand, carried into every log line (``[tenant NAME] ...``).

Kept apart from :mod:`syncengine.tenants` (which loads configs) so that the CLI can install the
log record factory on every command without importing the config models.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


@contextmanager
def tenant_context(name: str | None) -> Iterator[None]:
    """Log lines written inside the block (this thread or task) name the tenant."""
    token = _CURRENT.set(name)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_tenant() -> str | None:
    return _CURRENT.get()


_installed = False


def install_log_tenant() -> None:
    """Make every log record written in a :func:`tenant_context` start with ``[tenant NAME]``
    (a record factory, so it holds for every logger and handler, uvicorn's included)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = _CURRENT.get()
        record.tenant = name or ""
        if name is not None:
            record.msg = f"[tenant {name}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
