"""The lane: one thread driving every single-call write of a run through libcurl's multi
interface (:class:`~syncengine.providers.curl_multi.MultiPoster`).

Why: at 64 calls at once, 64 threads each blocked in one request spend the process's CPU
handing the GIL around. The lane takes the ready actions whose write is one request (a
mailbox created enabled, a user updated: the bulk of a big apply), and for each batch:

1. asks the guard, builds the request (a new mailbox's password is generated then), and
   queues the batch's start checkpoints (one transaction through the sink's group writer);
2. hands the batch's passwords to their channel (one fsync for the batch, on a thread of
   its own, while the checkpoints commit);
3. sends an action's request only once its start checkpoint is committed and its password is
   on disk (intent recorded before the call, as on the threaded path), at most
   ``concurrency`` requests in flight across the lane and the workers (the same slots);
4. on a success, queues the outcome (audit rows, checkpoint, identity link: one transaction
   with the other outcomes of the moment) and settles the action once it is committed.

Anything other than a success is not the lane's to judge: the action, its start committed
and its first answer in (``ActionRun.answered``), goes to a worker thread, which carries on
exactly as if it had made that call itself: retries with the call policy's waits and look
before redoing, the "already exists" and "not found" checks, the waits for new departments,
voiding the password. The lane gives back an action it has not started (the guard refuses
it, or its write is not one request after all); the workers run it from the start. After a
stop the lane starts nothing more, sends what it has started, and carries on an answered
action itself (the workers may be gone).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from syncengine.domain import Mailbox, UserUpdate
from syncengine.errors import ProviderError, SyncEngineError
from syncengine.executor.board import Board, Handoff
from syncengine.executor.handlers import HANDLERS
from syncengine.executor.model import ActionRun, PasswordDelivery, PasswordSink, Status
from syncengine.executor.steps import _Held, call_record, failure_fields
from syncengine.plan import Action

if TYPE_CHECKING:
    from syncengine.executor.core import Executor
    from syncengine.providers.curl_multi import DirectPost, MultiPoster

log = logging.getLogger(__name__)

LANE_WAIT = 0.05
"""Seconds the lane waits at most before it looks for new work again."""
WRITER_WAIT = 0.002
"""... and at most while a checkpoint it waits for is being committed."""


@runtime_checkable
class DirectWrites(Protocol):
    """A provider whose single-call writes can go through a :class:`MultiPoster`."""

    def multi_poster(self) -> MultiPoster | None: ...

    def create_user_post(
        self, mailbox: Mailbox, *, password: str, change_password_at_login: bool = True
    ) -> DirectPost | None: ...

    def update_user_post(self, email: str, update: UserUpdate) -> DirectPost | None: ...


def deliver_all(passwords: PasswordSink, deliveries: Sequence[PasswordDelivery]) -> None:
    """Hand the passwords over, durably when this returns (one sync when the channel can)."""
    many = getattr(passwords, "deliver_many", None)
    if many is not None:
        many(deliveries)
        return
    for delivery in deliveries:
        passwords.deliver(delivery)


class _Started:
    """A lane action between its start and its answer."""

    __slots__ = ("attempts", "call", "future", "handed", "index", "post", "run", "started",
                 "waits")  # fmt: skip

    def __init__(self, run: ActionRun, call: str, post: DirectPost, started: float) -> None:
        self.run = run
        self.call = call
        self.post = post
        self.started = started
        self.attempts = 0
        self.future: Future[Any] | None = None  # the start checkpoint (or its batch's)
        self.index: int | None = None  # its place in the batch's answer
        self.handed: Future[None] | None = None  # the password, handed over
        self.waits = 1  # of the two above, those not done yet


class Lane:
    """One run's lane (see the module doc); :meth:`run` is the lane thread's body."""

    def __init__(self, ex: Executor, board: Board, poster: MultiPoster) -> None:
        self._ex = ex
        self._board = board
        self._poster = poster
        self._cap = 2 * ex.settings.concurrency  # actions between take and answer
        self._active = 0  # taken and not yet settled, handed on or given back
        self._starting: dict[str, _Started] = {}
        self._committed: deque[str] = deque()  # appended by the writer thread
        self._sendable: deque[_Started] = deque()
        self._outcomes: deque[_Held] = deque()  # appended by the writer thread
        self._holding = 0  # outcomes queued, not yet settled
        self._handing = ThreadPoolExecutor(1, thread_name_prefix="apply-passwords")

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self._board.crash(exc)
            raise
        finally:
            self._poster.close()
            self._handing.shutdown()

    def _loop(self) -> None:
        board, poster = self._board, self._poster
        while True:
            room = self._cap - self._active
            if room > 0:
                taken = board.take_lane(room)
                if taken:
                    self._begin(taken)
            self._send()
            if self._active == 0:
                if not board.lane_wait(LANE_WAIT):
                    return
                continue
            soon = bool(self._starting or self._sendable) or self._holding > 0
            poster.wait(WRITER_WAIT if soon else LANE_WAIT)
            answers = poster.answers()
            if answers:
                # The freed slots' next requests go on the wire before the answers are
                # judged and recorded: an answer's Python work never delays a call.
                for _ in answers:
                    self._ex._slots.release()
                self._drain_starts()
                self._send()
                poster.drive()
            for tag, result, seconds in answers:
                assert isinstance(tag, _Started)
                self._answered(tag, result, seconds)
            self._drain_starts()
            self._send()
            self._drain_outcomes()

    # --- starting -----------------------------------------------------------------------

    def _begin(self, taken: list[Action]) -> None:
        ex, board = self._ex, self._board
        begun: list[_Started] = []
        for a in taken:
            if ex._guard is not None and ex._guard(a) is not None:
                board.give_back(a)  # a worker refuses it, as it refuses any action
                continue
            run = ActionRun(a, check_first=False)
            try:
                made = HANDLERS[a.kind].post(ex, run)
            except SyncEngineError:
                made = None  # e.g. a department to look up that is not there: the worker's
            if made is None:
                board.give_back(a)
                continue
            self._active += 1
            begun.append(_Started(run, made[0], made[1], ex._clock()))
        if not begun:
            return
        keys = [st.run.action.key for st in begun]
        for key, st in zip(keys, begun, strict=True):
            self._starting[key] = st
        many = getattr(ex.sink, "start_actions_later", None)
        if many is not None:  # the batch's checkpoints as one write
            batch: Future[list[int]] = many([st.run.action for st in begun], resuming=False)
            for i, st in enumerate(begun):
                st.future, st.index = batch, i
            batch.add_done_callback(self._on_commit(keys))
        else:
            for key, st in zip(keys, begun, strict=True):
                st.future = ex.sink.start_action_later(st.run.action, resuming=False)
                st.future.add_done_callback(self._on_commit([key]))
        deliveries = [st.run.password for st in begun if st.run.password is not None]
        if deliveries:  # on their own thread: a sync must not hold up the answers
            handed = self._handing.submit(deliver_all, ex.passwords, deliveries)
            waiting = []
            for st in begun:
                if st.run.password is not None:
                    st.handed = handed
                    st.waits += 1
                    waiting.append(st.run.action.key)
            handed.add_done_callback(self._on_commit(waiting))

    def _on_commit(self, keys: list[str]) -> Callable[[Future[Any]], None]:
        return lambda _f: self._committed.extend(keys)

    def _send(self) -> None:
        slots = self._ex._slots
        while self._sendable and slots.acquire(blocking=False):
            st = self._sendable.popleft()
            try:
                self._poster.add(st.post, st)
            except ProviderError as exc:  # the token could not be fetched: nothing sent
                slots.release()
                self._answered(st, exc, 0.0)

    # --- ending -------------------------------------------------------------------------

    def _answered(self, st: _Started, result: Any, seconds: float) -> None:
        """A request answered (its slot released already): done, or a worker's to go on."""
        run = st.run
        run.calls += 1
        if isinstance(result, ProviderError):
            outcome, errcode, errmsg = failure_fields(result)
            run.records.append(call_record(run, st.call, outcome, errcode, errmsg, seconds))
            run.answered = result
            if self._board.hand_on(Handoff(run, st.started, st.attempts)):
                self._active -= 1
                return
            self._hold(self._ex._carry_on(run, st.started, st.attempts))
            return
        run.records.append(call_record(run, st.call, "ok", None, None, seconds))
        run.tries = 1
        self._hold(self._ex._conclude(run, Status.DONE, run.note, st.started, st.attempts))

    def _hold(self, held: _Held) -> None:
        self._holding += 1
        held.done.add_done_callback(lambda _f: self._outcomes.append(held))

    def _drain_starts(self) -> None:
        """Start checkpoints committed and passwords on disk: their requests may go."""
        board = self._board
        while self._committed:
            key = self._committed.popleft()
            st = self._starting[key]
            st.waits -= 1
            if st.waits:
                continue  # its password or its checkpoint is not durable yet
            del self._starting[key]
            assert st.future is not None
            try:
                done = st.future.result()
                st.attempts = done if st.index is None else done[st.index]
                if st.handed is not None:
                    st.handed.result()  # no call without its password on disk
            except BaseException as exc:  # the sink failed: the action stays running
                self._active -= 1
                board.failed(exc)
                continue
            self._sendable.append(st)

    def _drain_outcomes(self) -> None:
        """Outcomes committed: their actions are settled (their dependants may start)."""
        board = self._board
        while self._outcomes:
            held = self._outcomes.popleft()
            self._active -= 1
            self._holding -= 1
            try:
                outcome = self._ex._complete(held)
            except BaseException as exc:
                board.failed(exc)
                continue
            board.settled(held.action, outcome)
