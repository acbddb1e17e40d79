"""Counters and gauges of ``syncengine serve``, rendered in the Prometheus text format.

Written by hand (a few dozen lines) rather than with ``prometheus-client``: the format is
small and stable, and the engine needs no global registry or multiprocess mode. Counters live
in this process and start at zero on a restart, as Prometheus expects; the queue gauges are
read from the staging database at scrape time, so they are right even after a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class _Family:
    name: str
    kind: str  # counter | gauge
    help: str


FAMILIES = {
    f.name: f
    for f in (
        _Family("syncengine_runs_total", "counter", "Syncs run here, by kind and status."),
        _Family("syncengine_actions_total", "counter", "Plan actions applied, by kind and result."),
        _Family("syncengine_api_calls_total", "counter", "Exmail API calls made by applies."),
        _Family("syncengine_api_errors_total", "counter", "Exmail API calls that failed."),
        _Family("syncengine_hook_requests_total", "counter", "HR hook requests, by HTTP status."),
        _Family("syncengine_hook_events_total", "counter",
                "HR hook events worked off, by outcome (applied, failed, retry)."),
        _Family("syncengine_hook_reads_total", "counter",
                "Exmail reads of hook batches, by scope (targeted: the people in play; whole: "
                "the directory in one read for a big Gen 2 batch, planned for the people in "
                "play; full: the whole directory, when a targeted read cannot be done "
                "safely)."),
        _Family("syncengine_sso_requests_total", "counter", "SSO portal links, by HTTP status."),
        _Family("syncengine_event_queue_depth", "gauge", "Hook events received, not yet applied."),
        _Family("syncengine_event_queue_oldest_age_seconds", "gauge",
                "Age of the oldest hook event waiting (0 when none)."),
        _Family("syncengine_worker_alive", "gauge", "1 while the hook worker thread runs."),
    )
}  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(items) + "}" if items else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Thread-safe counters; :meth:`render` adds the gauges given at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if name not in FAMILIES:
            raise KeyError(f"unknown metric {name}")
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: Mapping[str, float]) -> str:
        """The exposition text: every family with HELP and TYPE, counters before gauges."""
        with self._lock:
            values = dict(self._values)
        for name, value in gauges.items():
            if name not in FAMILIES:
                raise KeyError(f"unknown metric {name}")
            values[(name, ())] = value
        lines: list[str] = []
        for name, family in FAMILIES.items():
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            samples = sorted((k[1], v) for k, v in values.items() if k[0] == name)
            if (
                not samples
                and family.kind == "counter"
                and name in ("syncengine_api_calls_total", "syncengine_api_errors_total")
            ):
                samples = [((), 0.0)]
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"
