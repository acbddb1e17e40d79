"""The Starlette app of ``syncengine serve``: HR hooks in, event status, health, metrics, SSO.

The app decides nothing about mailboxes and never calls Exmail while answering a hook: it
checks the request (size, signature, payload), hands a valid event to the backend to be
stored durably, wakes the worker and answers ``202 Accepted`` with the event's id. The
backend (built by :mod:`syncengine.service`) is the only thing that touches the database or
the provider; its calls are blocking, so they run in the thread pool.

Answers (JSON bodies carry ``error`` and, for a bad payload, ``field``):

* ``POST /hooks/hr``: 202 stored; 400 not JSON (or nested too deep, or an absurd number);
  401 signature; 409 replay (the same signed request again, or a delivery id seen before);
  413 body too large; 415 not JSON content; 422 invalid payload (the field is named);
  503 no ``[hooks] secret`` configured.
* ``GET /hooks/events/{id}``: the event's status; signed like a hook, over the path; 404 for
  an id that is no event (whatever its size).
* ``GET /healthz``, ``GET /metrics``.
* ``GET /sso/login?user=..&ts=..&sig=..``: 302 to a fresh Exmail login URL; 403 with the
  reason for a bad, expired or already used link or a refused account (also an address
  outside the company's domains), 404 for no such mailbox.

Every refused hook or SSO request is told in one log line with the reason: its access line
(``refused="..."``, :mod:`.access_log`) or, with the access log off, a WARNING line of its own.
A client that goes away in the middle of its body is one line too, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from syncengine.errors import NotFoundError, SyncEngineError
from syncengine.hooks.bodies import Gone, TooLarge, read_capped, tell, tell_gone
from syncengine.hooks.metrics import CONTENT_TYPE, Metrics
from syncengine.hooks.payloads import (
    DepartmentChangeEvent,
    PayloadError,
    TerminateEvent,
    UpsertEvent,
    parse_event,
)
from syncengine.hooks.signing import (
    EARLY_SKEW,
    check_hook_signature,
    check_sso_link,
    replay_key,
)
from syncengine.notify import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

log = logging.getLogger(__name__)

HookEventIn = UpsertEvent | TerminateEvent | DepartmentChangeEvent


class SsoRefused(SyncEngineError):
    """The account may not be entered by SSO (protected, disabled, unmanaged)."""


@dataclass(frozen=True)
class Stored:
    """What the backend did with a valid event."""

    event_id: int
    replay: bool
    status: str
    signed_replay: bool = False  # the same signed request again (event_id is then 0)


class Backend(Protocol):
    """What the app needs from the rest of the engine (see service.HookBackend)."""

    hook_secret: str | None
    sso_secret: str | None
    tolerance: float
    max_body: int
    sso_lifetime: float
    metrics: Metrics

    def employee_of(self, event: HookEventIn) -> str:
        """The event's employee id; an upsert's record is mapped and checked here, so a bad
        record is refused now (PayloadError naming the HR field) rather than failing later."""

    def store(self, event: HookEventIn, employee_id: str, replay_key: str,
              expires_at: datetime) -> Stored:  # fmt: skip
        """Store the event and record its signature's replay key (until ``expires_at``) in
        one transaction."""

    def event_status(self, event_id: int) -> dict[str, Any] | None: ...

    def queue(self) -> tuple[int, float]:
        """(events waiting, age in seconds of the oldest)."""

    def worker_alive(self) -> bool: ...

    def wake(self) -> None: ...

    def sso_url(self, email: str) -> str:
        """A fresh login URL, or SsoRefused / NotFoundError / ProviderError."""

    def claim_signature(self, key: str, expires_at: datetime) -> bool:
        """Record a signed request as honoured (shared by every process on the staging
        database); False when it was honoured before."""

    def release_signature(self, key: str) -> None:
        """Forget a claim whose request could not be carried out."""


MAX_EVENT_ID = 2**63 - 1
"""Ids are BIGINT: a larger number is no event (and must not reach the database driver)."""


def _expiry(timestamp: str | None, seconds: float) -> datetime:
    """When a signature made at ``timestamp`` (already checked: unix seconds) stops passing."""
    return datetime.fromtimestamp(int((timestamp or "0").strip()) + seconds, UTC)


def _error(code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=code)


def _logged(request: Request, code: int, message: str, **extra: Any) -> JSONResponse:
    """A refusal, logged (see :func:`~syncengine.hooks.bodies.tell`)."""
    tell(request, code, message)
    return _error(code, message, **extra)


def create_app(backend: Backend, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The receiver app over ``backend``."""
    metrics = backend.metrics

    def answer(response: Response) -> Response:
        metrics.inc("syncengine_hook_requests_total", code=str(response.status_code))
        return response

    def refused(request: Request, code: int, message: str, **extra: Any) -> Response:
        return answer(_logged(request, code, message, **extra))

    async def receive_hook(request: Request) -> Response:
        secret = backend.hook_secret
        if not secret:
            return refused(request, 503, "hooks are not configured: set [hooks] secret")
        try:
            body = await read_capped(request, backend.max_body)
        except TooLarge:
            return refused(request, 413, f"body larger than {backend.max_body} bytes")
        except Gone:
            tell_gone(request)
            return answer(_error(400, "the body was not received"))
        why = check_hook_signature(
            secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
            now=clock(),
            tolerance=backend.tolerance,
        )
        if why is not None:
            return refused(request, 401, why)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype != "application/json":
            return refused(request, 415, f"content type {ctype!r}: send application/json")
        try:
            event = parse_event(body, request.headers.get(DELIVERY_HEADER))
        except PayloadError as exc:
            status = 400 if not exc.field else 422
            return refused(request, status, str(exc), field=exc.field or None)
        # The replay key comes from the signature, which covers the timestamp and the body:
        # the delivery header is not signed, so a new one must not make a captured request new.
        key = replay_key("hook", request.headers.get(SIGNATURE_HEADER) or "")
        expires = _expiry(request.headers.get(TIMESTAMP_HEADER), backend.tolerance)

        def accept() -> tuple[str, Stored] | PayloadError:
            """Map and store in one trip to the thread pool (each trip costs the loop)."""
            try:
                employee_id = backend.employee_of(event)
            except PayloadError as exc:
                return exc
            return employee_id, backend.store(event, employee_id, key, expires)

        try:
            accepted = await run_in_threadpool(accept)
        except SyncEngineError as exc:
            log.error("storing hook %s failed: %s", event.delivery_id, exc)
            return answer(_error(503, "the event could not be stored; send it again later"))
        if isinstance(accepted, PayloadError):
            return refused(request, 422, str(accepted), field=accepted.field or None)
        employee_id, stored = accepted
        if stored.signed_replay:
            return refused(request, 409, "this signed request was received before (same "
                           "timestamp, body and signature); not stored again")  # fmt: skip
        if stored.replay:
            message = f"delivery id {event.delivery_id!r} was received before; not stored again"
            return refused(request, 409, message, id=stored.event_id, status=stored.status)
        backend.wake()
        return answer(
            JSONResponse(
                {
                    "id": stored.event_id,
                    "delivery_id": event.delivery_id,
                    "employee_id": employee_id,
                    "status": stored.status,
                },
                status_code=202,
                headers={"Location": f"/hooks/events/{stored.event_id}"},
            )
        )

    async def event_status(request: Request) -> Response:
        secret = backend.hook_secret
        if not secret:
            return _logged(request, 503, "hooks are not configured: set [hooks] secret")
        why = check_hook_signature(
            secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            request.url.path.encode("utf-8"),
            now=clock(),
            tolerance=backend.tolerance,
        )
        if why is not None:
            return _logged(request, 401, why + " (GET requests sign the path instead of a body)")
        raw = request.path_params["event_id"]
        if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 19
                and int(raw) <= MAX_EVENT_ID):  # fmt: skip
            return _logged(request, 404, "no such event (ids are positive whole numbers)")
        event_id = int(raw)
        data = await run_in_threadpool(backend.event_status, event_id)
        if data is None:
            return _error(404, f"no event {event_id}")
        return JSONResponse(data)

    async def healthz(request: Request) -> Response:
        try:
            depth, age = await run_in_threadpool(backend.queue)
        except SyncEngineError as exc:
            return _error(503, f"staging database: {exc}")
        alive = backend.worker_alive()
        body = {"status": "ok" if alive else "worker stopped", "worker": alive,
                "queue_depth": depth, "oldest_age_seconds": round(age, 3)}  # fmt: skip
        return JSONResponse(body, status_code=200 if alive else 503)

    async def metrics_page(request: Request) -> Response:
        try:
            depth, age = await run_in_threadpool(backend.queue)
        except SyncEngineError:
            depth, age = -1, 0.0
        text = metrics.render(
            {
                "syncengine_event_queue_depth": depth,
                "syncengine_event_queue_oldest_age_seconds": round(age, 3),
                "syncengine_worker_alive": 1 if backend.worker_alive() else 0,
            }
        )
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    async def sso_login(request: Request) -> Response:
        def refuse(status: int, reason: str) -> Response:
            metrics.inc("syncengine_sso_requests_total", code=str(status))
            tell(request, status, reason)
            return PlainTextResponse(f"single sign-on refused: {reason}\n", status_code=status)

        secret = backend.sso_secret
        if not secret:
            return refuse(503, "not configured (set [hooks.sso] secret)")
        q = request.query_params
        user = q.get("user")
        why = check_sso_link(secret, user, q.get("ts"), q.get("sig"), now=clock(),
                             lifetime=backend.sso_lifetime)  # fmt: skip
        if why is not None or user is None:
            return refuse(403, why or "no user")
        # Single use, across every serve process on the staging database: the link's
        # signature is claimed before Exmail is asked, so two clicks cannot both pass.
        key = replay_key("sso", q.get("sig") or "")
        try:
            fresh = await run_in_threadpool(backend.claim_signature, key, _expiry(
                q.get("ts"), backend.sso_lifetime + EARLY_SKEW))  # fmt: skip
        except SyncEngineError as exc:
            log.warning("SSO: the staging database is unavailable: %s", exc)
            return refuse(503, "the link cannot be checked now; try again")
        if not fresh:
            return refuse(403, "the link was used already (portal links are single use)")
        try:
            url = await run_in_threadpool(backend.sso_url, user)
        except SsoRefused as exc:
            return refuse(403, exc.message)
        except NotFoundError:
            return refuse(404, "no such mailbox")
        except SyncEngineError as exc:
            log.warning("SSO login URL for a portal link failed: %s", exc)
            # Exmail failed, not the link: the same link may be clicked again.
            await run_in_threadpool(backend.release_signature, key)
            return refuse(502, "Exmail did not give a login URL; try again")
        metrics.inc("syncengine_sso_requests_total", code="302")
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    routes = [
        Route("/hooks/hr", receive_hook, methods=["POST"]),
        Route("/hooks/events/{event_id}", event_status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/sso/login", sso_login, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown paths and methods answer JSON like every other refusal of the receiver."""
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    # A path with a trailing slash (or an encoded one: /hooks/events/0%2F) is 404 like any
    # other unknown path, not a 307 to a path the sender did not sign.
    app.router.redirect_slashes = False
    return app
