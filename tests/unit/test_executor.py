"""The executor's pure helpers: token bucket, password generator, live-object comparison,
retry stop rule and settings validation (no I/O, fake clocks)."""

from __future__ import annotations

import string
import threading
from collections import Counter

import pytest
from tenacity import RetryCallState, Retrying

from syncengine.callpolicy import Pacer, _StopAfterBackoff
from syncengine.domain import Gender, Mailbox, UserUpdate
from syncengine.executor import (
    PASSWORD_SYMBOLS,
    ExecutorSettings,
    PasswordDelivery,
    generate_password,
    mailbox_differences,
    update_differences,
)
from syncengine.executor.model import _RandomBytes


class FakeTime:
    """A clock that only moves when someone sleeps (thread-safe)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


def test_bucket_allows_a_burst_then_paces() -> None:
    t = FakeTime()
    bucket = Pacer(10.0, burst=3, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        assert bucket.acquire() == 0.0
    waited = bucket.acquire()
    assert waited == pytest.approx(0.1)
    assert t.now == pytest.approx(100.1)
    for _ in range(10):
        bucket.acquire()
    assert t.now == pytest.approx(101.1)  # 10 more tokens at 10/s


def test_bucket_refills_up_to_burst_only() -> None:
    t = FakeTime()
    bucket = Pacer(5.0, burst=2, clock=t.clock, sleep=t.sleep)
    t.now += 60  # a long idle time saves at most `burst` tokens
    assert bucket.acquire() == 0.0 and bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.2)


def test_bucket_zero_rate_is_unlimited() -> None:
    t = FakeTime()
    bucket = Pacer(0.0, clock=t.clock, sleep=t.sleep)
    for _ in range(1000):
        bucket.acquire()
    assert t.slept == []


def test_bucket_is_thread_safe() -> None:
    t = FakeTime()
    bucket = Pacer(50.0, burst=5, clock=t.clock, sleep=t.sleep)
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(25)])
               for _ in range(8)]  # fmt: skip
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    # 200 tokens: 5 from the burst, 195 at 50/s -> the clock moved at least 3.9 s. Sleepers
    # may overlap (each sleeps its own share), so more is possible, never less.
    assert t.now - 100.0 >= 195 / 50 - 1e-6


def test_generated_passwords_are_strong_and_distinct() -> None:
    seen = set()
    for length in (4, 12, 16, 20, 40):
        for _ in range(200):
            pw = generate_password(length)
            assert len(pw) == min(32, max(12, length))
            assert any(c in string.ascii_uppercase for c in pw)
            assert any(c in string.ascii_lowercase for c in pw)
            assert any(c in string.digits for c in pw)
            assert any(c in PASSWORD_SYMBOLS for c in pw)
            assert set(pw) <= set(string.ascii_letters + string.digits + PASSWORD_SYMBOLS)
            seen.add(pw)
    assert len(seen) == 1000


def test_password_draws_are_uniform_without_modulo_bias() -> None:
    # Every byte value once: below(75) keeps the 225 bytes under 3 x 75 (each result exactly
    # three times) and drops 225..255 rather than folding them onto 0..30.
    draw = _RandomBytes(256, source=lambda n: bytes(range(256)))
    counts = Counter(draw.below(75) for _ in range(225))
    assert counts == dict.fromkeys(range(75), 3)
    assert draw.below(75) == 0  # the block was used up: read again, from byte 0
    full = _RandomBytes(256, source=lambda n: bytes(range(256)))
    assert [full.below(256) for _ in range(256)] == list(range(256))
    with pytest.raises(ValueError, match="between 1 and 256"):
        draw.below(257)


def test_password_delivery_repr_hides_the_password() -> None:
    d = PasswordDelivery("E1", "a@example.com", "S3cret!Passw0rd")
    assert "S3cret" not in repr(d) and "a@example.com" in repr(d)


def test_mailbox_differences_compare_lists_as_sets() -> None:
    live = Mailbox("a@example.com", "张三", "E1", ("研发/平台", "市场"), ("x@example.com",),
                   gender=Gender.MALE)  # fmt: skip
    same = Mailbox("a@example.com", "张三", "E1", ("市场", "研发/平台"), ("X@example.com",),
                   gender=Gender.MALE)  # fmt: skip
    assert mailbox_differences(live, same) == {}
    other = Mailbox("a@example.com", "张叁", "E2", ("市场",), (), gender=Gender.MALE)
    assert set(mailbox_differences(live, other)) == {"name", "ext_id", "departments", "aliases"}


def test_update_differences_look_only_at_fields_set() -> None:
    live = Mailbox("a@example.com", "张三", "E1", ("研发",), ("b@example.com",), enabled=False)
    assert update_differences(live, UserUpdate(name="张三", enabled=False)) == {}
    assert update_differences(live, UserUpdate(aliases=("B@example.com",))) == {}
    diffs = update_differences(live, UserUpdate(enabled=True, departments=()))
    assert diffs == {"enabled": (False, True), "departments": (["研发"], [])}


def _state(idle: float, upcoming: float) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.idle_for = idle
    state.upcoming_sleep = upcoming
    return state


def test_backoff_cap_counts_sleeps_not_only_the_wall_clock() -> None:
    stop = _StopAfterBackoff(10.0)
    assert not stop(_state(4.0, 5.0))
    assert stop(_state(6.0, 5.0))


@pytest.mark.parametrize(
    "kwargs", [{"concurrency": 0}, {"max_attempts": 0}, {"rate_per_second": -1}]
)
def test_settings_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ExecutorSettings(**kwargs)  # type: ignore[arg-type]


def test_every_action_kind_has_a_handler() -> None:
    from syncengine.executor import HANDLERS
    from syncengine.plan import ActionKind

    assert set(HANDLERS) == set(ActionKind)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from syncengine.callpolicy import retry_after

    assert retry_after("7") == 7.0 and retry_after(" 0 ") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after(None) is None and retry_after("soon") is None
