"""A read's answer is freed when the read returns, not left to the cycle collector.

``httpx.Client.send`` binds a response's stream to the response (a reference cycle), so an
answer (the Gen 2 ``user/list`` body: 21 MB for 100,000 members) lived until a full garbage
collection, which planning makes rare (``service.planning.bulk_objects``); ``make_plan``
paid a full collection of the whole heap to free it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import closing

import httpx
import pytest

from syncengine import service
from syncengine.config import parse_config
from tests.fixtures.emulator import RunningEmulator

pytestmark = pytest.mark.timeout(60)


def _live_answers(call: str) -> list[httpx.Response]:
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, httpx.Response) and o.request.url.path.endswith(call)
    ]


def test_v2_read_state_leaves_no_answer_behind(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v2")
    config = parse_config({"exmail": emu.exmail_config()})
    with closing(service.build_provider(config)) as provider:
        gc.collect()
        gc.disable()  # what is still alive after the read is what refcounting left
        try:
            state = provider.read_state()
            assert state.mailboxes
            assert _live_answers("/user/list") == []
            assert _live_answers("/department/list") == []
        finally:
            gc.enable()
