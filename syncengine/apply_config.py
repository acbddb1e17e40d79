"""The ``[apply]`` and ``[passwords]`` config tables: how the engine drives Exmail (every call,
reads and writes: one pace, one retry policy) and how initial passwords reach the admin.

Example::

    [apply]
    concurrency = 4            # Exmail calls at once (a few more actions are prepared meanwhile)
    rate_per_second = 15       # cap on ALL calls to Exmail per second, reads included (0 = none)
    max_attempts = 8           # tries of one read call / one action's write, the first included
    backoff_initial = 0.5      # seconds; doubles each retry, with jitter
    backoff_max = 30
    max_retry_seconds = 300    # total backoff per call or action before it fails
    retry_budget_seconds = 900 # total backoff one run (sync, plan, apply) may spend (0 = none)

    [passwords]
    delivery = "file"          # "file": JSON lines, mode 0600; "none": admin resets in console
    path = "initial-passwords.jsonl"   # default: next to the SQLite database file
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from syncengine.executor import ExecutorSettings
from syncengine.handover import HandoverConfig

DEFAULT_PASSWORD_FILE = "initial-passwords.jsonl"


class ApplyConfig(BaseModel):
    """``[apply]``: concurrency, pace and retry policy of the executor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=4, ge=1, le=64)
    # Exmail publishes no number; WeCom's historical default was 1,000 calls a minute per API,
    # so 15/s stays under it. A 45009 / 1002 answer is retried with backoff anyway.
    rate_per_second: float = Field(default=15.0, ge=0)
    max_attempts: int = Field(default=8, ge=1, le=50)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    jitter: float = Field(default=0.5, ge=0)
    max_retry_seconds: float = Field(default=300.0, ge=0)
    retry_budget_seconds: float = Field(default=900.0, ge=0)

    def settings(self) -> ExecutorSettings:
        return ExecutorSettings(
            concurrency=self.concurrency,
            rate_per_second=self.rate_per_second,
            burst=self.concurrency,
            max_attempts=self.max_attempts,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            jitter=self.jitter,
            max_retry_seconds=self.max_retry_seconds,
        )


class PasswordsConfig(BaseModel):
    """``[passwords]``: the one channel through which generated initial passwords leave.

    ``file`` appends one JSON line per new mailbox to ``path`` (created with mode 0600) for the
    admin to hand over; ``none`` keeps nothing (the admin sets passwords in the console).
    A relative ``path`` is relative to the config file; the default is next to the SQLite
    database (or the config file, for PostgreSQL).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery: Literal["file", "none"] = "file"
    path: str | None = None
    handover: HandoverConfig | None = None  # also send it to the new hire (syncengine.handover)
