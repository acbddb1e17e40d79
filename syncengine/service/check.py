"""``syncengine check``: the ``[exmail]`` table against the live service, read-only.

The probes themselves are in :mod:`syncengine.providers.check`; this wires a provider whose
calls are tried once (a check reports what is wrong now rather than retrying for minutes) and
says where the config points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import Config
from syncengine.providers.check import Probe, check_provider
from syncengine.service.engine import build_provider


@dataclass(frozen=True)
class ExmailCheck:
    """Where the config points and what each read-only probe found."""

    api: str
    endpoints: dict[str, str]
    probes: list[Probe]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.probes)

    def to_dict(self) -> dict[str, Any]:
        return {"api": self.api, "ok": self.ok, "endpoints": self.endpoints,
                "probes": [p.to_dict() for p in self.probes]}  # fmt: skip


def check_exmail(config: Config, *, transport: httpx.BaseTransport | None = None) -> ExmailCheck:
    """A token per credential, one list call, the domains (see providers/check.py)."""
    ex = config.exmail
    if ex.api == "v2":
        endpoints = {"api": ex.host_base + "/cgi-bin/"}
    else:
        endpoints = {"token": ex.token_url, "api": ex.openapi_base + "/openapi/"}
    once = CallPolicy(RetryPolicy(max_attempts=1))
    provider = build_provider(config, transport=transport, calls=once)
    try:
        return ExmailCheck(ex.api, endpoints, check_provider(provider, ex))
    finally:
        provider.close()
