"""Shared test set-up. Fixtures live in ``tests/fixtures/``, one module per real part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.databases",
    "tests.fixtures.ldap",
]


@pytest.fixture(autouse=True)
def _fresh_process_tokens() -> Iterator[None]:
    """Each test starts with no token cached in the process, as a new process would.

    Providers share :data:`PROCESS_TOKENS` per (token URL, credential). Every emulator has the
    same demo credentials and a random loopback port, so an emulator given the port of an
    earlier test's emulator would be sent that emulator's token: it refuses it, and the call
    is resent with a fresh one (one extra call, which a test counting calls sees as a flake).
    """
    from syncengine.providers.tokens import PROCESS_TOKENS

    PROCESS_TOKENS.clear()
    yield
