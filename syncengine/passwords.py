"""Delivering generated initial passwords through the file channel (``delivery = "file"``).

The executor hands each password over *before* the create call; this channel appends it as one
JSON line to a file only its owner may read (mode 0600), flushed and fsynced, so a run killed
right after the call has not lost the only copy. When a create turns out not to use the
password (it failed, or the mailbox existed), a ``void`` line says so. The password is never
logged; the file is the admin's to hand over and then delete.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncengine.errors import ConfigError
from syncengine.executor import PasswordDelivery


class FilePasswordDelivery:
    """A :class:`~syncengine.executor.PasswordSink` writing JSON lines to ``path``."""

    def __init__(self, path: Path, *, run_id: int | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.delivered = 0

    def __repr__(self) -> str:
        return f"FilePasswordDelivery(path={str(self.path)!r})"

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the password file: {exc.strerror}",
                where=str(self.path),
                hint='set [passwords] path to a writable file, or delivery = "none"',
            ) from None
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # never leave it readable by others
        return fd

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            os.write(self._fd, line)
            os.fsync(self._fd)  # on disk before the create call is made

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def deliver(self, delivery: PasswordDelivery) -> None:
        self._append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run": self.run_id,
                "employee_id": delivery.employee_id,
                "email": delivery.email,
                "password": delivery.password,
                "change_at_login": delivery.change_at_login,
            }
        )
        self.delivered += 1

    def void(self, employee_id: str, email: str, reason: str) -> None:
        self._append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run": self.run_id,
                "employee_id": employee_id,
                "email": email,
                "void": True,
                "reason": reason,
            }
        )
