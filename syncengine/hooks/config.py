"""The ``[hooks]`` config table: the receiver, its worker, SSO links and mail forwarding.

Example::

    [hooks]
    secret = "env:SYNCENGINE_HOOK_SECRET"   # HMAC key shared with the HR system
    tolerance = 300                         # seconds of clock difference accepted
    max_body = 65536                        # bytes; a larger request is refused with 413
    header_timeout = 10                     # seconds a client may take to send a request head
    body_timeout = 30                       # seconds a client may take to send the body
    max_connections = 200                   # open connections; more are answered 503
    coalesce_window = 0                     # seconds the worker waits to gather a burst
                                            # (0: at once; a burst gathers while a batch runs)
    max_attempts = 6                        # tries of one event before it is marked failed
    backoff_initial = 5.0                   # seconds before the first retry, doubled each time
    backoff_max = 300.0
    schedule = "30 2 * * *"                 # optional: the nightly sync in the same process
    lease_seconds = 30                      # several serve on PostgreSQL: a dead worker's
                                            # tenant is taken over after this long
    settle = 86400                          # seconds an export newer than a hook fact still
                                            # cannot undo a hire or a termination it lacks

    [hooks.sso]
    secret = "env:SYNCENGINE_SSO_SECRET"    # HMAC key shared with the OA portal
    lifetime = 60                           # seconds a signed portal link stays valid
    allow_unmanaged = false                 # accounts no HR record owns
    allow_disabled = false
    allow_protected = false

    [hooks.forward]
    secret = "env:SYNCENGINE_FORWARD_SECRET"  # signs the new-mail events sent to the OA
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncengine.hooks.schedule import CronSchedule
from syncengine.secrets import Secret


class SsoConfig(BaseModel):
    """``[hooks.sso]``: who may be sent into a mailbox by a portal link, and how it is signed.

    The allow flags also govern ``syncengine sso-url``: one rule for every way in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: Secret | None = None
    lifetime: float = Field(default=60.0, gt=0, le=3600)
    allow_unmanaged: bool = False
    allow_disabled: bool = False
    allow_protected: bool = False


class ForwardConfig(BaseModel):
    """``[hooks.forward]``: signing and retries of ``mail watch --forward URL``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: Secret | None = None
    attempts: int = Field(default=5, ge=1, le=20)
    backoff: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    timeout: float = Field(default=10.0, gt=0)
    interval: float | None = Field(default=None, gt=0)  # Gen 2 poll pace; default exmail's


class HooksConfig(BaseModel):
    """``[hooks]``: see the module docstring for an example."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: Secret | None = None
    tolerance: float = Field(default=300.0, gt=0, le=3600)
    max_body: int = Field(default=65536, ge=256, le=16 * 1024 * 1024)
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=200, ge=1, le=100_000)
    coalesce_window: float = Field(default=0.0, ge=0, le=60)
    batch_size: int = Field(default=500, ge=1, le=10000)
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_initial: float = Field(default=5.0, ge=0)
    backoff_max: float = Field(default=300.0, ge=0)
    schedule: str | None = None
    lease_seconds: float = Field(default=30.0, ge=2, le=3600)  # see service/workers.py
    settle: float = Field(default=86400.0, ge=0, le=30 * 86400)
    access_log: bool = True  # serve: one line per request on stderr (hooks/access_log.py)
    sso: SsoConfig = Field(default_factory=SsoConfig)
    forward: ForwardConfig = Field(default_factory=ForwardConfig)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            CronSchedule.parse(value)  # raises ValueError naming the bad field
        return value
