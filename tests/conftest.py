"""Shared test set-up. Fixtures live in ``tests/fixtures/``, one module per real part."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.emulator",
    "tests.fixtures.databases",
    "tests.fixtures.ldap",
]
