"""Benchmark: read a whole directory (10,000 members in 200 departments) through each API
generation, against the emulator running in this process on loopback.

Prints, per generation: calls made (from the emulator's call log, by endpoint), seconds and
members/s; then the emulator's own rate for a trivial call (Gen 2 ``user/get`` in a tight loop
over one keep-alive connection) so the figures can be read against the test bed's limit.
Gen 1 has no list call with member fields, so its read is one ``user/get`` per member and is
bounded by that rate divided among ``read_concurrency`` workers.

    .venv/bin/python bench/read_state.py [--users 10000] [--departments 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import httpx

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.app import create_app
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.seed import DEMO_CORP_ID, DEMO_SECRETS, DEMO_V1_SECRET, big_seed
from syncengine.emulator.server import start_in_thread


def exmail_table(api: str, base_url: str, concurrency: int) -> dict[str, Any]:
    common = {
        "api": api,
        "base_url": base_url,
        "read_concurrency": concurrency,
        "sso_url": base_url + "/cgi-bin/login",
        "timeout": 60,
    }
    if api == "v2":
        return {**common, "corp_id": DEMO_CORP_ID, "secrets": dict(DEMO_SECRETS)}
    return {**common, "client_id": "admin@example.com", "client_secret": DEMO_V1_SECRET}


def read_through(api: str, users: int, departments: int, concurrency: int) -> None:
    app = create_app(api, big_seed(users, departments), EmulatorOptions())  # type: ignore[arg-type]
    server = start_in_thread(app)
    try:
        config = parse_config({"exmail": exmail_table(api, server.base_url, concurrency),
                               "apply": {"rate_per_second": 0}})  # fmt: skip
        provider = service.build_provider(config)
        try:
            started = time.perf_counter()
            state = provider.read_state()
            seconds = time.perf_counter() - started
        finally:
            provider.close()
        log = app.state.emulator.calls_since(0)
        counts = dict(sorted(log["counts"].items(), key=lambda kv: -kv[1]))
        total = sum(counts.values())
        n = len(state.mailboxes)
        print(
            f"{api}: read {n} members, {len(state.parties)} departments "
            f"in {seconds:.2f} s = {n / seconds:,.0f} members/s "
            f"(read_concurrency {concurrency})"
        )
        print(f"{api}: {total} calls = {total / seconds:,.0f} calls/s; by endpoint: {counts}")
    finally:
        server.stop()


def trivial_rate(seconds: float = 3.0) -> None:
    """Gen 2 user/get of one member, one keep-alive connection, as fast as it answers."""
    app = create_app("v2", None, EmulatorOptions())
    server = start_in_thread(app)
    try:
        with httpx.Client(base_url=server.base_url + "/cgi-bin/", timeout=10) as client:
            token = client.get(
                "gettoken", params={"corpid": DEMO_CORP_ID, "corpsecret": DEMO_SECRETS["contacts"]}
            ).json()["access_token"]
            params = {"access_token": token, "userid": "zhangsan@example.com"}
            count = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                response = client.get("user/get", params=params)
                if response.json()["errcode"] != 0:
                    raise SystemExit(f"user/get failed: {response.text}")
                count += 1
            elapsed = time.perf_counter() - started
        print(
            f"emulator: Gen 2 user/get, one keep-alive connection: {count} calls in "
            f"{elapsed:.2f} s = {count / elapsed:,.0f} requests/s"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--api", choices=["v1", "v2", "both"], default="both")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; emulator and client share this process (one GIL)")
    for api in ("v2", "v1") if args.api == "both" else (args.api,):
        read_through(api, args.users, args.departments, args.concurrency)
    trivial_rate()


if __name__ == "__main__":
    main()
