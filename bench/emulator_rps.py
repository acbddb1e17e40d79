"""Emulator throughput: requests per second of a trivial authenticated call, per generation.

Also times seeding a large directory and one whole-directory Gen 2 ``user/list``, so other
benchmarks (bench/read_state.py) can be read against the test bed's own limits.

    .venv/bin/python bench/emulator_rps.py [--calls 3000] [--users 10000]
"""

from __future__ import annotations

import argparse
import time

import httpx

from syncengine.emulator import measure_rps, start_emulator
from syncengine.emulator.seed import big_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--departments", type=int, default=200)
    args = parser.parse_args()

    for api in ("v2", "v1"):
        emu = start_emulator(api)
        try:
            measure_rps(emu, calls=200)  # warm-up
            for client in ("httpx", "socket"):
                rps = measure_rps(emu, calls=args.calls, client=client)
                print(
                    f"{api}: trivial call (user/get), one keep-alive connection, "
                    f"{client} client: {rps:,.0f} requests/s over {args.calls:,} calls"
                )
        finally:
            emu.close()

    seed = big_seed(args.users, args.departments)
    started = time.perf_counter()
    emu = start_emulator("v2", seed)
    print(
        f"seeding {args.users:,} users in {args.departments} departments: "
        f"{time.perf_counter() - started:.2f} s"
    )
    try:
        with httpx.Client(base_url=emu.base_url, timeout=120) as http:
            token = http.get(
                "/cgi-bin/gettoken",
                params={
                    "corpid": seed["corp_id"],
                    "corpsecret": seed["secrets"]["contacts"],
                },
            ).json()["access_token"]
            started = time.perf_counter()
            answer = http.get(
                "/cgi-bin/user/list",
                params={"access_token": token, "department_id": 1, "fetch_child": 1},
            ).json()
            seconds = time.perf_counter() - started
        print(
            f"v2 user/list of the whole directory ({len(answer['userlist']):,} users): "
            f"{seconds:.2f} s"
        )
    finally:
        emu.close()


if __name__ == "__main__":
    main()
