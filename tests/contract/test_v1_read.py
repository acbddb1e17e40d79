"""The Gen 1 full read against the emulator over real HTTP: what the user sees while it runs
and the wire it runs on (libcurl under httpx, see ``providers/curl_transport.py``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx

from syncengine import service
from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import parse_config
from syncengine.domain import Mailbox
from syncengine.emulator.harness import RunningEmulator
from syncengine.providers.curl_transport import CurlTransport, _parse_head
from syncengine.providers.exmail_v1 import ExmailV1Provider

PASSWORD = "Passw0rd!x"


def build(emu: RunningEmulator, **overrides: Any) -> ExmailV1Provider:
    config = parse_config({"exmail": {**emu.exmail_config(), **overrides}})
    provider = service.build_provider(config, calls=CallPolicy(RetryPolicy(max_attempts=1)))
    assert isinstance(provider, ExmailV1Provider)
    return provider


def test_a_full_read_reports_progress_while_it_runs(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    """Each member fetched moves the count (not 0 at the start and everything at the end).

    Every call takes 100 ms, so three workers finish the members in rounds at least 100 ms
    apart; the caller hears of each round (a busy machine may merge the members of one round
    into one report, never several rounds: that would need a 100 ms stall per round)."""
    emu = emulator_factory("v1", latency_ms=100)
    with closing(build(emu, read_concurrency=3)) as p:
        for n in range(12):
            p.create_user(Mailbox(f"p{n:02d}@example.com", f"人{n}", ext_id=f"P{n}"),
                          password=PASSWORD)  # fmt: skip
        seen: list[tuple[int, int | None]] = []
        state = p.read_state(progress=lambda done, total: seen.append((done, total)))
    total = len(state.mailboxes)
    assert total >= 16
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    done = [d for d, _ in seen]
    assert done == sorted(done)
    rounds = -(-total // 3)  # six rounds of three members
    assert len({d for d in done if 0 < d < total}) >= rounds // 2, seen


def test_the_providers_wire_is_libcurl_and_reads_the_same(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    """The default client sends through libcurl; the state it reads is the one httpx's own
    transport reads from the same server."""
    emu = emulator_factory("v1")
    with closing(build(emu)) as p:
        assert isinstance(p._client._transport, CurlTransport)
        over_curl = p.read_state()
    config = parse_config({"exmail": emu.exmail_config()})
    client = httpx.Client(timeout=15)
    with ExmailV1Provider(
        config.exmail, client, calls=CallPolicy(RetryPolicy(max_attempts=1))
    ) as p:
        over_httpx = p.read_state()
    assert over_curl == over_httpx


def test_the_curl_wire_keeps_the_last_heads_status_line_and_headers() -> None:
    """libcurl hands over every head it received; an interim 100 Continue is not the answer."""
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Type: a/b; x=y\r\n\r\n"
    )
    assert _parse_head(raw) == (
        b"HTTP/1.1",
        b"Service Unavailable",
        [(b"Retry-After", b"3"), (b"Content-Type", b"a/b; x=y")],
    )
