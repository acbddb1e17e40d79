"""What ``plan`` pays for on import: the review module it imports hashes nothing."""

from __future__ import annotations

import subprocess
import sys

COUNT_HASHES = """
import argon2
calls = []
original = argon2.PasswordHasher.hash
def counting(self, *args, **kwargs):
    calls.append(1)
    return original(self, *args, **kwargs)
argon2.PasswordHasher.hash = counting
import syncengine.service.review_pages
print(len(calls))
"""


def test_importing_the_review_pages_computes_no_password_hash() -> None:
    # An argon2 hash is 0.2 s of CPU and 64 MiB; 'plan' imports these modules for its review
    # check and never signs anyone in. The pages make their dummy hash when they are built.
    done = subprocess.run([sys.executable, "-c", COUNT_HASHES], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == "0", done.stderr
