#!/usr/bin/env python3
"""Sign and send one HR event to ``syncengine serve`` (Python standard library only).

    SYNCENGINE_HOOK_SECRET=... python3 send_hook.py http://127.0.0.1:8088/hooks/hr upsert.json

Prints the HTTP status and the receiver's answer (202 and the event's id when it was
stored), and exits 0 for a 2xx answer. The signature: ``X-Syncengine-Timestamp`` is the
current unix time in seconds, ``X-Syncengine-Signature`` is ``sha256=`` followed by the hex
HMAC-SHA256 of ``timestamp + "." + body`` under the shared secret. Copy :func:`send` into the
HR system's integration; any language with HMAC-SHA256 can do the same.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import time
import urllib.error
import urllib.request


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                   hashlib.sha256)  # fmt: skip
    return "sha256=" + mac.hexdigest()


def send(url: str, secret: str, body: bytes, *, timeout: float = 10.0) -> tuple[int, str]:
    """POST one event; returns (HTTP status, answer text). Errors are answers, not raises."""
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Syncengine-Timestamp": timestamp,
            "X-Syncengine-Signature": signature(secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: send_hook.py URL EVENT.json  (secret in SYNCENGINE_HOOK_SECRET)\n")
        return 2
    secret = os.environ.get("SYNCENGINE_HOOK_SECRET")
    if not secret:
        sys.stderr.write("set SYNCENGINE_HOOK_SECRET to the [hooks] secret\n")
        return 2
    with open(argv[2], "rb") as fh:
        body = fh.read()
    status, answer = send(argv[1], secret, body)
    sys.stdout.write(f"{status} {answer}\n")
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
