"""Forwarding new-mail events to the OA system as signed JSON POSTs, with retries.

Each event is one POST, signed like the engine's other webhooks (``X-Syncengine-Timestamp``,
``X-Syncengine-Signature: sha256=<hex>`` over ``timestamp + "." + body``, see
:mod:`syncengine.notify`), with ``X-Syncengine-Event: new_mail`` and a stable
``X-Syncengine-Delivery`` id derived from the event, so a receiver can drop the rare duplicate
(the watcher forwards first and stores its cursor second: at least once, never lost).

A dropped connection, a timeout and HTTP 408/429/5xx are retried with exponential backoff
(``Retry-After`` honoured); other answers are not. When the retries run out
:class:`ForwardError` is raised and the caller stops without moving its cursor, so the next
start sends the event again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from syncengine.callpolicy import RetryPolicy, retry_after
from syncengine.errors import SyncEngineError
from syncengine.notify import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RETRIABLE_STATUS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    display_url,
    sign,
)

log = logging.getLogger(__name__)


class ForwardError(SyncEngineError):
    """The forward URL did not take an event after every retry."""


class _Again(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def delivery_id(event: Mapping[str, Any]) -> str:
    """A stable id for one new-mail event (same event, same id, across restarts)."""
    blob = json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "mail-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class Forwarder:
    """POSTs events to one URL; :meth:`send` returns the attempts it took or raises."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self._attempts = attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def send(self, event: Mapping[str, Any]) -> int:
        body = json.dumps(
            {"event": "new_mail", "delivery_id": delivery_id(event), **event},
            ensure_ascii=False,
            sort_keys=True,
        ).encode("utf-8")
        ident = delivery_id(event)
        tries = 0
        policy = RetryPolicy(max_attempts=self._attempts, backoff_initial=self._backoff,
                             backoff_max=self._backoff_max, jitter=0.0,
                             max_retry_seconds=math.inf)  # fmt: skip

        def attempt() -> None:
            nonlocal tries
            tries += 1
            ts = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "syncengine-mail-forward",
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self._secret, ts, body),
                EVENT_HEADER: "new_mail",
                DELIVERY_HEADER: ident,
            }
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                raise _Again(f"{type(exc).__name__}") from None
            if 200 <= response.status_code < 300:
                return
            reason = f"HTTP {response.status_code}"
            if response.status_code in RETRIABLE_STATUS:
                raise _Again(reason, retry_after(response.headers.get("Retry-After")))
            raise ForwardError(
                f"{reason} for new-mail event {ident} (not retried)",
                where=display_url(self.url),
                hint="fix the receiver or the URL; the event is sent again on the next start",
            )

        try:
            policy.call(attempt, lambda exc: isinstance(exc, _Again), sleep=self._sleep)
        except _Again as exc:
            raise ForwardError(
                f"new-mail event {ident} not delivered after {tries} attempt(s): {exc}",
                where=display_url(self.url),
                hint="check the receiver; the event is sent again on the next start",
            ) from None
        log.info("forwarded %s to %s (%s attempt(s))", ident, display_url(self.url), tries)
        return tries
