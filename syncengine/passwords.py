"""Delivering generated initial passwords through the file channel (``delivery = "file"``).

The executor hands each password over *before* the create call; this channel appends it as one
JSON line to a file only its owner may read (mode 0600), flushed and fsynced, so a run killed
right after the call has not lost the only copy. When a create turns out not to use the
password (it failed, or the mailbox existed), a ``void`` line says so. When a create whose
outcome was unknown (a run killed after the call) is made again by a later run, a new password
is generated: a ``superseded`` line first says that the earlier lines for that address are not
in use, and the new line carries ``"supersedes": N``, so exactly one line per mailbox is
current. A password also sent to the new hire (``[passwords.handover]``) gets a
``handed_over`` line. The password is never logged; the file is the admin's to hand over and
then delete.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Sequence
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
        self._sync_lock = threading.Lock()  # one fsync at a time, covering every line so far
        self._written = 0  # lines written (under _lock)
        self._synced = 0  # lines known to be on disk (under _sync_lock)
        self._live: dict[str, int] | None = None  # address -> password lines in use
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

    def _read_live(self) -> dict[str, int]:
        """Per address, the password lines of earlier runs not voided or superseded."""
        live: dict[str, int] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return live  # no file yet (or unreadable: then _open reports it)
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            email = str(line.get("email", "")).lower() if isinstance(line, dict) else ""
            if not email:
                continue
            if "password" in line:
                live[email] = live.get(email, 0) + 1
            elif line.get("void") or line.get("superseded"):
                live.pop(email, None)
        return live

    def _append(self, record: dict[str, Any]) -> None:
        self._append_all([record])

    def _append_all(self, records: list[dict[str, Any]]) -> None:
        lines = b"".join(
            (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
            for r in records
        )
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            os.write(self._fd, lines)
            self._written += 1
            mine = self._written
        # On disk before the create call is made. Group commit: one fsync covers every line
        # written before it started, so threads arriving while it runs share the next one
        # instead of queueing one fsync each behind the lock.
        with self._sync_lock:
            if self._synced >= mine:
                return
            with self._lock:
                upto, fd = self._written, self._fd
            if fd is not None:
                os.fsync(fd)
            self._synced = upto

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def deliver(self, delivery: PasswordDelivery) -> None:
        self.deliver_many([delivery])

    def deliver_many(self, deliveries: Sequence[PasswordDelivery]) -> None:
        """:meth:`deliver` for each, written with one sync."""
        records: list[dict[str, Any]] = []
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for delivery in deliveries:
            with self._lock:
                if self._live is None:
                    self._live = self._read_live()
                earlier = self._live.pop(delivery.email.lower(), 0)
                self._live[delivery.email.lower()] = 1
            if earlier:
                records.append(
                    {
                        "at": now,
                        "run": self.run_id,
                        "employee_id": delivery.employee_id,
                        "email": delivery.email,
                        "superseded": True,
                        "reason": f"a new password was generated in run {self.run_id} (the "
                        "earlier create's outcome was unknown): the earlier line(s) are not in "
                        "use",
                    }
                )
            record: dict[str, Any] = {
                "at": now,
                "run": self.run_id,
                "employee_id": delivery.employee_id,
                "email": delivery.email,
                "password": delivery.password,
                "change_at_login": delivery.change_at_login,
            }
            if earlier:
                record["supersedes"] = earlier
            records.append(record)
        if records:
            self._append_all(records)
        self.delivered += len(deliveries)

    def handed_over(self, employee_id: str, email: str, channel: str) -> None:
        """The current password of ``email`` was also sent through ``channel``."""
        self._append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run": self.run_id,
                "employee_id": employee_id,
                "email": email,
                "handed_over": channel,
            }
        )

    def void(self, employee_id: str, email: str, reason: str) -> None:
        with self._lock:
            if self._live is not None:
                self._live.pop(email.lower(), None)
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
