"""A faithful local Tencent Exmail (both API generations) for tests, the demo and users.

``create_app(api, seed, options)`` builds the Starlette app; ``server.start_in_thread`` and
``server.serve`` run it; ``harness.start_emulator`` starts one on loopback with its control
API and returns a handle to steer it. An independent reading of the protocol: nothing here
imports the client (``syncengine.providers``).
"""

from __future__ import annotations

from syncengine.emulator.app import create_app
from syncengine.emulator.harness import RunningEmulator, measure_rps, start_emulator
from syncengine.emulator.model import SeedError
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.seed import config_snippet, default_seed, load_seed_file
from syncengine.emulator.server import RunningServer, serve, start_in_thread

__all__ = [
    "EmulatorOptions",
    "RunningEmulator",
    "RunningServer",
    "SeedError",
    "config_snippet",
    "create_app",
    "default_seed",
    "load_seed_file",
    "measure_rps",
    "serve",
    "start_emulator",
    "start_in_thread",
]
