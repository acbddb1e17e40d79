"""Many tenants (Exmail corps) in one process: ``sync --all`` and ``serve`` for every tenant.

Each tenant is one :class:`~syncengine.service.engine.Engine` over its own config: its own
staging database (so its own runs, locks, audit and plans), its own Exmail provider and its
own call policy (Exmail limits calls per corp, so each corp gets its own pacer and retry
budget). Nothing is shared between two tenants but the process, so one tenant's failure, brake
or lock never stops another: ``sync --all`` runs every tenant and reports each; ``serve`` gives
every tenant its own hook receiver, worker thread and schedule behind one port.

HTTP routes of a multi-tenant ``serve``:

* ``POST /hooks/hr/{tenant}``: the tenant's HR hook, checked against that tenant's
  ``[hooks] secret`` only (a request signed with another tenant's secret is refused, 401).
* ``/tenants/{tenant}/...``: everything else of the tenant's receiver (``hooks/events/ID``,
  ``sso/login``, ``review/``, ``healthz``, ``metrics``).
* ``GET /healthz``: every tenant's worker and queue; ``GET /metrics``: every tenant's
  counters and gauges with a ``tenant`` label.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from syncengine import clock
from syncengine.errors import EXIT_ERROR, ConfigError, SyncEngineError
from syncengine.service.engine import Engine
from syncengine.service.nightly import SyncReport, sync
from syncengine.tenant_log import tenant_context
from syncengine.tenants import Tenant, Tenants

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- sync --all ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSync:
    """One tenant's part of ``sync --all``: its report, or the error that stopped it."""

    tenant: str
    report: SyncReport | None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.report is not None:
            return self.report.exit_code
        return EXIT_ERROR

    @property
    def status(self) -> str:
        return self.report.status if self.report is not None else "failed"

    def headline(self) -> str:
        if self.report is not None:
            return self.report.headline()
        return f"sync FAILED: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tenant": self.tenant, "status": self.status,
                                "exit_code": self.exit_code}  # fmt: skip
        if self.report is not None:
            data["report"] = self.report.to_dict()
        if self.error is not None:
            data["error"] = self.error
        return data


def combined_exit_code(results: list[TenantSync]) -> int:
    """0 when every tenant did; else the code of the first tenant that did not (by name)."""
    for r in results:
        if r.exit_code:
            return r.exit_code
    return 0


def _sync_one(tenant: Tenant, make_engine: Callable[[Tenant], Engine],
              kwargs: dict[str, Any], report_for: str | None) -> TenantSync:  # fmt: skip
    name = tenant.label
    report = report_for.replace("{tenant}", name) if report_for else None
    with tenant_context(tenant.name):
        try:
            with make_engine(tenant) as engine:
                return TenantSync(name, sync(engine, report=report, **kwargs))
        except SyncEngineError as exc:
            log.warning("sync failed: %s", exc)
            return TenantSync(name, None, str(exc))
        except Exception as exc:  # one tenant's bug must not stop the others
            log.exception("sync failed unexpectedly")
            return TenantSync(name, None, f"unexpected {type(exc).__name__}: {exc}")


def sync_tenants(
    tenants: Tenants,
    *,
    jobs: int = 4,
    make_engine: Callable[[Tenant], Engine] | None = None,
    report_for: str | None = None,
    **kwargs: Any,
) -> list[TenantSync]:
    """:func:`~syncengine.service.nightly.sync` for every tenant, ``jobs`` at a time, each on
    its own engine; a tenant that fails is reported and the others go on. Results are in
    tenant-name order. ``report_for`` is the report path with ``{tenant}`` in it; ``kwargs``
    are :func:`sync`'s (dry_run, actor, notify, the releases)."""
    build = make_engine or (lambda t: Engine(t.config))
    chosen = list(tenants)
    workers = max(1, min(jobs, len(chosen)))
    if workers == 1:
        return [_sync_one(t, build, kwargs, report_for) for t in chosen]
    with ThreadPoolExecutor(workers, thread_name_prefix="tenant-sync") as pool:
        return list(pool.map(lambda t: _sync_one(t, build, kwargs, report_for), chosen))


# --- serve for many tenants ----------------------------------------------------------------


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


async def _text(send: Send, status: int, text: str, content_type: str) -> None:
    data = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


def merge_metrics(pages: dict[str, str]) -> str:
    """Several tenants' exposition texts as one: each family's HELP and TYPE once, every
    sample labelled with its ``tenant``."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for tenant, text in sorted(pages.items()):
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split()[2]
                if family not in heads:
                    order.append(family)
                    heads[family], samples[family] = [], []
                if len(heads[family]) < 2:
                    heads[family].append(line)
                continue
            if not line.strip():
                continue
            name, _, rest = line.partition(" ")
            label = f'tenant="{tenant}"'
            name = name[:-1] + "," + label + "}" if name.endswith("}") else f"{name}{{{label}}}"
            samples.setdefault(family, []).append(f"{name} {rest}")
    lines: list[str] = []
    for family in order:
        lines.extend(heads[family])
        lines.extend(samples[family])
    return "\n".join(lines) + "\n"


@dataclass
class TenantSite:
    """One tenant in a running ``serve``: its backend (receiver and worker) and ASGI app."""

    name: str
    backend: Any  # service.hooks.HookBackend
    app: ASGIApp


@dataclass
class TenantRouter:
    """The one ASGI app of a multi-tenant ``serve``: routes each request to its tenant."""

    sites: dict[str, TenantSite] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        parts = path.strip("/").split("/")
        if path == "/healthz":
            await self._healthz(send)
            return
        if path == "/metrics":
            await self._metrics(send)
            return
        if len(parts) == 3 and parts[:2] == ["hooks", "hr"]:
            await self._forward(parts[2], "/hooks/hr", scope, receive, send)
            return
        if len(parts) >= 3 and parts[0] == "tenants":
            # the review pages are mounted at their full path (their links and cookies carry
            # the tenant); the rest of the tenant's receiver sees its own paths
            rest = path if parts[2] == "review" else "/" + "/".join(parts[2:])
            await self._forward(parts[1], rest, scope, receive, send)
            return
        hint = "this serve has several tenants: POST /hooks/hr/{tenant}, /tenants/{tenant}/..."
        await _json(send, 404, {"error": f"no route {path[:200]}", "hint": hint})

    async def _forward(self, name: str, path: str, scope: Scope, receive: Receive,
                       send: Send) -> None:  # fmt: skip
        site = self.sites.get(name)
        if site is None:
            await _json(send, 404, {"error": f"no tenant {name[:60]!r}"})
            return
        inner = dict(scope)
        inner["path"] = path
        inner["raw_path"] = path.encode("utf-8")
        inner["root_path"] = scope.get("root_path", "")
        with tenant_context(name):
            await site.app(inner, receive, send)

    def _health(self) -> dict[str, Any]:
        tenants: dict[str, Any] = {}
        for name, site in sorted(self.sites.items()):
            try:
                depth, age = site.backend.queue()
                tenants[name] = {"worker": site.backend.worker_alive(), "queue_depth": depth,
                                 "oldest_age_seconds": round(age, 3)}  # fmt: skip
            except SyncEngineError as exc:
                tenants[name] = {"worker": site.backend.worker_alive(), "error": str(exc)}
        return tenants

    async def _healthz(self, send: Send) -> None:
        from starlette.concurrency import run_in_threadpool

        tenants = await run_in_threadpool(self._health)
        ok = all(t.get("worker") and "error" not in t for t in tenants.values())
        await _json(send, 200 if ok else 503,
                    {"status": "ok" if ok else "degraded", "tenants": tenants})  # fmt: skip

    async def _metrics(self, send: Send) -> None:
        from starlette.concurrency import run_in_threadpool

        from syncengine.hooks.metrics import CONTENT_TYPE

        def pages() -> dict[str, str]:
            out: dict[str, str] = {}
            for name, site in self.sites.items():
                b = site.backend
                try:
                    depth, age = b.queue()
                except SyncEngineError:
                    depth, age = -1, 0.0
                out[name] = b.metrics.render({
                    "syncengine_event_queue_depth": depth,
                    "syncengine_event_queue_oldest_age_seconds": round(age, 3),
                    "syncengine_worker_alive": 1 if b.worker_alive() else 0,
                })  # fmt: skip
            return out

        await _text(send, 200, merge_metrics(await run_in_threadpool(pages)), CONTENT_TYPE)


@dataclass(frozen=True)
class TenantsStart:
    """What a multi-tenant ``serve`` shows once it listens: per tenant, hooks/sso/schedule."""

    base_url: str
    tenants: dict[str, dict[str, Any]]


def _in_tenant(name: str, job: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with tenant_context(name):
            return job()

    return run


@contextmanager
def tenant_sites(
    tenants: Tenants, make_engine: Callable[[Tenant], Engine] | None = None
) -> Iterator[TenantRouter]:
    """Every tenant's backend, worker and schedule started, behind one router; stopped (and
    the engines closed) when the block ends. A tenant whose engine cannot be built is an
    error before anything starts (naming the tenant)."""
    from syncengine.hooks.app import create_app as create_hook_app
    from syncengine.hooks.review import with_review
    from syncengine.hooks.schedule import CronSchedule
    from syncengine.hooks.worker import Scheduler, Worker
    from syncengine.service.hooks import HookBackend
    from syncengine.service.review_pages import review_backend
    from syncengine.service.workers import Heartbeat, SharedTenant, worker_id

    build = make_engine or (lambda t: Engine(t.config))
    router = TenantRouter()
    holder = worker_id()
    shared = [t for t in tenants if t.config.database_url.startswith(("postgresql", "postgres:"))]
    beat = min((t.config.hooks.lease_seconds for t in shared), default=30.0) / 5
    heartbeat = Heartbeat(beat)
    with ExitStack() as stack:
        for tenant in tenants:
            name = tenant.label
            engine = stack.enter_context(build(tenant))
            config = engine.config
            try:
                backend = HookBackend(engine)
            except SyncEngineError as exc:
                raise ConfigError(f"tenant {name}: {exc}") from None
            app: Any = with_review(create_hook_app(backend), review_backend(engine),
                                   prefix=f"/tenants/{name}/review")  # fmt: skip
            process: Callable[[], int] = backend.process
            scheduled: Callable[[], None] = backend.scheduled_sync
            if tenant in shared:  # several serve may share it: work under the tenant's lease
                work = SharedTenant(name, engine, backend, holder, heartbeat)
                process, scheduled = work.process, work.scheduled_sync
            worker = Worker(_in_tenant(name, process),
                            coalesce_window=config.hooks.coalesce_window,
                            poll_interval=config.hooks.poll_interval,
                            name=f"hook-worker-{name}")  # fmt: skip
            backend.worker = worker
            if config.hooks.schedule:
                zone = config.timezone
                backend.scheduler = Scheduler(
                    CronSchedule.parse(config.hooks.schedule),
                    _in_tenant(name, scheduled),
                    clock=lambda e=engine, z=zone: clock.local(e.now(), z),  # type: ignore[misc]
                    name=f"scheduler-{name}",
                )
            router.sites[name] = TenantSite(name, backend, app)
        started: list[Any] = []
        if shared:
            heartbeat.start()
            started.append(heartbeat)
        try:
            for site in router.sites.values():
                site.backend.worker.start()
                started.append(site.backend.worker)
                if site.backend.scheduler is not None:
                    site.backend.scheduler.start()
                    started.append(site.backend.scheduler)
            yield router
        finally:
            threads = [threading.Thread(target=s.stop) for s in started]
            for t in threads:
                t.start()
            for t in threads:
                t.join()


def serve_tenants(
    tenants: Tenants,
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    on_ready: Callable[[TenantsStart], None] | None = None,
    log_level: str = "warning",
) -> None:
    """One ``serve`` for every tenant on one port, until interrupted (routes: module
    docstring). The server's own settings (timeouts, connection cap, access log) are the
    first tenant's ``[hooks]``: put them in the shared ``[hooks]`` table."""
    import uvicorn

    from syncengine.hooks.access_log import AccessLog
    from syncengine.hooks.server import serve_limits, server_config
    from syncengine.sockets import listening_socket

    first = tenants.tenants[0].config
    with tenant_sites(tenants) as router:
        app: Any = router
        if first.hooks.access_log:
            app = AccessLog(app, zone=first.timezone)
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                              where="--host/--port",
                              hint="choose another port (0 = any free one)") from None  # fmt: skip
        try:
            shown = f"[{host}]" if ":" in host else host
            if on_ready is not None:
                info = {
                    name: {"hooks": bool(site.backend.hook_secret),
                           "sso": bool(site.backend.sso_secret),
                           "schedule": site.backend.config.hooks.schedule}
                    for name, site in router.sites.items()
                }  # fmt: skip
                on_ready(TenantsStart(f"http://{shown}:{sock.getsockname()[1]}", info))
            server = uvicorn.Server(server_config(app, serve_limits(first.hooks),
                                                  log_level=log_level))  # fmt: skip
            server.run(sockets=[sock])
        finally:
            sock.close()
