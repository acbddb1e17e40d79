"""Secrets named by the configuration: ``env:NAME``, ``file:PATH`` or (discouraged) a literal.

A secret is resolved once, when the config is loaded, into a :class:`pydantic.SecretStr`, whose
``repr`` and ``str`` print ``**********``: a config object may be logged or put in an error
message without leaking anything. Only the code that sends the secret calls
``get_secret_value()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo


def resolve_secret(value: Any, base_dir: Path | None = None) -> SecretStr:
    """Turn ``env:NAME`` / ``file:PATH`` / a literal into a SecretStr, or raise ValueError.

    The ValueError text names the variable or file but never the secret itself; pydantic adds
    the config key.
    """
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string: 'env:VARIABLE', 'file:PATH' or the secret itself")
    if value.startswith("env:"):
        name = value[4:].strip()
        found = os.environ.get(name)
        if not found:
            raise ValueError(f"environment variable {name} is not set or is empty")
        return SecretStr(found)
    if value.startswith("file:"):
        path = Path(value[5:].strip()).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"secret file {path} is empty")
        return SecretStr(text)
    if not value:
        raise ValueError("is empty")
    return SecretStr(value)


def _validate(value: Any, info: ValidationInfo) -> SecretStr:
    base = (info.context or {}).get("base_dir") if info.context else None
    return resolve_secret(value, base)


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""A config field type: accepts ``env:NAME``, ``file:PATH`` or a literal secret."""
