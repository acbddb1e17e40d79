"""Reading a plan file hashes the parsed body when it is canonical: the verdict (accepted,
checksum mismatch, malformed) is the one the rebuilt body gives, for every file."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from syncengine.domain import IdentityLink, MailboxState
from syncengine.errors import PlanError
from syncengine.plan import Action, ActionKind, GroupRecord, Plan, action_key, make_plan
from syncengine.plan_codec import (
    _canonical_action,
    action_from_dict,
    action_to_dict,
    plan_from_dict,
    plan_from_saved_copy,
)
from syncengine.planner import Desired, diff
from syncengine.policy import Policy
from tests.unit.test_plan import NOW, sample_plan
from tests.unit.test_planner import NOW as PLANNED_AT
from tests.unit.test_planner_properties import worlds


def rich_plan() -> Plan:
    base = sample_plan()
    group = GroupRecord(
        key="team-a",
        address="team-a@example.com",
        name="Team A",
        members=("zhangsan@example.com",),
        posting=1,
        allow_list=("boss@example.com",),
        add=("zhangsan@example.com",),
    )
    make_group = Action(
        key=action_key(ActionKind.CREATE_GROUP, group.address),
        kind=ActionKind.CREATE_GROUP,
        target=group.address,
        reason="owned group",
        changes={"members": ((), ("zhangsan@example.com",)), "posting": (0, 1)},
        group=group,
    )
    return make_plan(
        created_at=NOW,
        config_fingerprint=base.config_fingerprint,
        state_fingerprint=base.state_fingerprint,
        actions=[*base.actions, make_group],
        conflicts=list(base.conflicts),
        unmanaged=list(base.unmanaged),
        quarantined=list(base.quarantined),
        explanations={k: list(v) for k, v in base.explanations.items()},
    )


def _sum(body: dict[str, Any]) -> str:
    blob = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _verdict(read: Callable[[], Plan]) -> tuple[str, str]:
    try:
        plan = read()
    except PlanError as exc:
        kind = "mismatch" if "checksum mismatch" in exc.message else "malformed"
        return kind, ""
    return "accepted", plan.checksum


def _rebuilt_verdict(data: dict[str, Any]) -> tuple[str, str]:
    """Today's judgment: the checksum of the body rebuilt from the decoded plan (a dict
    without a stated checksum never takes the fast path)."""

    def read() -> Plan:
        body = {k: v for k, v in data.items() if k not in ("checksum", "signature")}
        try:
            plan = plan_from_dict(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed: {exc}") from None
        if plan.checksum != data.get("checksum"):
            raise PlanError("checksum mismatch")
        return plan

    return _verdict(read)


def _user(d: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in d["actions"] if a["kind"] == "create_user")


def _disable(d: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in d["actions"] if a["kind"] == "disable_user")


def _group(d: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in d["actions"] if a["kind"] == "create_group")


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], *keys: str, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        target = path(d)
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "nothing": lambda d: None,
    "gender true": _set(_user, "mailbox", "gender", value=True),
    "gender as text": _set(_user, "mailbox", "gender", value="1"),
    "enabled as 1": _set(_user, "mailbox", "enabled", value=1),
    "departments as text": _set(_user, "mailbox", "departments", value="研发中心"),
    "extra action key": _set(_user, "extra", value=1),
    "group null": _set(_user, "group", value=None),
    "group empty": _set(_group, "group", value={}),
    "posting true": _set(_group, "group", "posting", value=True),
    "retiring_since compact": _set(_group, "group", "retiring_since", value="20261129"),
    "three-item change": _set(_user, "changes", "name", value=[None, "张三", "x"]),
    "change list of ints": _set(_user, "changes", "departments", value=[None, [1]]),
    "change float": _set(_user, "changes", "name", value=[None, 1.5]),
    "change as text": _set(_user, "changes", "name", value="ab"),
    "disabled_since compact": _set(_disable, "link", "disabled_since", value="20261129"),
    "disabled_since empty": _set(_disable, "link", "disabled_since", value=""),
    "update enabled 0": _set(_disable, "update", "enabled", value=0),
    "update name null": _set(_disable, "update", "name", value=None),
    "update as text": _set(_disable, "update", value="x"),
    "update empty": _set(_disable, "update", value={}),
    "link empty": _set(_disable, "link", value={}),
    "link generated 0": _set(_disable, "link", "generated", value=0),
    "password length float": _set(_user, "password", "length", value=16.0),
    "password empty": _set(_user, "password", value={}),
    "mailbox empty": _set(_user, "mailbox", value={}),
    "mailbox position number": _set(_user, "mailbox", "position", value=7),
    "kind unknown": _set(_user, "kind", value="explode"),
    "depends_on text": _set(_user, "depends_on", value="create_department:研发中心"),
    "key number": _set(_user, "key", value=5),
    "top-level extra key": lambda d: d.update(extra=1),
    "summary as text": lambda d: d["summary"].update(create_user="1"),
    "tenant empty": lambda d: d.update(tenant=""),
    "created_at other form": lambda d: d.update(created_at="2026-11-29T08:00:00.000+00:00"),
}


@pytest.mark.parametrize("restate", [False, True], ids=["stated sum kept", "sum restated"])
@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_a_file_is_judged_as_the_rebuilt_body_judges_it(edit: str, restate: bool) -> None:
    data = json.loads(rich_plan().to_json())
    EDITS[edit](data)
    if restate:  # a file whose stated sum is the one of its own (edited) parsed body
        data["checksum"] = _sum(
            {k: v for k, v in data.items() if k not in ("checksum", "signature")}
        )
    expected = _rebuilt_verdict(copy.deepcopy(data))
    assert _verdict(lambda: Plan.from_dict(copy.deepcopy(data))) == expected


def test_a_canonical_file_is_read_back_equal_with_the_same_checksum() -> None:
    plan = rich_plan()
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.checksum == plan.checksum


def test_the_canonical_decoder_reads_what_action_to_dict_writes() -> None:
    for action in rich_plan().actions:
        assert _canonical_action(json.loads(json.dumps(action_to_dict(action)))) == action


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_every_planned_action_reads_back_the_same_by_both_decoders(
    case: tuple[Desired, MailboxState, dict[str, IdentityLink], Policy],
) -> None:
    """Over random worlds (every kind of action the planner makes), the fast decoder gives
    exactly what the general one gives, and a written plan reads back equal with its sum: a
    divergence would let a file's parsed body vouch for a plan it does not describe."""
    desired, state, links, policy = case
    plan = diff(desired, state, links, policy, PLANNED_AT)
    for action in plan.actions:
        written = json.loads(json.dumps(action_to_dict(action), ensure_ascii=False))
        assert _canonical_action(written) == action_from_dict(written) == action
        assert_fields_read_alike(action)
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.checksum == plan.checksum
    assert plan_from_saved_copy(plan.to_json(), plan.checksum) == again


def _distinct_leaves(value: Any, counter: list[int]) -> Any:
    """``value`` with every string leaf replaced by a value of its own (lists keep their
    length), so a decoder that reads one field into another cannot pass unnoticed."""
    if isinstance(value, dict):
        return {k: _distinct_leaves(v, counter) for k, v in value.items()}
    if isinstance(value, list):
        return [_distinct_leaves(v, counter) for v in value]
    if isinstance(value, str):
        counter[0] += 1
        return f"{value}-{counter[0]}" if value else f"x{counter[0]}"
    return value


def _decoded(decode: Callable[[Any], Action | None], d: Any) -> Action | str | None:
    try:
        return decode(d)
    except (KeyError, TypeError, ValueError, AttributeError, msgspec.MsgspecError) as exc:
        return f"refused: {type(exc).__name__}"


def _typed(d: Any) -> Action:
    """An action decoded as :func:`plan_from_saved_copy` decodes each one (msgspec, typed)."""
    return msgspec.json.decode(json.dumps(d, ensure_ascii=False), type=Action)


def assert_fields_read_alike(action: Action) -> None:
    """Each field of ``action``'s written form, made distinct in turn, is read by the fast
    decoders (the canonical one, and the typed one of a saved plan's copy) exactly as the
    general one reads it (or refused by the fast one)."""
    written = json.loads(json.dumps(action_to_dict(action), ensure_ascii=False))
    assert _typed(written) == action
    for key in written:
        if key in ("kind", "key"):
            continue
        d = {**written, key: _distinct_leaves(written[key], [0])}
        general = _decoded(action_from_dict, d)
        fast = _decoded(_canonical_action, d)
        if fast is not None:  # the fast decoder takes it: the general one must agree
            assert fast == general, (action.kind, key)
        typed = _decoded(_typed, d)
        if not isinstance(typed, str):  # the typed decoder takes it: the same again
            assert typed == general, (action.kind, key, "typed")


@pytest.mark.parametrize("kind_at", range(len(rich_plan().actions)))
def test_both_decoders_read_every_field_into_the_same_place(kind_at: int) -> None:
    assert_fields_read_alike(rich_plan().actions[kind_at])


def test_a_known_copy_takes_the_stored_checksum_only_when_the_file_states_it() -> None:
    """``Plan.from_saved_copy``: the caller matched the bytes to a saved plan's document. A file
    stating another checksum, cut short or not UTF-8 is not read this way (the caller reads it
    as any file: an edit stays a checksum mismatch)."""
    plan = rich_plan()
    text = plan.to_json()
    copy = Plan.from_saved_copy(text.encode("utf-8"), plan.checksum)
    assert copy == Plan.from_json(text) == plan_from_saved_copy(text, plan.checksum)
    assert copy is not None and (copy.checksum, copy.signature) == (plan.checksum, plan.signature)
    assert Plan.from_saved_copy(text, "f" * 64) is None  # another plan's: not this route
    assert Plan.from_saved_copy(text.encode("utf-8")[:-50], plan.checksum) is None  # cut short
    assert Plan.from_saved_copy(b"\xff" + text.encode("utf-8"), plan.checksum) is None
