"""A cron- or timer-run ``sync`` leaves its metrics behind for Prometheus' node exporter.

``serve`` answers ``GET /metrics``; a ``sync`` run by cron or a systemd timer is gone before
anyone could scrape it. The node exporter's *textfile collector* convention covers that: a
job writes ``NAME.prom`` (the text exposition format) into the collector's folder, atomically
(a temporary file in the same folder, then a rename, so a scrape never reads half a file),
and the exporter serves it with the machine's other metrics. With ``[metrics] textfile`` set,
every ``sync`` (dry runs included) rewrites that file:

* ``syncengine_sync_last_run_timestamp_seconds``, ``..._last_success_timestamp_seconds`` (kept
  from the previous file when this run did not succeed: alert on ``time() - it > 26h``),
* ``syncengine_sync_status{status}`` (1 for this run's status, 0 for the others),
  ``syncengine_sync_exit_code``, ``syncengine_sync_duration_seconds``,
* ``syncengine_sync_actions{kind,result}`` (planned / done / failed / skipped per action kind),
* ``syncengine_sync_api_calls``, ``syncengine_sync_people``, ``syncengine_sync_quarantined``,
  ``syncengine_sync_conflicts``.

Values are the last run's (gauges). No secret, address or name is written, only counts.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from syncengine.errors import ConfigError

STATUSES = ("succeeded", "failed", "blocked", "dry-run")
_LAST_SUCCESS = re.compile(r"^syncengine_sync_last_success_timestamp_seconds (\S+)$", re.M)


class MetricsConfig(BaseModel):
    """``[metrics]``: ``textfile`` is the ``.prom`` file a ``sync`` writes (none: off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    textfile: str | None = None

    @field_validator("textfile")
    @classmethod
    def _prom(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".prom"):
            raise ValueError("must end in .prom (the node exporter reads only those)")
        return value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def previous_success(text: str) -> float | None:
    """The last-success timestamp of an earlier file, if it has one."""
    m = _LAST_SUCCESS.search(text)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def render(report: Mapping[str, Any], *, now: float, last_success: float | None) -> str:
    """The exposition text for one sync report (its ``to_dict()``). PURE."""
    status = str(report.get("status", "failed"))
    if status == "succeeded":
        last_success = now
    out: list[str] = []

    def family(name: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels} {_num(v)}" for labels, v in samples)

    family("syncengine_sync_last_run_timestamp_seconds", "When the last sync ended.",
           [("", now)])  # fmt: skip
    if last_success is not None:
        family("syncengine_sync_last_success_timestamp_seconds",
               "When a sync last succeeded.", [("", last_success)])  # fmt: skip
    family("syncengine_sync_status", "1 for the last sync's status.",
           [(f'{{status="{s}"}}', 1.0 if s == status else 0.0) for s in STATUSES])  # fmt: skip
    family("syncengine_sync_exit_code", "The last sync's exit code.",
           [("", float(report.get("exit_code", 1)))])  # fmt: skip
    family("syncengine_sync_duration_seconds", "How long the last sync took.",
           [("", float(report.get("seconds", 0.0)))])  # fmt: skip
    actions: list[tuple[str, float]] = []
    for kind, results in sorted((report.get("counts") or {}).items()):
        for result, n in sorted(results.items()):
            actions.append((f'{{kind="{_escape(kind)}",result="{_escape(result)}"}}', float(n)))
    family("syncengine_sync_actions", "The last sync's plan actions by kind and result.", actions)
    family("syncengine_sync_api_calls", "Exmail API calls the last sync reported.",
           [("", float(report.get("api_calls") or 0))])  # fmt: skip
    snapshot = report.get("snapshot") or {}
    counts = snapshot.get("counts") or {}
    family("syncengine_sync_people", "People in the HR snapshot of the last sync.",
           [("", float(counts.get("people") or 0))])  # fmt: skip
    family("syncengine_sync_quarantined", "HR rows held back by the last sync.",
           [("", float(report.get("quarantined") or 0))])  # fmt: skip
    family("syncengine_sync_conflicts", "Conflicts in the last sync's plan.",
           [("", float(len(report.get("conflicts") or [])))])  # fmt: skip
    return "\n".join(out) + "\n"


def write(path: Path, report: Mapping[str, Any], *, now: float) -> None:
    """Rewrite ``path`` atomically (readable by the exporter: mode 0644, counts only)."""
    try:
        previous = path.read_text(encoding="utf-8")
    except OSError:
        previous = ""
    text = render(report, now=now, last_success=previous_success(previous))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".syncengine-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the metrics file: {exc.strerror}",
            where=str(path),
            hint="[metrics] textfile must be in a writable folder",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the metrics file: {exc.strerror}",
                          where=str(path)) from None  # fmt: skip
