"""The pacer's first second: a short run's calls do not sleep, and no window gets more calls."""

from __future__ import annotations

import pytest

from syncengine.callpolicy import Pacer
from syncengine.config import parse_config
from syncengine.service.engine import call_policy


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.calls: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def call_times(pacer: Pacer, t: FakeTime, n: int, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        pacer.acquire()
        out.append(t.now)
        t.now += gap
    return out


def most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for x in times if s <= x < s + 1.0) for s in times)


def test_the_calls_of_the_first_second_do_not_sleep() -> None:
    t = FakeTime()
    pacer = Pacer(10.0, burst=1, clock=t.clock, sleep=t.sleep, free_first_second=True)
    times = call_times(pacer, t, 10)
    assert t.slept == [] and times == [100.0] * 10  # turns at 0, 0.1 ... 0.9 s: all free
    pacer.acquire()  # the eleventh's turn is 1.0 s after the first call: it waits for it
    assert t.slept == [pytest.approx(1.0)]


def test_without_it_the_second_call_already_sleeps() -> None:
    t = FakeTime()
    pacer = Pacer(10.0, burst=1, clock=t.clock, sleep=t.sleep)
    call_times(pacer, t, 3)
    assert t.slept == [pytest.approx(0.1), pytest.approx(0.1)]


@pytest.mark.parametrize("gap", [0.0, 0.003, 0.05, 0.37])
@pytest.mark.parametrize("rate", [1.0, 9.0, 13.5])
def test_no_one_second_window_holds_more_calls_than_plain_pacing(rate: float, gap: float) -> None:
    t1, t2 = FakeTime(), FakeTime()
    plain = call_times(Pacer(rate, 1, clock=t1.clock, sleep=t1.sleep), t1, 60, gap)
    free = call_times(
        Pacer(rate, 1, clock=t2.clock, sleep=t2.sleep, free_first_second=True), t2, 60, gap
    )
    assert most_in_one_second(free) <= max(most_in_one_second(plain), int(rate) + 1)
    assert most_in_one_second(free) <= int(rate) + 1
    assert free[-1] <= plain[-1]  # never later than the plain pacer


def test_the_engines_policy_lets_a_quiet_nights_three_reads_through_at_once() -> None:
    config = parse_config({"exmail": {"api": "v2", "corp_id": "c", "secrets": {"contacts": "s"},
                                      "domains": ["example.com"]}})  # fmt: skip
    t = FakeTime()
    policy = call_policy(config.apply.settings(), 10.0, sleep=t.sleep, clock=t.clock)
    for name in ("gettoken", "department/list", "user/list"):
        policy.pace(name)
    assert t.slept == []  # default rate 15/s: the second and third used to wait 74 ms each
