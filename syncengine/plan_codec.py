"""The plan's JSON codec and checksums: :class:`~syncengine.plan.Plan` to and from the
dicts of its file, and the canonical JSON its checksum and content key hash.

PURE: no I/O, no clock. Split out of :mod:`syncengine.plan`, whose public names (the
``*_to_dict`` / ``*_from_dict`` functions, :func:`compute_checksum`, :func:`content_key`)
stay importable from there.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any, cast

from syncengine.domain import Gender, Mailbox, UserUpdate
from syncengine.errors import PlanError
from syncengine.plan import (
    SCHEMA_VERSION,
    Action,
    ActionKind,
    BlockedReason,
    ChangeValue,
    Conflict,
    ConflictKind,
    GroupRecord,
    Held,
    LinkRecord,
    PasswordPolicy,
    Plan,
    ReleaseKind,
    validate_order,
)


def compute_checksum(plan: Plan) -> str:
    """sha256 of the canonical JSON of the plan without its checksum."""
    blob = json.dumps(body_dict(plan), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def content_key(plan: Plan) -> str:
    """sha256 of what the plan does: its actions and the fingerprints of the state and config
    it was made against, without its time. The same changes planned again against the same
    directory have the same key, so an approval covers the nightly run's copy of them."""
    body = body_dict(plan)
    kept = {k: body[k] for k in ("schema_version", "actions", "state_fingerprint",
                                 "config_fingerprint")}  # fmt: skip
    blob = json.dumps(kept, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --- (de)serialisation helpers ---------------------------------------------------------------


def _value_to_json(v: ChangeValue) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _value_from_json(v: Any) -> ChangeValue:
    if isinstance(v, list):
        return tuple(str(x) for x in v)
    if v is None or isinstance(v, str | int | bool):
        return cast(ChangeValue, v)
    raise ValueError(f"unexpected change value {v!r}")


def mailbox_to_dict(m: Mailbox) -> dict[str, Any]:
    return {
        "email": m.email,
        "name": m.name,
        "ext_id": m.ext_id,
        "departments": list(m.departments),
        "aliases": list(m.aliases),
        "position": m.position,
        "tel": m.tel,
        "mobile": m.mobile,
        "gender": int(m.gender),
        "enabled": m.enabled,
    }


def mailbox_from_dict(d: Mapping[str, Any]) -> Mailbox:
    return Mailbox(
        email=str(d["email"]),
        name=str(d["name"]),
        ext_id=str(d["ext_id"]),
        departments=tuple(str(x) for x in d["departments"]),
        aliases=tuple(str(x) for x in d["aliases"]),
        position=str(d["position"]),
        tel=str(d["tel"]),
        mobile=str(d["mobile"]),
        gender=Gender(int(d["gender"])),
        enabled=bool(d["enabled"]),
    )


def update_to_dict(u: UserUpdate) -> dict[str, Any]:
    """Only the fields that are set: an absent key means "leave as it is"."""
    out: dict[str, Any] = {}
    for name in u.__dataclass_fields__:
        v = getattr(u, name)
        if v is None:
            continue
        if isinstance(v, tuple):
            out[name] = list(v)
        elif isinstance(v, Gender):
            out[name] = int(v)
        else:
            out[name] = v
    return out


def update_from_dict(d: Mapping[str, Any]) -> UserUpdate:
    known = set(UserUpdate.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown update fields {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, v in d.items():
        if name in {"departments", "aliases"}:
            kwargs[name] = tuple(str(x) for x in v)
        elif name == "gender":
            kwargs[name] = Gender(int(v))
        elif name == "enabled":
            kwargs[name] = bool(v)
        else:
            kwargs[name] = str(v)
    return UserUpdate(**kwargs)


def _link_to_dict(link: LinkRecord) -> dict[str, Any]:
    return {
        "employee_id": link.employee_id,
        "email": link.email,
        "generated": link.generated,
        "disabled_since": link.disabled_since.isoformat() if link.disabled_since else None,
    }


def _link_from_dict(d: Mapping[str, Any]) -> LinkRecord:
    ds = d["disabled_since"]
    return LinkRecord(
        employee_id=str(d["employee_id"]),
        email=str(d["email"]),
        generated=bool(d["generated"]),
        disabled_since=date.fromisoformat(ds) if ds else None,
    )


def _group_to_dict(g: GroupRecord) -> dict[str, Any]:
    return {
        "key": g.key,
        "address": g.address,
        "name": g.name,
        "members": list(g.members),
        "posting": g.posting,
        "allow_list": list(g.allow_list),
        "add": list(g.add),
        "remove": list(g.remove),
        "retiring_since": g.retiring_since.isoformat() if g.retiring_since else None,
    }


def _group_from_dict(d: Mapping[str, Any]) -> GroupRecord:
    rs = d["retiring_since"]
    return GroupRecord(
        key=str(d["key"]),
        address=str(d["address"]),
        name=str(d["name"]),
        members=tuple(str(x) for x in d["members"]),
        posting=int(d["posting"]),
        allow_list=tuple(str(x) for x in d["allow_list"]),
        add=tuple(str(x) for x in d["add"]),
        remove=tuple(str(x) for x in d["remove"]),
        retiring_since=date.fromisoformat(rs) if rs else None,
    )


def action_to_dict(a: Action) -> dict[str, Any]:
    body = _action_core(a)
    if a.group is not None:  # only then: plans without groups keep their checksum
        body["group"] = _group_to_dict(a.group)
    return body


def _action_core(a: Action) -> dict[str, Any]:
    return {
        "key": a.key,
        "kind": a.kind.value,
        "target": a.target,
        "employee_id": a.employee_id,
        "reason": a.reason,
        "changes": {k: [_value_to_json(o), _value_to_json(n)] for k, (o, n) in a.changes.items()},
        "depends_on": list(a.depends_on),
        "mailbox": mailbox_to_dict(a.mailbox) if a.mailbox else None,
        "update": update_to_dict(a.update) if a.update is not None else None,
        "new_path": a.new_path,
        "alias": a.alias,
        "link": _link_to_dict(a.link) if a.link else None,
        "password": (
            {
                "delivery": a.password.delivery,
                "change_at_login": a.password.change_at_login,
                "length": a.password.length,
            }
            if a.password
            else None
        ),
    }


def action_from_dict(d: Mapping[str, Any]) -> Action:
    pw = d["password"]
    return Action(
        key=str(d["key"]),
        kind=ActionKind(d["kind"]),
        target=str(d["target"]),
        employee_id=str(d["employee_id"]),
        reason=str(d["reason"]),
        changes={
            str(k): (_value_from_json(v[0]), _value_from_json(v[1]))
            for k, v in d["changes"].items()
        },
        depends_on=tuple(str(x) for x in d["depends_on"]),
        mailbox=mailbox_from_dict(d["mailbox"]) if d["mailbox"] else None,
        update=update_from_dict(d["update"]) if d["update"] is not None else None,
        new_path=d["new_path"],
        alias=d["alias"],
        link=_link_from_dict(d["link"]) if d["link"] else None,
        password=(
            PasswordPolicy(
                delivery=str(pw["delivery"]),
                change_at_login=bool(pw["change_at_login"]),
                length=int(pw["length"]),
            )
            if pw
            else None
        ),
        group=_group_from_dict(d["group"]) if d.get("group") else None,
    )


def body_dict(plan: Plan) -> dict[str, Any]:
    body = _core_dict(plan)
    if plan.tenant:  # in the checksum (and so the signature); absent for a single company
        body["tenant"] = plan.tenant
    if plan.held:  # only when there is one: plans written before held existed keep their sum
        body["held"] = [
            {"email": h.email, "employee_id": h.employee_id, "reason": h.reason} for h in plan.held
        ]
    return body


def _core_dict(plan: Plan) -> dict[str, Any]:
    return {
        "schema_version": plan.schema_version,
        "created_at": plan.created_at.isoformat(),
        "config_fingerprint": plan.config_fingerprint,
        "state_fingerprint": plan.state_fingerprint,
        "actions": [action_to_dict(a) for a in plan.actions],
        "conflicts": [
            {
                "kind": c.kind.value,
                "message": c.message,
                "employee_ids": list(c.employee_ids),
                "emails": list(c.emails),
            }
            for c in plan.conflicts
        ],
        "unmanaged": list(plan.unmanaged),
        "protected": list(plan.protected),
        "quarantined": list(plan.quarantined),
        "blocked_reasons": [
            {
                "brake": r.brake,
                "message": r.message,
                "release": r.release.value,
                "needed": r.needed,
                "how_to_release": r.how_to_release,
            }
            for r in plan.blocked_reasons
        ],
        "explanations": {k: list(v) for k, v in plan.explanations.items()},
        "summary": dict(plan.summary),
    }


def plan_from_dict(d: Mapping[str, Any]) -> Plan:
    """The plan a file's dict describes, its ``checksum`` computed as
    :func:`compute_checksum` does.

    Fast path, judged exactly as the rebuild: when every action is in its canonical form
    (:func:`_canonical_action`: what :func:`action_to_dict` would write for it, to the type)
    and so is the rest of the body, the body rebuilt from the plan *is* the parsed body, so
    the canonical JSON of the parsed body is hashed instead of rebuilding every action's dict.
    Its sum is kept only when it is the one the file states; otherwise (a file edited, or not
    in canonical form) the checksum is computed from the rebuilt body, as always."""
    canonical = True
    actions: list[Action] = []
    for item in d["actions"]:
        action = _canonical_action(item)
        if action is None:
            canonical = False
            action = action_from_dict(item)
        actions.append(action)
    plan = _plan_with(d, actions)
    stated = d.get("checksum")
    checksum = _parsed_checksum(plan, d) if canonical and isinstance(stated, str) else None
    if checksum is None or checksum != stated:
        checksum = compute_checksum(plan)
    return replace(plan, checksum=checksum)


def _plan_with(d: Mapping[str, Any], actions: Sequence[Action]) -> Plan:
    """The plan of a file's dict whose actions are decoded already (order validated; no
    checksum yet)."""
    plan = Plan(
        schema_version=int(d["schema_version"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        config_fingerprint=str(d["config_fingerprint"]),
        state_fingerprint=str(d["state_fingerprint"]),
        tenant=str(d.get("tenant") or ""),
        actions=tuple(actions),
        conflicts=tuple(
            Conflict(
                kind=ConflictKind(c["kind"]),
                message=str(c["message"]),
                employee_ids=tuple(str(x) for x in c["employee_ids"]),
                emails=tuple(str(x) for x in c["emails"]),
            )
            for c in d["conflicts"]
        ),
        unmanaged=tuple(str(x) for x in d["unmanaged"]),
        protected=tuple(str(x) for x in d["protected"]),
        quarantined=tuple(str(x) for x in d["quarantined"]),
        blocked_reasons=tuple(
            BlockedReason(
                brake=str(r["brake"]),
                message=str(r["message"]),
                release=ReleaseKind(r["release"]),
                needed=int(r["needed"]),
            )
            for r in d["blocked_reasons"]
        ),
        explanations={str(k): tuple(str(x) for x in v) for k, v in d["explanations"].items()},
        summary={str(k): int(v) for k, v in d["summary"].items()},
        held=tuple(
            Held(email=str(h["email"]), employee_id=str(h["employee_id"]), reason=str(h["reason"]))
            for h in d.get("held", ())
        ),
    )
    validate_order(plan.actions)
    return plan


# --- a saved plan's own document, typed in one pass ------------------------------------------


@functools.cache
def _saved_decoder() -> Any:
    """msgspec's decoder of a plan file as :meth:`Plan.to_json` writes it: the actions typed,
    the rest as JSON (msgspec is imported here: only ``apply`` of a saved plan's copy uses it)."""
    import msgspec

    class SavedDocument(msgspec.Struct):
        schema_version: int
        checksum: str
        actions: list[Action]
        created_at: Any
        config_fingerprint: Any
        state_fingerprint: Any
        conflicts: Any
        unmanaged: Any
        protected: Any
        quarantined: Any
        blocked_reasons: Any
        explanations: Any
        summary: Any
        signature: Any = ""
        tenant: Any = ""
        held: Any = ()

    return msgspec.json.Decoder(SavedDocument)


def plan_from_saved_copy(data: str | bytes, copy_of: str) -> Plan | None:
    """The plan of ``data`` (a file's bytes or text), known to be byte for byte the document of
    the saved plan whose checksum is ``copy_of`` (see :meth:`Plan.from_saved_copy`): decoded
    by msgspec straight into the plan's types (a quarter of the time of :func:`json.loads`
    then the action decoders), the checksum being the stored one. None when it does not state
    that checksum in this schema version, or does not decode so (invalid UTF-8 included)."""
    import msgspec

    try:
        doc = _saved_decoder().decode(data)
    except msgspec.MsgspecError:
        return None
    if doc.checksum != copy_of or doc.schema_version != SCHEMA_VERSION:
        return None
    rest = {f: getattr(doc, f) for f in doc.__struct_fields__ if f != "actions"}
    try:
        plan = _plan_with(rest, doc.actions)
    except (PlanError, KeyError, TypeError, ValueError, AttributeError):
        return None
    signature = doc.signature if isinstance(doc.signature, str) else ""
    return replace(plan, checksum=copy_of, signature=signature)


def _canonical_json(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _parsed_checksum(plan: Plan, d: Mapping[str, Any]) -> str | None:
    """The checksum of the parsed body ``d`` (without ``checksum`` and ``signature``) when its
    part outside the actions is what :func:`body_dict` rebuilds from ``plan`` (the actions
    are known canonical); None when it is not."""
    body = {k: v for k, v in d.items() if k not in ("checksum", "signature")}
    rest = body_dict(replace(plan, actions=()))
    if _canonical_json({**body, "actions": []}) != _canonical_json(rest):
        return None
    return hashlib.sha256(_canonical_json(body).encode("utf-8")).hexdigest()


# --- the canonical (fast) action decoder ------------------------------------------------------
# Each check below mirrors one conversion of action_from_dict / action_to_dict: a value passes
# only when converting it and writing it back gives the very same JSON (type included), so a
# plan made of passing actions rebuilds to its parsed body.

_KINDS = {k.value: k for k in ActionKind}
_GENDERS = {int(g): g for g in Gender}
_ACTION_KEYS = frozenset(
    ("key", "kind", "target", "employee_id", "reason", "changes", "depends_on", "mailbox",
     "update", "new_path", "alias", "link", "password")
)  # fmt: skip
_ACTION_KEYS_GROUP = _ACTION_KEYS | {"group"}
_MAILBOX_KEYS = frozenset(("email", "name", "ext_id", "departments", "aliases", "position",
                           "tel", "mobile", "gender", "enabled"))  # fmt: skip
_LINK_KEYS = frozenset(("employee_id", "email", "generated", "disabled_since"))
_PASSWORD_KEYS = frozenset(("delivery", "change_at_login", "length"))
_GROUP_KEYS = frozenset(("key", "address", "name", "members", "posting", "allow_list", "add",
                         "remove", "retiring_since"))  # fmt: skip
_UPDATE_STR = frozenset(("name", "position", "tel", "mobile", "ext_id"))
_UPDATE_LISTS = frozenset(("departments", "aliases"))


def _strs(v: Any) -> tuple[str, ...] | None:
    """A JSON list of strings as a tuple; None for anything else."""
    if type(v) is not list:
        return None
    for x in v:
        if type(x) is not str:
            return None
    return tuple(v)


def _iso_date(v: Any) -> tuple[bool, date | None]:
    """(canonical, value) of an optional ISO date (None or "YYYY-MM-DD" exactly)."""
    if v is None:
        return True, None
    if type(v) is not str or not v:
        return False, None
    try:
        day = date.fromisoformat(v)
    except ValueError:
        return False, None
    return day.isoformat() == v, day


def _change_value(v: Any) -> tuple[bool, ChangeValue]:
    t = type(v)
    if v is None or t is str or t is int or t is bool:
        return True, cast(ChangeValue, v)
    strs = _strs(v)
    return strs is not None, strs


def _canonical_mailbox(m: Any) -> Mailbox | None:
    if type(m) is not dict or m.keys() != _MAILBOX_KEYS:
        return None
    departments, aliases = _strs(m["departments"]), _strs(m["aliases"])
    gender, enabled = m["gender"], m["enabled"]
    texts = (m["email"], m["name"], m["ext_id"], m["position"], m["tel"], m["mobile"])
    if (departments is None or aliases is None or type(gender) is not int
            or gender not in _GENDERS or type(enabled) is not bool
            or any(type(x) is not str for x in texts)):  # fmt: skip
        return None
    return Mailbox(email=m["email"], name=m["name"], ext_id=m["ext_id"],
                   departments=departments, aliases=aliases, position=m["position"],
                   tel=m["tel"], mobile=m["mobile"], gender=_GENDERS[gender],
                   enabled=enabled)  # fmt: skip


def _canonical_update(u: Any) -> UserUpdate | None:
    if type(u) is not dict:
        return None
    kwargs: dict[str, Any] = {}
    for name, v in u.items():
        if name in _UPDATE_STR:
            if type(v) is not str:
                return None
            kwargs[name] = v
        elif name in _UPDATE_LISTS:
            strs = _strs(v)
            if strs is None:
                return None
            kwargs[name] = strs
        elif name == "gender":
            if type(v) is not int or v not in _GENDERS:
                return None
            kwargs[name] = _GENDERS[v]
        elif name == "enabled":
            if type(v) is not bool:
                return None
            kwargs[name] = v
        else:
            return None
    return UserUpdate(**kwargs)


def _canonical_link(v: Any) -> LinkRecord | None:
    if type(v) is not dict or v.keys() != _LINK_KEYS:
        return None
    ok, since = _iso_date(v["disabled_since"])
    if (not ok or type(v["employee_id"]) is not str or type(v["email"]) is not str
            or type(v["generated"]) is not bool):  # fmt: skip
        return None
    return LinkRecord(employee_id=v["employee_id"], email=v["email"],
                      generated=v["generated"], disabled_since=since)  # fmt: skip


def _canonical_password(v: Any) -> PasswordPolicy | None:
    if type(v) is not dict or v.keys() != _PASSWORD_KEYS:
        return None
    if (type(v["delivery"]) is not str or type(v["change_at_login"]) is not bool
            or type(v["length"]) is not int):  # fmt: skip
        return None
    return PasswordPolicy(delivery=v["delivery"], change_at_login=v["change_at_login"],
                          length=v["length"])  # fmt: skip


def _canonical_group(v: Any) -> GroupRecord | None:
    if type(v) is not dict or v.keys() != _GROUP_KEYS:
        return None
    ok, since = _iso_date(v["retiring_since"])
    lists = [_strs(v[k]) for k in ("members", "allow_list", "add", "remove")]
    if (not ok or any(x is None for x in lists) or type(v["posting"]) is not int
            or any(type(v[k]) is not str for k in ("key", "address", "name"))):  # fmt: skip
        return None
    members, allow_list, add, remove = cast(list[tuple[str, ...]], lists)
    return GroupRecord(key=v["key"], address=v["address"], name=v["name"], members=members,
                       posting=v["posting"], allow_list=allow_list, add=add, remove=remove,
                       retiring_since=since)  # fmt: skip


def _canonical_action(d: Any) -> Action | None:
    """The action of a dict already in the exact form :func:`action_to_dict` writes for it;
    None when it is not (then :func:`action_from_dict` decodes it and the plan's checksum is
    computed from the rebuilt body)."""
    if type(d) is not dict:
        return None
    keys = d.keys()
    if keys != _ACTION_KEYS and keys != _ACTION_KEYS_GROUP:
        return None
    kind = _KINDS.get(d["kind"]) if type(d["kind"]) is str else None
    key, target, employee_id, reason = d["key"], d["target"], d["employee_id"], d["reason"]
    depends_on = _strs(d["depends_on"])
    if (kind is None or depends_on is None or type(key) is not str or type(target) is not str
            or type(employee_id) is not str or type(reason) is not str):  # fmt: skip
        return None
    raw_changes = d["changes"]
    if type(raw_changes) is not dict:
        return None
    changes: dict[str, tuple[ChangeValue, ChangeValue]] = {}
    for name, pair in raw_changes.items():
        if type(pair) is not list or len(pair) != 2:
            return None
        ok_old, old = _change_value(pair[0])
        ok_new, new = _change_value(pair[1])
        if not (ok_old and ok_new):
            return None
        changes[name] = (old, new)
    mailbox = link = password = group = update = None
    if d["mailbox"] is not None and (mailbox := _canonical_mailbox(d["mailbox"])) is None:
        return None
    if d["update"] is not None and (update := _canonical_update(d["update"])) is None:
        return None
    if d["link"] is not None and (link := _canonical_link(d["link"])) is None:
        return None
    if d["password"] is not None and (password := _canonical_password(d["password"])) is None:
        return None
    if "group" in keys and (group := _canonical_group(d["group"])) is None:
        return None
    return Action(key=key, kind=kind, target=target, employee_id=employee_id, reason=reason,
                  changes=changes, depends_on=depends_on, mailbox=mailbox, update=update,
                  new_path=d["new_path"], alias=d["alias"], link=link, password=password,
                  group=group)  # fmt: skip
