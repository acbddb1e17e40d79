"""Applies a :class:`~syncengine.plan.Plan` through a ``MailboxProvider``, safely.

Not pure (it calls Exmail, threads and sleeps), but it knows no database, no HTTP and no
concrete provider: it takes a :class:`~syncengine.providers.base.MailboxProvider`, an
:class:`ExecutionSink` (checkpoints, audit rows, identity links) and a :class:`PasswordSink`
(the channel that hands initial passwords over), all passed in by ``service.py``.

What it guarantees, and why each piece is there:

* **Order.** An action runs only when every action in its ``depends_on`` is done. A failed
  action fails nothing else but its dependants, which are marked ``skipped`` with the reason;
  independent actions go on. Up to ``concurrency`` Exmail calls are made at once: worker
  threads run the actions, and on Gen 2 over libcurl one lane thread sends the single-call
  writes (:mod:`syncengine.executor.lane`), handing anything but a success to a worker.
* **Pace.** Not here: the provider paces every request it sends with the process's one
  :class:`~syncengine.callpolicy.CallPolicy`, so reads and writes share one cap.
* **Retries.** Only :class:`~syncengine.errors.RetriableProviderError` is retried, with
  exponential backoff and jitter (:class:`~syncengine.callpolicy.RetryPolicy`), at most
  ``max_attempts`` tries of the write and at most ``max_retry_seconds`` of backoff per action,
  within the run's retry budget. ``sleep`` and ``clock`` are injectable so tests
  never wait for real backoff.
* **Never twice.** A retriable error on a write means "it may have happened". Before trying the
  write again the executor looks at the live object (``get_user``, the department listing) and
  counts the action done when it already is what was asked. A create answered "already exists"
  is done only when the existing object matches the request, else the action fails and says
  which fields differ. An action a killed run left ``running`` is checked the same way before
  it is redone (``swap_primary`` done twice would undo itself).
* **New departments.** A department created moments ago may not yet be visible to a member
  ADD/MOD (Gen 1 1310, Gen 2 60003: a reading no source rules out). An action that puts a
  member into a department this run created (or under one) waits for it with its own backoff
  (``visibility_backoff`` doubling, at most ``visibility_wait`` seconds) instead of failing;
  any other "not found" fails as before.
* **Checkpoints.** Every action goes ``pending → running → done / failed / skipped`` through
  the sink, and ``running`` is recorded before the first call is made, so a resumed run knows
  which actions to re-check. An outcome is queued, not waited for: the worker's next start
  checkpoint commits after it (or with it), and only then is the action settled (counted,
  its dependants made ready), so no dependant starts before its dependency's outcome is on
  disk.
* **Passwords.** Generated here with :mod:`secrets` for each created mailbox, handed to the
  :class:`PasswordSink` *before* the create call (so a run killed right after the call has not
  lost the only copy), sent to the provider, and then dropped. Never in an audit row, a log
  line, an exception message or the result.
* **Audit.** One :class:`AuditRecord` per API call (the attempt: call, result, errcode and text,
  duration) and one per action outcome (diffs old → new, attempts, total duration). The
  attempt rows of an action are handed to the sink together with its outcome row and written
  in one transaction with the outcome checkpoint and the action's identity-link change, so
  each finished action appears exactly once as done or failed, with its link or without.
* **Guard.** When a ``guard`` is given (:mod:`syncengine.guard`, the current policy), each
  action is re-checked right before its first call; one it forbids makes no call, gets one
  ``refused`` audit row and fails (so its dependants are skipped).
"""

from __future__ import annotations

from syncengine.executor.core import Executor
from syncengine.executor.handlers import HANDLERS
from syncengine.executor.model import (
    FINAL,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PASSWORD_SYMBOLS,
    ActionOutcome,
    AuditRecord,
    DepartmentExists,
    ExecutionResult,
    ExecutionSink,
    ExecutorSettings,
    LinkChange,
    NoPasswordDelivery,
    PasswordDelivery,
    PasswordSink,
    Status,
    action_diffs,
    action_email,
    generate_password,
    is_retriable,
    mailbox_differences,
    update_differences,
)

__all__ = [
    "FINAL",
    "HANDLERS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PASSWORD_SYMBOLS",
    "ActionOutcome",
    "AuditRecord",
    "DepartmentExists",
    "ExecutionResult",
    "ExecutionSink",
    "Executor",
    "ExecutorSettings",
    "LinkChange",
    "NoPasswordDelivery",
    "PasswordDelivery",
    "PasswordSink",
    "Status",
    "action_diffs",
    "action_email",
    "generate_password",
    "is_retriable",
    "mailbox_differences",
    "update_differences",
]
