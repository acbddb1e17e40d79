"""The engine's plan-signing key: a random secret in a file only its owner can read.

``plan`` signs every plan it makes (HMAC-SHA256 of the checksum, see :mod:`syncengine.plan`);
``apply`` refuses, before any write, a plan whose signature is missing or does not match. The
key never leaves this module: it is not logged, not put in plans, reports or audit rows.

Where the key lives: ``[review] key_file``, else ``plan-signing.key`` next to the SQLite
database file, else next to the config file. It is made on first use (32 random bytes, hex,
mode 0600, created exclusively so two processes cannot both write one); a key file that group
or others may read is refused, since whoever reads it can sign an edited plan.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from syncengine.config import Config
from syncengine.errors import ConfigError, PlanError
from syncengine.plan import Plan, signature_ok, signed
from syncengine.review_config import DEFAULT_KEY_FILE

KEY_BYTES = 32


def key_path(config: Config) -> Path:
    """Where this config's plan key lives (see the module doc)."""
    if config.review.key_file:
        return config.resolve_path(config.review.key_file)
    return config.beside_database(DEFAULT_KEY_FILE)


def _create(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # made concurrently by another process: read that one
    except OSError as exc:
        raise ConfigError(
            f"cannot create the plan-signing key: {exc.strerror or exc}",
            where=str(path),
            hint="set [review] key_file to a writable place",
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")


def plan_key(config: Config, *, create: bool = True) -> bytes:
    """The key, made on first use when ``create``; a loose or malformed file is an error."""
    path = key_path(config)
    if not path.exists():
        if not create:
            raise PlanError(
                "there is no plan-signing key yet, so no plan can be verified",
                where=str(path),
                hint="make a plan with 'syncengine plan' on this engine",
            )
        _create(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the plan-signing key: {exc}", where=str(path)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the plan-signing key may be read by others (mode {stat.S_IMODE(mode):04o}); "
            "whoever reads it can sign an edited plan",
            where=str(path),
            hint=f"chmod 0600 {path} (and make new plans if others may have read it)",
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            "the plan-signing key file does not hold a key (expected 64 hex characters)",
            where=str(path),
            hint="delete the file to make a new key, then make new plans",
        )
    return key


def sign_plan(plan: Plan, key: bytes) -> Plan:
    """The plan signed with the engine's key."""
    return signed(plan, key)


def verify_plan(plan: Plan, key: bytes, *, source: str) -> None:
    """Refuse a plan this engine did not sign as it is (an edited or foreign file)."""
    if not plan.signature:
        raise PlanError(
            "the plan has no signature: this engine did not make it as it is (it was edited, "
            "or made by an older version or another engine)",
            where=source,
            hint="make a new plan with 'syncengine plan' and review it again",
        )
    if not signature_ok(plan, key):
        raise PlanError(
            f"the plan's signature does not match its content (checksum {plan.checksum[:12]}): "
            "the file was edited after the engine made it, or another engine signed it",
            where=source,
            hint="make a new plan with 'syncengine plan' and review it again",
        )
