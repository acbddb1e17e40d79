"""The ``syncengine emulator`` command: a local Exmail in the foreground."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncengine import emulator as exmail_emulator
from syncengine.errors import (
    ConfigError,
)

log = logging.getLogger(__name__)

# --- the Exmail emulator (issue 2) ------------------------------------------------------


@dataclass(frozen=True)
class EmulatorStart:
    """What the emulator command shows once the server is bound."""

    base_url: str
    api: str
    control: bool
    state_file: str | None
    config_snippet: str | None  # only for the built-in demo seed (public credentials)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_emulator(
    *,
    api: str,
    host: str,
    port: int,
    seed_path: str | None,
    state_path: str | None,
    options: dict[str, Any],
    control: bool,
    control_anywhere: bool,
    on_ready: Callable[[EmulatorStart], None],
) -> None:
    """Serve the Exmail emulator in the foreground until interrupted.

    ``options`` are EmulatorOptions fields (latency_ms, fail_rate, ...). The control API lets
    anyone who reaches it replace the directory, so it is refused on a non-loopback host
    unless ``control_anywhere`` says the operator means it.
    """
    if control and not _is_loopback(host) and not control_anywhere:
        raise ConfigError(
            f"the control API would be reachable on {host}",
            where="--control",
            hint="bind to 127.0.0.1, drop --control, or add --control-anywhere",
        )
    seed = None
    if seed_path is not None:
        try:
            seed = exmail_emulator.load_seed_file(seed_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the seed: {exc}",
                where=seed_path,
                hint="give a JSON or TOML seed (see samples/emulator-seed.json)",
            )
    try:
        opts = exmail_emulator.EmulatorOptions(control=control, state_file=state_path, **options)
        app = exmail_emulator.create_app(api, seed, opts)  # type: ignore[arg-type]
    except exmail_emulator.SeedError as exc:
        raise ConfigError(
            str(exc),
            where=seed_path or state_path,
            hint="fix the entry named, or delete the state file",
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where="emulator options")

    def ready(base_url: str) -> None:
        snippet = (
            exmail_emulator.config_snippet(exmail_emulator.default_seed(), base_url, api)
            if seed is None and state_path is None
            else None
        )
        on_ready(EmulatorStart(base_url, api, control, state_path, snippet))

    try:
        exmail_emulator.serve(app, host, port, on_ready=ready)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            where="--host/--port",
            hint="choose another port (0 = any free one)",
        )
