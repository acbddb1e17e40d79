"""Fuzzing the emulator over real HTTP: whatever a client sends, a well-formed reply, no 5xx.

The real Exmail answers malformed input with its invalid-parameter errcode; the emulator must
too, or a client test would see a server error the real service never gives. Hypothesis draws
request shapes (any JSON, deep nesting, non-finite numbers, huge integers, odd digits, random
form fields) for every endpoint of both generations; each answer must come within the client
timeout, below HTTP 500, and parse as the generation's reply shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine.emulator.gen1 import ENDPOINTS as GEN1_ENDPOINTS
from syncengine.emulator.gen2 import ENDPOINTS as GEN2_ENDPOINTS
from syncengine.emulator.harness import start_emulator
from tests.fixtures.emulator import RawV1, RawV2

REPLY_TIMEOUT = 5.0  # listen holds 0.2 s here; anything near this is a hang

ODD_TEXT = st.sampled_from(
    ["²", "１２３", "٣", "9" * 5000, "-1", "1e400", "Infinity", "NaN", "", " ", "0x10", "\x00"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**305),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
GEN2_KEYS = st.sampled_from(
    ["id", "parentid", "name", "order", "userid", "department", "slaves", "gender", "enable",
     "password", "cpwd_login", "groupid", "userlist", "allow_type", "fuzzy", "begin_date",
     "end_date", "type", "alias", "slavealias", "fetch_child", "department_id"]
)  # fmt: skip
GEN1_KEYS = st.sampled_from(
    ["Ver", "Alias", "Action", "Name", "PartyPath", "Slave", "OpenType", "Gender", "Md5",
     "Password", "DstPath", "SrcPath", "email", "group_admin", "group_alias", "members",
     "status", "allow_list", "slavealias", "ExtId"]
)  # fmt: skip


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def gen2_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return _deep(draw(st.integers(100, 20000)), draw(st.sampled_from(["list", "dict"])))
    if choice == 1:
        raw = draw(st.binary(max_size=64))
        return raw
    body = draw(st.dictionaries(GEN2_KEYS, JSON_VALUES, max_size=6))
    if choice == 2 and body:
        key = draw(st.sampled_from(sorted(body)))
        body[key] = draw(
            st.sampled_from([float("inf"), float("-inf"), float("nan"), [float("inf")]])
        )
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture(scope="module")
def fuzz_v2() -> Iterator[RawV2]:
    emu = start_emulator("v2", listen_hold=0.2)
    raw = RawV2(emu)
    yield raw
    raw.close()
    emu.close()


@pytest.fixture(scope="module")
def fuzz_v1() -> Iterator[RawV1]:
    emu = start_emulator("v1", listen_hold=0.2)
    raw = RawV1(emu)
    yield raw
    raw.close()
    emu.close()


def _assert_gen2_reply(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    assert response.status_code == 200, response.text[:300]
    body: Any = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errcode"), int), body
    assert isinstance(body.get("errmsg"), str), body


def _assert_gen1_reply(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    assert response.status_code == 200, response.text[:300]
    if response.content.strip():
        body: Any = response.json()
        assert isinstance(body, dict), body
        if "errcode" in body:
            assert str(body["errcode"]).isascii() and str(body["errcode"]).isdigit(), body
            assert isinstance(body.get("error"), str), body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(sorted(GEN2_ENDPOINTS)),
    body=gen2_bodies(),
    query=st.dictionaries(GEN2_KEYS, st.one_of(st.text(max_size=12), ODD_TEXT), max_size=3),
)
def test_gen2_any_request_gets_a_well_formed_reply(
    fuzz_v2: RawV2, endpoint: str, body: bytes, query: dict[str, str]
) -> None:
    app = GEN2_ENDPOINTS[endpoint][0]
    token = fuzz_v2.token(app)
    for method in ("GET", "POST"):
        response = fuzz_v2.http.request(
            method,
            f"/cgi-bin/{endpoint}",
            params={**query, "access_token": token},
            content=body if method == "POST" else None,
            headers={"Content-Type": "application/json"},
            timeout=REPLY_TIMEOUT,
        )
        _assert_gen2_reply(response)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    endpoint=st.sampled_from(sorted(GEN1_ENDPOINTS)),
    fields=st.lists(st.tuples(GEN1_KEYS, st.one_of(st.text(max_size=16), ODD_TEXT)), max_size=8),
)
def test_gen1_any_form_gets_a_well_formed_reply(
    fuzz_v1: RawV1, endpoint: str, fields: list[tuple[str, str]]
) -> None:
    response = fuzz_v1.call(endpoint, fields, timeout=REPLY_TIMEOUT)
    _assert_gen1_reply(response)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("department/create", _deep(5000, "list")),  # RecursionError before the fix
        ("user/update", _deep(5000, "dict")),
        ("user/create", b'{"userid":"x@corp.test","name":"X","department":[Infinity]}'),
        ("user/update", b'{"userid":"x@corp.test","department":[1e400]}'),
    ],
)
def test_gen2_found_by_fuzzing(fuzz_v2: RawV2, endpoint: str, body: bytes) -> None:
    if endpoint == "user/update":  # an existing member, so the department list is reached
        member = fuzz_v2.emu.state()["users"][0]["userid"]
        body = body.replace(b"x@corp.test", member.encode())
    response = fuzz_v2.http.post(
        f"/cgi-bin/{endpoint}",
        params={"access_token": fuzz_v2.token()},
        content=body,
        headers={"Content-Type": "application/json"},
    )
    _assert_gen2_reply(response)
    assert response.json()["errcode"] in (40092, 47001, 60003)


@pytest.mark.parametrize("ver", ["9" * 5000, "²", "１２", "-5", "1.5"])
@pytest.mark.parametrize("endpoint", ["listen", "user/list"])
def test_gen1_odd_versions_are_invalid_param(fuzz_v1: RawV1, endpoint: str, ver: str) -> None:
    response = fuzz_v1.call(endpoint, {"Ver": ver}, timeout=REPLY_TIMEOUT)
    _assert_gen1_reply(response)
    assert response.json() == {"errcode": "1100", "error": "invalid_param"}


def test_fuzz_emulators_still_serve(fuzz_v2: RawV2, fuzz_v1: RawV1) -> None:
    """After the fuzzing the emulators still answer ordinary calls."""
    assert fuzz_v2.get("department/list", id=1)["errcode"] == 0
    assert "Ver" in fuzz_v1.json("user/list", {"Ver": "0"})
