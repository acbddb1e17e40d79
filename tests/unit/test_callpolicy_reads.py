"""``CallPolicy.retry_read``: a read that succeeds at once builds no retry loop; one that
fails retriably is tried exactly as often, with the same pauses and counters, as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from syncengine.callpolicy import CallPolicy, RetryPolicy


class Busy(Exception):
    pass


def flaky(failures: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise Busy(f"try {len(calls)}")
        return "ok"

    return calls, fn


def policy(attempts: int, slept: list[float]) -> CallPolicy:
    retry = RetryPolicy(max_attempts=attempts, backoff_initial=1.0, backoff_max=8.0, jitter=0)
    return CallPolicy(retry, sleep=slept.append)


@pytest.mark.parametrize("failures", [0, 1, 2, 4])
def test_a_read_is_tried_until_it_succeeds_with_growing_pauses(failures: int) -> None:
    slept: list[float] = []
    calls, fn = flaky(failures)
    calls_policy = policy(8, slept)
    assert calls_policy.retry_read("user/get", fn, lambda e: isinstance(e, Busy)) == "ok"
    assert len(calls) == failures + 1
    assert slept == [1.0, 2.0, 4.0, 8.0][:failures]
    assert calls_policy.stats.snapshot().retries == ({"user/get": failures} if failures else {})


def test_a_read_that_keeps_failing_stops_after_max_attempts() -> None:
    slept: list[float] = []
    calls, fn = flaky(100)
    with pytest.raises(Busy, match="try 3"):
        policy(3, slept).retry_read("user/get", fn, lambda e: isinstance(e, Busy))
    assert len(calls) == 3 and slept == [1.0, 2.0]


def test_a_fatal_failure_is_raised_at_once() -> None:
    slept: list[float] = []
    calls, fn = flaky(1)
    with pytest.raises(Busy):
        policy(8, slept).retry_read("user/get", fn, lambda e: False)
    assert len(calls) == 1 and not slept
