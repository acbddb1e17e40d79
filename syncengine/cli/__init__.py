"""The ``syncengine`` command line: parse, call :mod:`syncengine.service`, render, exit.

Thin on purpose: no query, no HTTP request and no business rule lives here. Every
:class:`~syncengine.errors.SyncEngineError` becomes a one-paragraph message on stderr and its
documented exit code, never a traceback (``--debug`` shows one for bug reports). The group and
what the commands share are in :mod:`.app`; the commands, one module per job, register
themselves on import.
"""

from __future__ import annotations

from syncengine.cli import admin, mail, nightly, planning, review, serving
from syncengine.cli.app import main

__all__ = ["admin", "mail", "main", "nightly", "planning", "review", "serving"]
