"""Start an emulator on loopback and drive it through its control API.

Used by the test fixture (``tests/fixtures/emulator.py``), the demo and the benchmarks, so
all of them start and steer the emulator the same way. The control API is always on here.
"""

from __future__ import annotations

import copy
import re
import socket
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import httpx

from syncengine.emulator.app import create_app
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.seed import default_seed
from syncengine.emulator.server import RunningServer, start_in_thread


class RunningEmulator:
    """One emulator serving one generation on ``base_url``."""

    def __init__(
        self,
        api: str,
        seed: dict[str, Any],
        options: EmulatorOptions,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.api = api
        self.seed = seed
        self.options = replace(options, control=True)
        self._host = host
        self._server: RunningServer | None = None
        self._start(port)
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)

    def _start(self, port: int) -> None:
        app = create_app(self.api, copy.deepcopy(self.seed), self.options)  # type: ignore[arg-type]
        self._server = start_in_thread(app, self._host, port)
        self.port = self._server.port
        self.base_url = self._server.base_url

    # -- configuration for the client ---------------------------------------------------

    def exmail_config(self) -> dict[str, Any]:
        """An ``[exmail]`` table pointing the client at this emulator (literal secrets)."""
        common = {
            "api": self.api,
            "base_url": self.base_url,
            "sso_url": f"{self.base_url}/cgi-bin/login",
            "domains": list(self.seed.get("domains", [])),
        }
        if self.api == "v2":
            return {
                **common,
                "corp_id": self.seed["corp_id"],
                "secrets": dict(self.seed.get("secrets", {})),
            }
        client_id, client_secret = next(iter(self.seed.get("v1_clients", {}).items()))
        return {**common, "client_id": client_id, "client_secret": client_secret}

    # -- control API --------------------------------------------------------------------

    def control(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        """Call ``/_emulator/<path>``; raises on a non-2xx answer; returns the JSON."""
        path = path if path.startswith("/_emulator/") else "/_emulator/" + path.lstrip("/")
        response = self._http.request(method, path, json=json)
        if response.status_code >= 300:
            raise RuntimeError(
                f"emulator control {method} {path}: HTTP {response.status_code} {response.text}"
            )
        return response.json()

    def set_faults(self, **faults: Any) -> None:
        self.control("POST", "faults", faults)

    def expire_tokens(self) -> None:
        self.control("POST", "expire-tokens")

    def deliver_mail(
        self, to: str, sender: str = '"测试" <sender@example.net>', subject: str = "测试邮件"
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST", "mail", {"to": to, "sender": sender, "subject": subject}
        )
        return result

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.control("GET", f"calls?since={since}")["calls"]
        return calls

    def call_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.control("GET", "calls")["counts"]
        return counts

    def clear_calls(self) -> None:
        self.control("POST", "calls/clear")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.control("GET", "state")
        return state

    def check_password(self, userid: str, password: str) -> bool:
        return bool(
            self.control("POST", "check-password", {"userid": userid, "password": password})["ok"]
        )

    def reset(self) -> None:
        """Back to the start: the seed's directory, no tokens, the starting faults, no calls."""
        self.control("POST", "reset")
        o = self.options
        self.set_faults(
            latency_ms=o.latency_ms,
            fail_rate=o.fail_rate,
            drop_rate=o.drop_rate,
            drop_when=o.drop_when,
            busy_rate=o.busy_rate,
            rate_limit_per_token=o.rate_limit_per_token,
            token_lifetime=o.token_lifetime,
            listen_hold=o.listen_hold,
            listen_ver=o.listen_ver,
            newcount_dates=o.newcount_dates,
            invalid_token_answer=o.invalid_token_answer,
            user_mod=o.user_mod,
            dept_visible_after=o.dept_visible_after,
            seed=o.rng_seed,
        )
        self.clear_calls()

    def reseed(self, seed: dict[str, Any]) -> None:
        self.control("POST", "seed", seed)
        self.seed = seed

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    def restart(self) -> None:
        """Stop and start on the same port; state survives only with a state file."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self._start(self.port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def start_emulator(
    api: str = "v2", seed: dict[str, Any] | None = None, **options: Any
) -> RunningEmulator:
    """Start an emulator for ``api`` on a free loopback port (control API on)."""
    if api not in ("v1", "v2"):
        raise ValueError(f"api must be 'v1' or 'v2' (got {api!r})")
    return RunningEmulator(
        api, seed if seed is not None else default_seed(), EmulatorOptions(**options)
    )


def measure_rps(emulator: RunningEmulator, calls: int = 2000, *, client: str = "httpx") -> float:
    """Requests per second of a trivial authenticated read (``user/get`` of the first member)
    over one keep-alive connection: the test bed's ceiling other figures are read against.

    ``client="httpx"`` measures what a Python httpx client sees (client overhead included);
    ``client="socket"`` writes pre-built requests to a raw socket: the server side alone.
    """
    seed = emulator.seed
    first = seed["users"][0]["userid"]
    with httpx.Client(base_url=emulator.base_url, timeout=30.0) as http:
        if emulator.api == "v2":
            token = http.get(
                "/cgi-bin/gettoken",
                params={
                    "corpid": seed["corp_id"],
                    "corpsecret": seed["secrets"]["contacts"],
                },
            ).json()["access_token"]
            path, params, headers = (
                "/cgi-bin/user/get",
                {"access_token": token, "userid": first},
                {},
            )
        else:
            client_id, secret = next(iter(seed["v1_clients"].items()))
            token = http.post(
                "/cgi-bin/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret,
                },
            ).json()["access_token"]
            path, params, headers = (
                "/openapi/user/get",
                {"alias": first},
                {"Authorization": f"Bearer {token}"},
            )
        if client == "socket":
            return _socket_rps(emulator, path, params, headers, calls)
        started = time.perf_counter()
        for _ in range(calls):
            http.get(path, params=params, headers=headers).raise_for_status()
        return calls / (time.perf_counter() - started)


def _socket_rps(
    emulator: RunningEmulator,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    calls: int,
) -> float:
    target = f"{path}?{urlencode(params)}"
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: 127.0.0.1:{emulator.port}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=30) as sock:
        started = time.perf_counter()
        buffer = b""
        for _ in range(calls):
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += _recv(sock)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
            if not head.startswith(b"HTTP/1.1 200") or match is None:
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            length = int(match.group(1))
            while len(buffer) < length:
                buffer += _recv(sock)
            buffer = buffer[length:]
        return calls / (time.perf_counter() - started)


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise RuntimeError("the emulator closed the connection")
    return chunk
