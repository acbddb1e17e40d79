"""Fuzzing the receiver over real HTTP (issue 11): hypothesis builds signed hook bodies of any
shape, event ids and portal links of any text; the answer is never a 5xx, never hangs, and is
always well formed (JSON with an ``error`` for the hooks, text for SSO refusals).

The receiver runs in this process with the same app and server settings as ``serve``, on a
real staging file and the emulator; its worker is off so that stored events stay stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncengine.emulator.harness import start_emulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import (
    Receiver,
    hook_headers,
    make_env,
    portal_link,
    running_receiver,
)

pytestmark = pytest.mark.timeout(300)

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    emulator = start_emulator("v2")
    try:
        env = make_env(ApplyEnv(Path(tmp_path_factory.mktemp("fuzz")), emulator))
        with running_receiver(env, worker=False) as receiver:
            yield receiver
    finally:
        emulator.close()


SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)  # fmt: skip
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                      max_leaves=20)  # fmt: skip
HR_FIELDS = st.sampled_from(["employee_id", "name", "email", "departments", "position", "mobile",
                             "gender", "status", "aliases", "start_date", "end_date"])  # fmt: skip
PERSON = st.dictionaries(HR_FIELDS | st.text(max_size=12), VALUES, max_size=8)
BODIES = st.fixed_dictionaries(
    {"kind": st.sampled_from(["upsert", "terminate", "department_change"]) | st.text(max_size=12)},
    optional={
        "delivery_id": st.text(max_size=140) | SCALARS,
        "person": PERSON | VALUES,
        "employee_id": st.text(max_size=140) | SCALARS,
        "end_date": st.dates().map(str) | st.text(max_size=20) | SCALARS,
        "departments": st.lists(st.text(max_size=30) | SCALARS, max_size=25) | VALUES,
        "extra": VALUES,
    },
)


def well_formed_error(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


@FUZZ
@given(body=BODIES, delivery=st.none() | st.text(max_size=200).filter(
    # what an HTTP client can send at all: h11 refuses a value with surrounding whitespace
    lambda t: t.isprintable() and t.isascii() and t == t.strip()))  # fmt: skip
def test_signed_hooks_of_any_shape_never_answer_5xx(
    rx: Receiver, body: dict[str, Any], delivery: str | None
) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    started = time.monotonic()
    response = rx.client.post("/hooks/hr", content=raw,
                              headers=hook_headers(raw, delivery=delivery))  # fmt: skip
    assert time.monotonic() - started < 10
    well_formed_error(response)
    if response.status_code == 202:
        assert isinstance(response.json()["id"], int)


def _wrapped(value: bytes) -> bytes:
    """A valid upsert whose record carries ``value`` as one more field."""
    return (b'{"kind": "upsert", "delivery_id": "w", "person": {"employee_id": "W1", '
            b'"name": "W", "x": ' + value + b"}}")  # fmt: skip


HOSTILE = st.one_of(
    st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 6000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6000).map(lambda n: b"9" * n),
    st.sampled_from([b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1e400"]),
).map(_wrapped)


@FUZZ
@given(raw=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode) | HOSTILE)
def test_signed_bytes_of_any_kind_never_answer_5xx(rx: Receiver, raw: bytes) -> None:
    well_formed_error(rx.client.post("/hooks/hr", content=raw, headers=hook_headers(raw)))


@FUZZ
@given(segment=st.text(min_size=1, max_size=60) | st.from_regex(r"\A-?[0-9]{1,6000}\Z"))
@example(segment="0/")  # /hooks/events/0%2F was a 307 to an unsigned path (found by this test)
def test_any_event_id_is_404_or_an_event(rx: Receiver, segment: str) -> None:
    path = "/hooks/events/" + quote(segment, safe="")
    response = rx.client.get(path, headers=hook_headers(path.encode()))
    well_formed_error(response)
    assert response.status_code in (200, 401, 404), response.text


@FUZZ
@given(user=st.text(max_size=80), ts=st.none() | st.text(max_size=30) | st.integers().map(str),
       sig=st.none() | st.text(max_size=70), genuine=st.booleans())  # fmt: skip
def test_any_portal_link_is_a_redirect_or_a_refusal(
    rx: Receiver, user: str, ts: str | None, sig: str | None, genuine: bool
) -> None:
    if genuine and user.strip():
        link = portal_link(user, ts=int(time.time()))
    else:
        query = {k: v for k, v in {"user": user, "ts": ts, "sig": sig}.items() if v is not None}
        link = "/sso/login?" + urlencode(query)
    response = rx.client.get(link)
    assert response.status_code in (302, 403, 404), (response.status_code, response.text)
