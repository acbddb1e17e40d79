"""The plan's JSON codec and checksums: :class:`~syncengine.plan.Plan` to and from the
dicts of its file, and the canonical JSON its checksum and content key hash.

PURE: no I/O, no clock. Split out of :mod:`syncengine.plan`, whose public names (the
``*_to_dict`` / ``*_from_dict`` functions, :func:`compute_checksum`, :func:`content_key`)
stay importable from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any, cast

from syncengine.domain import Gender, Mailbox, UserUpdate
from syncengine.plan import (
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
    plan = Plan(
        schema_version=int(d["schema_version"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        config_fingerprint=str(d["config_fingerprint"]),
        state_fingerprint=str(d["state_fingerprint"]),
        tenant=str(d.get("tenant") or ""),
        actions=tuple(action_from_dict(a) for a in d["actions"]),
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
    return replace(plan, checksum=compute_checksum(plan))
