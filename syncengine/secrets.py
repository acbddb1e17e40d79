"""Secrets named by the configuration: ``env:NAME``, ``file:PATH`` or (discouraged) a literal.

A secret is a :class:`pydantic.SecretStr`, whose ``repr`` and ``str`` print ``**********``: a
config object may be logged or put in an error message without leaking anything. Only the code
that sends the secret calls ``get_secret_value()``.

Loading the config checks only the *form* of a reference; the variable or file is read when
the secret is first used (:class:`DeferredSecret`). So a command that never talks to Exmail or
receives hooks (``audit``, ``db``, ``show``, ``events``) needs none of their secrets, and a
missing one is reported by the command that needs it, naming the config key, the variable or
file, and the config file. Commands that will need a secret before doing any work check them
up front with :func:`check_secrets`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, SecretStr, ValidationInfo

from syncengine.errors import ConfigError


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


class DeferredSecret(SecretStr):
    """A secret whose ``env:``/``file:`` reference is read on first use, then kept.

    ``key`` (``hooks.secret``) and ``where`` (the config file) are filled in after the config
    is validated, so that the error of a missing variable names both."""

    def __init__(self, reference: str, base_dir: Path | None) -> None:
        super().__init__("")
        self._reference = reference
        self._base_dir = base_dir
        self._resolved: SecretStr | None = None
        self.key = ""
        self.where = "config"

    def _display(self) -> str:
        return "**********"

    @property
    def reference(self) -> str:
        """``env:NAME`` or ``file:PATH``: where the value comes from (not secret itself)."""
        return self._reference

    def get_secret_value(self) -> str:
        if self._resolved is None:
            try:
                self._resolved = resolve_secret(self._reference, self._base_dir)
            except ValueError as exc:
                raise ConfigError(
                    f"{self.key or 'secret'}: {exc}",
                    where=self.where,
                    hint="this command needs it; set it in the environment (or the file) "
                    "the config names",
                ) from None
        return self._resolved.get_secret_value()

    def available(self) -> bool:
        """Whether the value can be read now (without raising)."""
        try:
            self.get_secret_value()
        except ConfigError:
            return False
        return True


def known_value(secret: SecretStr) -> str | None:
    """The value of a secret, or None when it is a reference that cannot be read now (used to
    scrub outgoing text: a secret nobody could read cannot leak)."""
    if isinstance(secret, DeferredSecret) and not secret.available():
        return None
    return secret.get_secret_value()


def _validate(value: Any, info: ValidationInfo) -> SecretStr:
    base = (info.context or {}).get("base_dir") if info.context else None
    if isinstance(value, str) and value.startswith(("env:", "file:")):
        if not value.split(":", 1)[1].strip():
            raise ValueError(f"{value!r} names no variable or file")
        return DeferredSecret(value.strip(), base)
    return resolve_secret(value, base)


def label_secrets(model: BaseModel, where: str, prefix: str = "") -> list[DeferredSecret]:
    """Give every deferred secret of a validated config its key and file, and list them."""
    found: list[DeferredSecret] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, DeferredSecret):
            value.key, value.where = key, where
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{key}.{name}" if key else name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    walk(model, prefix)
    return found


def check_secrets(model: BaseModel, where: str, tables: tuple[str, ...]) -> None:
    """Read now every secret under the given top-level tables (``exmail``, ``source``...), so
    that a command fails before doing any work, naming every secret it could not read."""
    problems: list[str] = []
    for secret in label_secrets(model, where):
        if secret.key.split(".", 1)[0].split("[", 1)[0] in tables:
            try:
                secret.get_secret_value()
            except ConfigError as exc:
                problems.append(exc.message)
    if problems:
        raise ConfigError("; ".join(problems), where=where,
                          hint="this command needs these secrets: set them in the environment "
                          "(or the files) the config names")  # fmt: skip


Secret = Annotated[SecretStr, BeforeValidator(_validate)]
"""A config field type: accepts ``env:NAME``, ``file:PATH`` or a literal secret."""
