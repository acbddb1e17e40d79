"""The emulator's knobs: faults, limits, timings, control API, state file.

:class:`EmulatorOptions` is what ``create_app`` takes; :class:`Faults` is the part the control
API may change while the emulator runs (``POST /_emulator/faults``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Literal

GEN1_TOKEN_LIFETIME = 86400.0
GEN2_TOKEN_LIFETIME = 7200.0


@dataclass(frozen=True)
class EmulatorOptions:
    """How the emulator behaves. All faults are off by default.

    ``drop_when`` says whether a dropped connection happens before the call takes effect or
    after (the default, the nasty case: a write happened but the client never hears of it).
    ``busy_rate`` is the fraction of calls answered "system busy" at the API level (Gen 2
    errcode -1, Gen 1 1002) with HTTP 200. ``rate_limit_per_token`` is calls per second per
    token (0 = unlimited); over it Gen 2 answers 45009 and Gen 1 1002. ``token_lifetime``
    None means the real value (Gen 2 7200 s, Gen 1 86400 s). ``rng_seed`` makes fault
    injection repeatable. ``invalid_token_code`` is what Gen 2 answers for an unknown or
    expired token (40014; 42001 or 40001 to test a client's tolerance).

    Readings of the protocol the sources leave open, one option each (see
    :mod:`syncengine.emulator.readings`): ``listen_ver`` "inline" puts ``Ver`` in each Gen 1
    mail event, "separate" sends mail events without it and the version bump as its own
    ``{"Ver":...}`` answer; ``listen_hold`` 0 answers ``listen`` at once; ``newcount_dates``
    "required" refuses a Gen 2 ``mail/newcount`` without ``begin_date``/``end_date``;
    ``invalid_token_answer`` is how an unknown or expired token is refused: "errcode" (Gen 1
    ``{"errcode":"1200","error":"invalid_token"}``, Gen 2 ``invalid_token_code``), "error" (Gen 1
    ``{"error":"invalid_token"}`` alone) or "http401" (HTTP 401 with that body);
    ``user_mod`` "reset" makes a Gen 1 ``user/sync`` MOD reset every field it omits;
    ``dept_visible_after`` seconds hide a new department from user ADD/MOD (1310 / 60003).
    """

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    drop_when: Literal["before", "after"] = "after"
    busy_rate: float = 0.0
    rate_limit_per_token: float = 0.0
    token_lifetime: float | None = None
    listen_hold: float = 25.0
    control: bool = False
    state_file: str | os.PathLike[str] | None = None
    rng_seed: int | None = None
    invalid_token_code: int = 40014
    listen_ver: Literal["inline", "separate"] = "inline"
    newcount_dates: Literal["optional", "required"] = "optional"
    invalid_token_answer: Literal["errcode", "error", "http401"] = "errcode"
    user_mod: Literal["keep", "reset"] = "keep"
    dept_visible_after: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "busy_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (got {value})")
        for name in ("latency_ms", "rate_limit_per_token", "listen_hold", "dept_visible_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.token_lifetime is not None and self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be positive")
        if self.drop_when not in ("before", "after"):
            raise ValueError("drop_when must be 'before' or 'after'")
        if self.user_mod not in ("keep", "reset"):
            raise ValueError("user_mod must be 'keep' or 'reset'")
        if self.invalid_token_answer not in ("errcode", "error", "http401"):
            raise ValueError("invalid_token_answer must be 'errcode', 'error' or 'http401'")
        if self.newcount_dates not in ("optional", "required"):
            raise ValueError("newcount_dates must be 'optional' or 'required'")
        if self.listen_ver not in ("inline", "separate"):
            raise ValueError("listen_ver must be 'inline' or 'separate'")
        if self.invalid_token_code not in (40014, 42001, 40001):
            raise ValueError("invalid_token_code must be 40014, 42001 or 40001")


_WORDS = ("drop_when", "listen_ver", "newcount_dates", "invalid_token_answer", "user_mod")


@dataclass
class Faults:
    """The run-time adjustable subset of the options (mutable, guarded by the runtime lock)."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    drop_when: str = "after"
    busy_rate: float = 0.0
    rate_limit_per_token: float = 0.0
    token_lifetime: float | None = None
    listen_hold: float = 25.0
    listen_ver: str = "inline"
    newcount_dates: str = "optional"
    invalid_token_answer: str = "errcode"
    user_mod: str = "keep"
    dept_visible_after: float = 0.0

    @classmethod
    def from_options(cls, options: EmulatorOptions) -> Faults:
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied, validated like EmulatorOptions."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown} (known: {sorted(names)})")
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in changes.items():
            if key in _WORDS:
                merged[key] = str(value)
            elif key == "token_lifetime":
                merged[key] = None if value is None else float(value)
            else:
                merged[key] = float(value if value is not None else 0)
        EmulatorOptions(**merged)  # validation only
        return Faults(**merged)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
