"""The pure rules that keep hooks and portal links to the company's managed mailboxes, and
the payload limits that keep a hostile body from reaching anything that recurses
(:mod:`syncengine.hooks.guard`, :mod:`syncengine.hooks.payloads`, :mod:`~.signing`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncengine.domain import IdentityLink, Mailbox, Person
from syncengine.hooks.guard import adoption_refusals, outside_domains
from syncengine.hooks.payloads import MAX_DEPTH, PayloadError, _nesting_beyond, parse_event
from syncengine.hooks.signing import replay_key
from syncengine.policy import Policy

PROTECTED = Policy().is_protected
MAILBOXES = (
    Mailbox("zhangsan@example.com", "张三", ext_id="E1", aliases=("san@example.com",)),
    Mailbox("hr-shared@example.com", "HR 公共", aliases=("hr@example.com",)),
    Mailbox("admin@example.com", "管理员"),
    Mailbox("old@example.com", "旧的"),
)
LINKS = {"E2": IdentityLink("E2", "old@example.com", datetime(2026, 1, 1, tzinfo=UTC))}


def refusals(**people: str) -> dict[str, str]:
    return adoption_refusals({eid: Person(eid, "某人", email) for eid, email in people.items()},
                             MAILBOXES, LINKS, PROTECTED)  # fmt: skip


def test_a_hook_may_not_take_an_unmanaged_mailbox_by_primary_or_alias() -> None:
    found = refusals(N1="hr-shared@example.com", N2="HR@Example.com")
    assert set(found) == {"N1", "N2"}
    assert "no HR record owns" in found["N1"] and "hr-shared@example.com" in found["N2"]


def test_a_hook_may_not_take_a_protected_mailbox() -> None:
    assert "protected" in refusals(N1="admin@example.com")["N1"]
    # A protected address nobody has yet is the planner's business (it never creates one).
    assert refusals(N1="postmaster@example.com") == {}


def test_known_owners_new_addresses_and_other_employees_mailboxes_pass() -> None:
    # E1 owns its mailbox by ext_id, E2 by its stored link: their hooks are ordinary updates,
    # even towards another address. N3 wants an unused address: a hire.
    assert refusals(E1="zhangsan@example.com", E2="hr-shared@example.com",
                    N3="new@example.com") == {}  # fmt: skip
    # Another employee's mailbox (ext_id or link) is a conflict the planner reports.
    assert refusals(N4="san@example.com", N5="old@example.com") == {}


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("lisi@example.com", False),
        ("LiSi@Mail.Example.COM", False),
        ("someone@elsewhere.org", True),
        ("lisi@example.com.evil.org", True),
        ("no-at-sign", True),
    ],
)
def test_outside_domains(address: str, refused: bool) -> None:
    why = outside_domains(address, ["mail.example.com"], "example.com")
    assert (why is not None) is refused, why


def test_replay_keys_depend_on_the_signature_only_and_keep_purposes_apart() -> None:
    sig = "sha256=" + "ab" * 32
    assert replay_key("hook", sig) == replay_key("hook", " SHA256=" + "AB" * 32 + " ")
    assert replay_key("hook", sig) != replay_key("sso", sig)
    assert replay_key("hook", sig) != replay_key("hook", sig[:-1] + "c")
    assert len(replay_key("hook", sig)) <= 96  # the used_signatures.digest column


# --- payload limits --------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{}\u4e2d'), max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(alphabet='ab"[{\\', max_size=3), inner, max_size=3),
    max_leaves=30,
)  # fmt: skip


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(JSON_VALUES, st.integers(min_value=0, max_value=6))
def test_the_byte_scan_finds_exactly_the_nesting_depth(value: Any, limit: int) -> None:
    text = json.dumps(value, ensure_ascii=bool(limit % 2)).encode()
    assert (_nesting_beyond(text, limit) is not None) == (depth(value) > limit)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_any_json_in_a_record_is_an_event_or_a_payload_error(value: Any) -> None:
    body = json.dumps({"kind": "upsert", "delivery_id": "d",
                       "person": {"工号": "E1", "x": value}}).encode()  # fmt: skip
    try:
        parse_event(body)
    except PayloadError as exc:
        assert depth(value) + 2 > MAX_DEPTH or "x" in str(exc) or exc.field == ""


@pytest.mark.parametrize(
    "value",
    [b"[" * 100_000, b"1" * 5000, b"-" + b"1" * 41, b"Infinity", b"-Infinity", b"NaN",
     b"1e999999", b"0." + b"0" * 60],
)  # fmt: skip
def test_hostile_values_are_a_body_error(value: bytes) -> None:
    body = b'{"kind": "upsert", "delivery_id": "d", "person": {"x": ' + value + b"}}"
    with pytest.raises(PayloadError) as info:
        parse_event(body)
    assert info.value.field == ""
