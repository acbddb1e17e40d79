"""The retry loop's first try runs outside tenacity's machinery (callpolicy._LeanFirstTry):
for any run of outcomes it must do exactly what tenacity's own loop does with the same
settings: the same tries, pauses, retry callbacks, budget spent and error raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import Retrying

from syncengine.callpolicy import Budget, RetryPolicy


class Transient(Exception):
    retry_after: float | None = None


class Fatal(Exception):
    pass


def run(outcomes: list[str], policy: RetryPolicy, budget_seconds: float,
        tenacity_loop: bool) -> tuple[object, ...]:  # fmt: skip
    """Drive one loop over ``outcomes`` ("ok", "transient", "transient-after", "fatal"; the
    last one repeats); what it did."""
    sleeps: list[float] = []
    retried: list[str] = []
    tries: list[int] = []
    budget = Budget(budget_seconds)
    retrying = policy.retrying(
        lambda exc: isinstance(exc, Transient),
        sleep=sleeps.append,
        budget=budget,
        on_retry=lambda exc: retried.append(str(exc)),
    )
    attempts: Iterator[object] = Retrying.__iter__(retrying) if tenacity_loop else iter(retrying)
    raised: object = None
    try:
        for attempt in attempts:
            with attempt:  # type: ignore[attr-defined]
                n = len(tries)
                tries.append(n)
                outcome = outcomes[min(n, len(outcomes) - 1)]
                if outcome == "fatal":
                    raise Fatal(f"fatal {n}")
                if outcome.startswith("transient"):
                    exc = Transient(f"transient {n}")
                    exc.retry_after = 2.0 if outcome == "transient-after" else None
                    raise exc
    except Exception as exc:
        raised = (type(exc).__name__, str(exc))
    return len(tries), sleeps, retried, round(budget.spent, 9), raised


@settings(max_examples=150, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["ok", "transient", "transient-after", "fatal"]),
                      min_size=1, max_size=10),
    max_attempts=st.integers(1, 6),
    budget_seconds=st.sampled_from([0.0, 1.0, 3.0]),
    max_retry_seconds=st.sampled_from([300.0, 2.5]),
)  # fmt: skip
def test_the_first_try_outside_the_loop_changes_nothing(
    outcomes: list[str], max_attempts: int, budget_seconds: float, max_retry_seconds: float
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, backoff_initial=0.5, backoff_max=4.0,
                         jitter=0.0, max_retry_seconds=max_retry_seconds)  # fmt: skip
    lean = run(outcomes, policy, budget_seconds, tenacity_loop=False)
    reference = run(outcomes, policy, budget_seconds, tenacity_loop=True)
    assert lean == reference


def test_a_success_at_once_and_a_retried_failure() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.5, jitter=0.0)
    assert run(["ok"], policy, 0.0, tenacity_loop=False) == (1, [], [], 0.0, None)
    tries, sleeps, retried, spent, raised = run(["transient"], policy, 0.0, False)
    assert (tries, sleeps, retried, spent) == (3, [0.5, 1.0], ["transient 0", "transient 1"],
                                               1.5)  # fmt: skip
    assert raised == ("Transient", "transient 2")


def test_an_interrupt_in_the_first_try_is_raised_as_it_is() -> None:
    retrying = RetryPolicy(max_attempts=3).retrying(lambda exc: True, sleep=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        for attempt in retrying:
            with attempt:
                raise KeyboardInterrupt
