"""Shared set-up for the hook, SSO and mail-forward tests (no tests here).

``HookEnv`` is an :class:`~tests.e2e.test_apply_support.ApplyEnv` (an HR CSV, a config with a
SQLite staging file, the emulator on loopback) plus a ``[hooks]`` table, an initial sync so
the HR people are linked, and helpers that sign requests the way an HR system or an OA portal
would. The HMAC is computed here independently of ``syncengine.hooks.signing``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn

from syncengine import service
from syncengine.hooks.app import create_app
from syncengine.hooks.server import serve_limits, server_config
from syncengine.hooks.worker import Worker
from tests.e2e.test_apply_support import ApplyEnv, person

HOOK_SECRET = "hook-secret-for-tests-0001"
SSO_SECRET = "portal-secret-for-tests-0001"
FORWARD_SECRET = "receiver-secret-0001"  # tests.fixtures.notify_receiver's default


def hooks_table(**overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "secret": HOOK_SECRET,
        "coalesce_window": 0.2,
        "poll_interval": 0.2,
        "backoff_initial": 0.2,
        "backoff_max": 0.5,
        "max_attempts": 4,
        "sso": {"secret": SSO_SECRET, "lifetime": 60},
        "forward": {"secret": FORWARD_SECRET, "attempts": 3, "backoff": 0.05,
                    "backoff_max": 0.1, "timeout": 5},
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            merged = {**table[key], **value}
            table[key] = {k: v for k, v in merged.items() if v is not None}
        elif value is None:
            table.pop(key, None)  # None: leave the key out (TOML has no null)
        else:
            table[key] = value
    return table


def seed_rows() -> list[dict[str, str]]:
    """The default seed's people exactly as they are, so the initial sync only links them
    (E0004 stays disabled: terminated in HR)."""
    return [
        person("E0001", "张三", "zhangsan@example.com", "研发中心/平台部", position="高级工程师",
               mobile="13800000001", gender="男", aliases="san.zhang@example.com"),
        person("E0002", "李四", "lisi@example.com", "研发中心/移动部", position="工程师",
               mobile="13800000002", gender="女"),
        person("E0003", "王五", "wangwu@example.com", "市场部", position="市场经理", gender="男"),
        person("E0004", "赵六", "zhaoliu@example.com", "人力资源部", gender="女",
               status="terminated"),
    ]  # fmt: skip


def make_env(env: ApplyEnv, tables: dict[str, Any] | None = None, **hooks: Any) -> ApplyEnv:
    """Write the config with ``[hooks]`` (and other ``tables``) and run the initial sync
    (ingest, plan, apply)."""
    env.write(seed_rows(), hooks=hooks_table(**hooks), **(tables or {}))
    plan = env.ingest_and_plan()
    r = env.cli("apply", str(plan), "--yes")
    assert r.exit_code == 0, r.output
    return env


# --- signing as the HR system and the portal do it ------------------------------------------


def sign(secret: str, timestamp: str, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + payload, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def hook_headers(body: bytes, *, secret: str = HOOK_SECRET, ts: int | None = None,
                 delivery: str | None = None) -> dict[str, str]:  # fmt: skip
    stamp = str(int(time.time()) if ts is None else ts)
    headers = {"Content-Type": "application/json", "X-Syncengine-Timestamp": stamp,
               "X-Syncengine-Signature": sign(secret, stamp, body)}  # fmt: skip
    if delivery is not None:
        headers["X-Syncengine-Delivery"] = delivery
    return headers


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def post_hook(client: httpx.Client, document: dict[str, Any], **kw: Any) -> httpx.Response:
    body = body_of(document)
    return client.post("/hooks/hr", content=body, headers=hook_headers(body, **kw))


def get_event(client: httpx.Client, event_id: int) -> dict[str, Any]:
    path = f"/hooks/events/{event_id}"
    response = client.get(path, headers=hook_headers(path.encode()))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def settled_event(client: httpx.Client, event_id: int, timeout: float = 30.0) -> dict[str, Any]:
    """The event once the worker is done with it (applied or failed)."""
    wait_until(f"event {event_id} worked off",
               lambda: get_event(client, event_id)["status"] != "received", timeout)  # fmt: skip
    return get_event(client, event_id)


def portal_link(user: str, *, secret: str = SSO_SECRET, ts: int | None = None) -> str:
    stamp = str(int(time.time()) if ts is None else ts)
    sig = hmac.new(secret.encode(), f"{stamp}.{user.lower()}".encode(), hashlib.sha256)
    return "/sso/login?" + urlencode({"user": user, "ts": stamp, "sig": sig.hexdigest()})


def upsert(delivery: str, eid: str, name: str, email: str, dept: str = "",
           **fields: str) -> dict[str, Any]:  # fmt: skip
    return {"kind": "upsert", "delivery_id": delivery,
            "person": person(eid, name, email, dept, **fields)}  # fmt: skip


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


# --- the receiver in this process ------------------------------------------------------------


@dataclass
class Receiver:
    base_url: str
    backend: service.HookBackend
    worker: Worker | None
    client: httpx.Client


@contextmanager
def running_receiver(env: ApplyEnv, *, worker: bool = True) -> Iterator[Receiver]:
    """The hook app over a real backend, served by uvicorn on a free loopback port (socket
    with TCP_NODELAY), with its worker thread unless ``worker=False``."""
    config = env.config()
    backend = service.HookBackend(service.Engine(config))
    w = None
    if worker:
        w = Worker(backend.process, coalesce_window=config.hooks.coalesce_window,
                   poll_interval=config.hooks.poll_interval)  # fmt: skip
        backend.worker = w
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    # The same server settings as ``syncengine serve`` (timeouts, connection cap).
    limits = serve_limits(config.hooks)
    server = uvicorn.Server(server_config(create_app(backend), limits, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the receiver did not start"
    if w is not None:
        w.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = httpx.Client(base_url=base, timeout=30.0)
    try:
        yield Receiver(base, backend, w, client)
    finally:
        client.close()
        if w is not None:
            w.stop()
        server.should_exit = True
        thread.join(10)
        sock.close()
        backend.close()
