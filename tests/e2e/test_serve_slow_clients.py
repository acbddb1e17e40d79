"""``syncengine serve`` as a real process against slow and vanishing clients (issue 11).

Raw sockets play the clients: half a request head, a head and a trickle of body, a body cut
off by a disconnect, more connections than the cap. Each is refused within its timeout
(``408``/``503`` and closed), the server keeps answering everyone else, and its log has one
line per refused request and no traceback.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_restart import free_port, serve_process
from tests.e2e.test_serve_support import hook_headers, make_env, wait_until

pytestmark = pytest.mark.timeout(120)

HEAD = b"POST /hooks/hr HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"


@contextmanager
def serving(
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
    tables: dict[str, Any] | None = None,
    **hooks: object,
) -> Iterator[tuple[int, list[str]]]:
    """``syncengine serve`` with ``[hooks]`` overrides (and other config ``tables``); yields
    its port and, once the block is left and the process stopped, the lines of its stderr
    (in the list)."""
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), tables, **hooks)
    port = free_port()
    lines: list[str] = []
    with serve_process(env, port) as proc:
        try:
            yield port, lines
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
            lines.extend(err.decode("utf-8", "replace").splitlines())


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when (monotonic) it closed."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic()


def count(lines: list[str], pattern: str) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


def told(lines: list[str]) -> list[str]:
    """The log lines about requests, less the start line and the test's own health checks."""
    return [line for line in lines if "listening on" not in line
            and not re.search(r'"GET /(healthz|metrics)" 200 ', line)]  # fmt: skip


def test_slow_heads_and_bodies_are_cut_off_with_one_line_each(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    with serving(tmp_path, emulator_factory, header_timeout=1, body_timeout=1.5) as (
        port,
        lines,
    ):
        # A keep-alive connection whose second request stalls is cut off like a new one.
        kept = connect(port)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the JSON body ends the first response
            first += kept.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 "), first
        heads = [kept, *(connect(port) for _ in range(9))]
        bodies = [connect(port) for _ in range(10)]
        started = time.monotonic()
        for s in heads:
            s.sendall(HEAD)  # never the blank line that ends the head
        for s in bodies:
            s.sendall(HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"kind": "ups')
        # Everyone else is still served while they hang.
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        for s in heads + bodies:
            data, closed = read_until_closed(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"connection: close" in data.lower()
            assert closed - started < 4.0, f"held {closed - started:.1f} s"
    assert count(lines, r"refused 127\.0\.0\.1:\d+: the request head was not complete after 1 s")
    assert count(lines, r"request head was not complete") == 10, lines
    assert count(lines, r"refused 127\.0\.0\.1:\d+ \(POST /hooks/hr\): the request body") == 10
    assert len(told(lines)) == 20, lines  # one per refused request, nothing else
    assert not any("Traceback" in line for line in lines), lines


def test_a_slow_body_already_answered_gets_no_second_answer(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    with serving(tmp_path, emulator_factory, body_timeout=1) as (port, lines):
        s = connect(port)
        # Too large by its Content-Length: answered 413 at once, without reading the body.
        s.sendall(HEAD + b"Content-Length: 100000\r\n\r\n" + b"x" * 100)
        data, _ = read_until_closed(s)
        s.close()
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert data.count(b"HTTP/1.1 ") == 1, data  # the 413, and no 408 after it
    assert len(told(lines)) == 1, lines
    assert count(lines, r'"POST /hooks/hr" 413 .*refused="body larger than 65536 bytes"') == 1
    assert not any("Traceback" in line for line in lines), lines


def test_a_client_that_vanishes_mid_body_logs_one_line_and_no_traceback(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    with serving(tmp_path, emulator_factory) as (port, lines):
        base = f"http://127.0.0.1:{port}"
        body = b'{"kind": "terminate", "delivery_id": "gone", "employee_id": "E0001"}'
        signed = "".join(f"{k}: {v}\r\n" for k, v in hook_headers(body).items()
                         if k != "Content-Type").encode()  # fmt: skip
        for _ in range(20):
            s = connect(port)
            s.sendall(HEAD + signed + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:20])
            s.close()

        def counted() -> bool:
            text = httpx.get(base + "/metrics", timeout=5).text
            return 'syncengine_hook_requests_total{code="400"} 20' in text

        wait_until("the 20 cut-off requests were answered", counted, timeout=20)
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    assert count(lines, r'"POST /hooks/hr" 400 .*refused="the client disconnected before the '
                        r'body was complete"') == 20, lines  # fmt: skip
    assert len(told(lines)) == 20, lines
    assert not any("Traceback" in line or "ERROR" in line for line in lines), lines


def test_a_reviewer_form_cut_off_mid_body_logs_one_line_and_no_traceback(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """The review pages read their forms like the hook receiver reads hooks: a sign-in whose
    client vanishes mid-body is one refusal line, not an ASGI traceback."""
    from tests.e2e.test_review_browser import review_table

    with serving(tmp_path, emulator_factory, {"review": review_table()}) as (port, lines):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/review/login", timeout=5).status_code == 200
        for _ in range(5):
            s = connect(port)
            s.sendall(b"POST /review/login HTTP/1.1\r\nHost: receiver\r\nContent-Type: "
                      b"application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
                      b"csrf=abc&name=wang")  # fmt: skip
            s.close()
        time.sleep(1.0)  # lets the server see the five disconnects (checked after the stop)
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    assert count(lines, r'"POST /review/login" 400 .*refused="the client disconnected '
                        r'before the body was complete"') == 5, lines  # fmt: skip
    assert not any("Traceback" in line or "ERROR" in line for line in lines), lines


def test_connections_past_the_cap_are_answered_503_at_once(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    with serving(tmp_path, emulator_factory, header_timeout=3, max_connections=30) as (
        port,
        lines,
    ):
        held = [connect(port) for _ in range(30)]
        time.sleep(0.3)  # let the server accept them all
        extra = [connect(port) for _ in range(5)]
        for s in extra:
            data, _ = read_until_closed(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 503 "), data
        # Once the idle connections time out, the server takes new ones again.
        for s in held:
            data, _ = read_until_closed(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 408 "), data
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert count(lines, r"refused 127\.0\.0\.1:\d+: 30 connections are open already") == 5
    assert count(lines, r"request head was not complete after 3 s") == 30
    assert not any("Traceback" in line for line in lines), lines


@pytest.mark.parametrize("access_log", [True, False])
def test_each_refused_request_logs_one_line_without_secrets(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], access_log: bool
) -> None:
    with serving(tmp_path, emulator_factory, access_log=access_log) as (port, lines):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        try:
            body = b'{"kind": "terminate", "delivery_id": "x-1", "employee_id": "E0001"}'
            bad = {**hook_headers(body), "X-Syncengine-Signature": "sha256=" + "0" * 64}
            assert client.post("/hooks/hr", content=body, headers=bad).status_code == 401
            weird = body.replace(b"terminate", b"evil\\nkind")
            assert client.post("/hooks/hr", content=weird,
                               headers=hook_headers(weird)).status_code == 422  # fmt: skip
            assert client.post("/hooks/hr", content=b"x" * 70_000,
                               headers=hook_headers(b"")).status_code == 413  # fmt: skip
            path = "/hooks/events/" + "9" * 40
            assert client.get(path, headers=hook_headers(path.encode())).status_code == 404
            assert client.get("/sso/login?user=a@example.com").status_code == 403
        finally:
            client.close()
    refusals = told(lines)
    assert len(refusals) == 5, lines
    codes = [re.search(r"[:\"] (\d{3}) ", line) for line in refusals]
    assert [m.group(1) if m else "" for m in codes] == ["401", "422", "413", "404", "403"], lines
    assert all("signature mismatch" not in line or "refused" in line for line in refusals)
    assert ("refused=" in refusals[0]) is access_log, refusals
    assert not any("0" * 64 in line or "hook-secret" in line for line in lines), lines
