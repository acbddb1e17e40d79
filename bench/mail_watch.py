"""``mail watch`` for a long run against a hostile Gen 1 ``listen``: is each mail reported once?

Starts a Gen 1 emulator whose ``listen`` answers at once (no hold) and fails a share of calls
with 1002 (``--busy-rate``), delivers a mail every ``--every`` seconds to a random mailbox from a
thread, and runs the whole ``syncengine mail watch --timeout S`` command as a subprocess with
default pacing. Prints the mails delivered, reported, duplicated and missing, the listen calls
made (per second) and the errors injected.

    .venv/bin/python -m bench.mail_watch [--seconds 600] [--listen-ver inline|separate]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from syncengine.emulator import start_emulator


def _toml(exmail: dict[str, object]) -> str:
    lines = ["[exmail]"]
    for key, value in exmail.items():
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between two mails")
    parser.add_argument("--busy-rate", type=float, default=0.05)
    parser.add_argument("--listen-ver", choices=["inline", "separate"], default="inline")
    parser.add_argument("--listen-hold", type=float, default=0.0)
    args = parser.parse_args()

    emu = start_emulator("v1", busy_rate=args.busy_rate, listen_hold=args.listen_hold,
                         listen_ver=args.listen_ver, rng_seed=7)  # fmt: skip
    users = [u["userid"] for u in emu.state()["users"] if u.get("enable", 1)]
    delivered: list[str] = []
    stop = threading.Event()

    def deliver() -> None:
        rng = random.Random(1)
        while not stop.wait(args.every):
            delivered.append(emu.deliver_mail(rng.choice(users), subject="bench")["MailId"])

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "syncengine.toml"
        config.write_text(_toml(emu.exmail_config()), encoding="utf-8")
        exe = str(Path(sys.executable).parent / "syncengine")
        started = time.monotonic()
        proc = subprocess.Popen(
            [exe, "--config", str(config), "mail", "watch", "--timeout", str(args.seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        sender = threading.Thread(target=deliver, daemon=True)
        sender.start()
        out, err = proc.communicate()
        elapsed = time.monotonic() - started
        stop.set()
        sender.join()
    calls = emu.calls()
    emu.close()
    reported = [json.loads(line)["mail_id"] for line in out.splitlines() if line.strip()]
    counts = Counter(reported)
    # A mail delivered in the last moments may arrive after the watch ended: not "missing".
    tail = max(0, len(delivered) - 2)
    missing = [m for m in delivered[:tail] if m not in counts]
    listens = [c for c in calls if c["endpoint"] == "/openapi/listen"]
    errors = sum(1 for c in listens if c["errcode"] == 1002)
    print(f"mail watch, Gen 1, listen_ver={args.listen_ver}, listen hold {args.listen_hold} s, "
          f"busy rate {args.busy_rate:.0%}: ran {elapsed:.0f} s "
          f"(exit {proc.returncode})")  # fmt: skip
    print(f"  mails delivered {len(delivered)}, reported {len(reported)}, "
          f"distinct {len(counts)}, duplicates {sum(n - 1 for n in counts.values())}, "
          f"missing {len(missing)}")  # fmt: skip
    print(
        f"  listen calls {len(listens)} ({len(listens) / elapsed:.2f}/s), 1002 answers "
        f"{errors}, token calls {sum(1 for c in calls if c['endpoint'] == '/cgi-bin/token')}"
    )
    if proc.returncode != 0:
        print("  stderr:", err.strip()[-500:])


if __name__ == "__main__":
    main()
