"""Gen 2's whole-directory read sends its two calls at once (issue 14: the stale-plan check
of ``apply`` waits for it), against the emulator over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

from syncengine import service
from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import parse_config
from syncengine.providers.exmail_v2 import ExmailV2Provider
from tests.fixtures.emulator import RunningEmulator


def build(emu: RunningEmulator) -> ExmailV2Provider:
    config = parse_config({"exmail": emu.exmail_config()})
    p = service.build_provider(config, calls=CallPolicy(RetryPolicy(max_attempts=1)))
    assert isinstance(p, ExmailV2Provider)
    return p


def test_the_two_calls_of_a_state_read_are_in_flight_together(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v2", latency_ms=250)
    p = build(emu)
    try:
        expected = p.read_state()  # also fetches the token
        mark = len(emu.calls())
        state = p.read_state()
        calls = {"/".join(str(c["endpoint"]).split("/")[-2:]): c for c in emu.calls(mark)}
    finally:
        p.close()
    assert sorted(calls) == ["department/list", "user/list"]
    assert state == expected and len(state.mailboxes) > 1 and state.parties
    first, second = sorted(calls.values(), key=lambda c: float(c["at"]))
    # Each call takes 250 ms at the server; the second arrived before the first was answered.
    assert float(second["at"]) < float(first["at"]) + float(first["ms"]) / 1000
