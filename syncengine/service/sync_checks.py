"""What a nightly ``sync`` checks before any work: the ``--report`` path's placeholders and
every secret the night will need. Apart from :mod:`syncengine.service.nightly` so that the
CLI makes the same checks before it starts the early read of the directory
(:func:`syncengine.service.early_read.early_read_for_sync`) without importing the night itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from syncengine.errors import ConfigError


def sync_secrets(notify: bool) -> tuple[str, ...]:
    """The config tables whose secrets a sync needs (the notifications' only when sending)."""
    return ("exmail", "source", "departments", "passwords", *(("notifications",) if notify else ()))


def report_path(template: str, *, when: datetime, run_id: int | None) -> Path:
    """``--report`` with its placeholders filled: ``{date}`` (2026-11-29), ``{datetime}``
    (20261129T023000+0800) and ``{run}`` (the sync's run id), so a scheduler needs no shell
    quoting of ``%`` to keep one report per night. Both are on the company's calendar (the
    zone of ``when``): a run at 01:47 Beijing time on 1 December writes ``sync-2026-12-01``."""
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    try:
        text = template.format(
            date=when.strftime("%Y-%m-%d"),
            datetime=when.strftime("%Y%m%dT%H%M%S%z"),
            run=run_id if run_id is not None else "none",
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"bad placeholder in the report path: {exc}",
            where="--report",
            hint="use {date}, {datetime} or {run}; double braces for a literal brace",
        ) from None
    return Path(text).expanduser()
