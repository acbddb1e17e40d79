"""Running the emulator app: in a background thread (tests, demo, benchmarks) or in the
foreground (``syncengine emulator``).

The socket is bound here, before uvicorn starts, so port 0 yields a known free port and a
restart can bind the same port again (SO_REUSEADDR).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from syncengine.emulator.runtime import Runtime
from syncengine.sockets import listening_socket

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class _QuietDrops(logging.Filter):
    """An injected dropped connection is the point, not an error worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


_QUIET_DROPS = _QuietDrops()


def _config(app: Starlette, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)  # idempotent: same object
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@dataclass
class RunningServer:
    """A uvicorn server in a daemon thread; ``stop()`` shuts it down and joins the thread."""

    app: Starlette
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return _url(self.host, self.port)

    def stop(self) -> None:
        runtime: Runtime = self.app.state.emulator
        runtime.closing = True
        runtime.notifier.wake_threadsafe()  # release long polls at once
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(STOP_TIMEOUT)


def start_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> RunningServer:
    """Serve ``app`` from a daemon thread; returns once the server accepts connections."""
    sock = listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, log_level))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the starting thread below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"emulator-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if failure or not thread.is_alive():
            raise RuntimeError(
                f"emulator failed to start on {host}:{bound_port}: "
                f"{failure[0] if failure else 'thread ended'}"
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"emulator did not start within {START_TIMEOUT} s")
        time.sleep(0.01)
    return RunningServer(app, host, bound_port, server, thread)


def serve(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "info",
) -> None:
    """Serve in the foreground until interrupted; ``on_ready`` gets the base URL once bound."""
    sock = listening_socket(host, port)
    try:
        if on_ready is not None:
            on_ready(_url(host, sock.getsockname()[1]))
        uvicorn.Server(_config(app, log_level)).run(sockets=[sock])
    finally:
        sock.close()
