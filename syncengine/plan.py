"""The Plan: every change the engine decided on, as a reviewable, checksummed artifact.

PURE: dataclasses, JSON (de)serialisation and the checksum; no I/O, no clock.

A plan is what an admin reads, keeps and approves, and what the executor applies. It holds an
ordered list of :class:`Action` s (a valid order: every action comes after the actions named in
its ``depends_on``), the conflicts the planner refused to guess about, the mailboxes it does not
own, the quarantined employees, and the findings of the safety brakes.

Every action has these fields:

``key``
    Unique in the plan, stable across runs for the same change: ``"<kind>:<target>"``
    (``"link:<employee_id>"`` / ``"unlink:<employee_id>"`` for the two link-only kinds).
``kind``
    One of :class:`ActionKind` (below).
``target``
    The mailbox's primary address *at the time the action runs* (for users) or the department
    path (for departments).
``employee_id``
    The HR employee the action is for ("" for department actions and unmanaged mailboxes).
``reason``
    One human sentence: why the engine wants this.
``changes``
    Field-level diffs ``{field: (old, new)}``; values are JSON scalars or tuples of strings.
``depends_on``
    Keys of actions that must have succeeded first (if one failed, this one is skipped).
``mailbox`` / ``update`` / ``new_path`` / ``alias`` / ``link`` / ``password``
    The data the executor needs, present only for the kinds that use it.

Action kinds and what the executor does for each:

``create_department``
    ``provider.create_department(target)``. Its parent exists or is created by an earlier
    action named in ``depends_on``.
``move_department``
    ``provider.move_department(target, new_path)``: a rename and/or move of an HR department
    (same HR id, new path); members and children move with it.
``delete_department``
    ``provider.delete_department(target)``: an empty managed department, after its children are
    deleted and its members moved out (both named in ``depends_on``).
``create_user``
    ``provider.create_user(mailbox, password=<generated at apply>, change_password_at_login=
    password.change_at_login)``. ``mailbox`` is the complete member to create (``ext_id`` is
    the employee id). The password is NEVER in the plan: ``password`` only says how it is made
    and the delivery channel (``password.delivery``) through which the executor hands it over.
    Then store ``link``.
``update_user``
    ``provider.update_user(target, update)``; ``update`` holds only the fields that change
    (lists replace the whole list). Then store ``link`` when present (e.g. a mailbox adopted
    by address match gets its ``ext_id`` set and a link stored).
``add_alias``
    ``provider.update_user(target, update)`` with ``update.aliases`` = the current aliases plus
    ``alias`` (the new primary address): the first half of an address change.
``swap_primary``
    ``provider.swap_alias(target, alias)``: ``alias`` becomes the primary address, ``target``
    stays as an alias. Depends on the ``add_alias`` (when the alias was not already there).
    Then store ``link`` (its email is the new address).
``enable_user``
    ``provider.update_user(target, update)`` with ``enabled=True`` (a rehire or a return from
    leave); then store ``link`` (``disabled_since`` cleared).
``disable_user``
    ``provider.update_user(target, update)`` with ``enabled=False``; then store ``link``, whose
    ``disabled_since`` (the plan's day) starts the grace period before deletion.
``delete_user``
    ``provider.delete_user(target)`` after the grace period; then remove the employee's link.
``link``
    No Exmail call: store ``link`` (adopting a mailbox that already matches, recording where a
    grace period starts, or following an address that moved outside the engine).
``unlink``
    No Exmail call: remove the stored link of ``employee_id`` (the employee has left, and the
    linked mailbox no longer exists or now belongs to someone who is in HR).

Storing a link means: upsert the row for ``link.employee_id`` with ``email``, ``generated`` and
``disabled_since``; ``first_seen`` is kept when the row exists, else set to the apply time.

The checksum is the sha256 of the canonical JSON of everything in the plan except the checksum
and the signature (actions, fingerprints, conflicts, brake findings...), so an applied plan is
provably the reviewed one. Anyone can recompute an unkeyed hash, so the engine also signs the
checksum with a key it keeps outside the plan (HMAC-SHA256, :func:`signature_for`; the key is
handled by :mod:`syncengine.signing`): an edited file whose checksum was recomputed is still
refused, because its signature does not match.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from syncengine.domain import Mailbox, UserUpdate
from syncengine.errors import PlanBlockedError, PlanError

SCHEMA_VERSION = 1

CHECKSUM_PREFIX_MIN = 12
"""The shortest checksum prefix accepted where a reviewer types what the page shows."""

ChangeValue = str | int | bool | None | tuple[str, ...]
"""An old or new value in a field diff."""


class ActionKind(enum.StrEnum):
    """What an action does; the docstring of :mod:`syncengine.plan` details each."""

    CREATE_DEPARTMENT = "create_department"
    MOVE_DEPARTMENT = "move_department"
    CREATE_USER = "create_user"
    UPDATE_USER = "update_user"
    ADD_ALIAS = "add_alias"
    SWAP_PRIMARY = "swap_primary"
    ENABLE_USER = "enable_user"
    LINK = "link"
    DISABLE_USER = "disable_user"
    DELETE_USER = "delete_user"
    UNLINK = "unlink"
    DELETE_DEPARTMENT = "delete_department"
    CREATE_GROUP = "create_group"
    UPDATE_GROUP = "update_group"
    DELETE_GROUP = "delete_group"
    ADOPT_GROUP = "adopt_group"  # take over a group that exists in Exmail (Gen 2 only)


GROUP_KINDS = frozenset(
    {
        ActionKind.CREATE_GROUP,
        ActionKind.UPDATE_GROUP,
        ActionKind.DELETE_GROUP,
        ActionKind.ADOPT_GROUP,
    }
)
"""Mail group kinds (:mod:`syncengine.groups`): ``group`` holds the ledger row to store."""


REMOVAL_KINDS = frozenset({ActionKind.DISABLE_USER, ActionKind.DELETE_USER})
"""Kinds that take a mailbox away from someone: what the removal brakes count."""

UPDATE_KINDS = frozenset(
    {ActionKind.UPDATE_USER, ActionKind.ADD_ALIAS, ActionKind.SWAP_PRIMARY, ActionKind.ENABLE_USER}
)
"""Kinds that change an existing mailbox: what the update brake counts."""


@dataclass(frozen=True)
class LinkRecord:
    """The identity link the executor stores after the action succeeds (see module doc)."""

    employee_id: str
    email: str
    generated: bool = False
    disabled_since: date | None = None


@dataclass(frozen=True)
class GroupRecord:
    """A mail group as the engine owns it once the action succeeded (the ledger row), and
    for ``update_group`` and ``adopt_group`` the minimal member change (``add`` /
    ``remove``) to make."""

    key: str
    address: str
    name: str
    members: tuple[str, ...]
    posting: int = 0
    allow_list: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    retiring_since: date | None = None


@dataclass(frozen=True)
class PasswordPolicy:
    """How the initial password of a new mailbox is handled. Never the password itself.

    The executor generates a strong random password at apply time, sends it to Exmail, hands it
    over through ``delivery`` (a channel named in the config) and forgets it.
    """

    delivery: str
    change_at_login: bool = True
    length: int = 16


@dataclass(frozen=True)
class Action:
    """One change; see the module docstring for every kind's fields and meaning."""

    key: str
    kind: ActionKind
    target: str
    reason: str
    employee_id: str = ""
    changes: Mapping[str, tuple[ChangeValue, ChangeValue]] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    mailbox: Mailbox | None = None
    update: UserUpdate | None = None
    new_path: str | None = None
    alias: str | None = None
    link: LinkRecord | None = None
    password: PasswordPolicy | None = None
    group: GroupRecord | None = None


_ADOPT_WRITES = frozenset({"added", "removed", "name", "posting", "allow_list"})


def adoption_writes(action: Action) -> bool:
    """Whether an ``adopt_group`` action changes the group in Exmail (else only the ledger
    takes it over: no call)."""
    return not _ADOPT_WRITES.isdisjoint(action.changes)


def action_key(kind: ActionKind, target: str) -> str:
    """The stable key of an action: unique because a plan does one thing of a kind per target."""
    return f"{kind.value}:{target}"


class ConflictKind(enum.StrEnum):
    """Why the planner refused to act for some people (see :class:`Conflict`)."""

    MAILBOX_CLAIMED_TWICE = "mailbox_claimed_twice"  # two people match one mailbox
    PERSON_MATCHES_TWO = "person_matches_two"  # one person matches two mailboxes
    FOREIGN_EXT_ID = "foreign_ext_id"  # matched by address, but the mailbox has another ext_id
    ADDRESS_TAKEN = "address_taken"  # the wanted address belongs to another mailbox or group
    ALIAS_TAKEN = "alias_taken"  # an HR alias belongs to someone else: that alias is skipped
    TOO_MANY_ALIASES = "too_many_aliases"  # over Exmail's 5: the extra aliases are skipped
    HOOK_HELD = "hook_held"  # a hook's hire/termination kept against an older HR export
    GROUP_ADDRESS_TAKEN = "group_address_taken"  # a department group's address is not free
    GROUP_INVALID = "group_invalid"  # a department group's address or name cannot be made


BLOCKING_CONFLICTS = frozenset(
    {
        ConflictKind.MAILBOX_CLAIMED_TWICE,
        ConflictKind.PERSON_MATCHES_TWO,
        ConflictKind.FOREIGN_EXT_ID,
        ConflictKind.ADDRESS_TAKEN,
    }
)
"""Conflicts whose people get no actions at all (the alias ones only drop those aliases)."""


@dataclass(frozen=True)
class Conflict:
    """Something the planner will not guess about; an admin must resolve it in HR or Exmail."""

    kind: ConflictKind
    message: str
    employee_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    """What the operator granted after reviewing a blocked plan (``--allow-removals N``,
    ``--allow-updates N``, ``--force``)."""

    allow_removals: int | None = None
    allow_updates: int | None = None
    force: bool = False


class ReleaseKind(enum.StrEnum):
    ALLOW_REMOVALS = "allow_removals"
    ALLOW_UPDATES = "allow_updates"
    FORCE = "force"


@dataclass(frozen=True)
class BlockedReason:
    """One brake that fired. ``release`` and ``needed`` say what lifts it: ``--allow-removals
    N`` / ``--allow-updates N`` with N >= ``needed``, or ``--force`` (which lifts every brake)."""

    brake: str
    message: str
    release: ReleaseKind
    needed: int = 0

    def released_by(self, release: Release | None) -> bool:
        if release is None:
            return False
        if release.force:
            return True
        if self.release is ReleaseKind.ALLOW_REMOVALS:
            return release.allow_removals is not None and release.allow_removals >= self.needed
        if self.release is ReleaseKind.ALLOW_UPDATES:
            return release.allow_updates is not None and release.allow_updates >= self.needed
        return False

    @property
    def how_to_release(self) -> str:
        if self.release is ReleaseKind.ALLOW_REMOVALS:
            return f"review the plan, then pass --allow-removals {self.needed} (or --force)"
        if self.release is ReleaseKind.ALLOW_UPDATES:
            return f"review the plan, then pass --allow-updates {self.needed} (or --force)"
        return "review the plan, then pass --force"


@dataclass(frozen=True)
class Held:
    """A mailbox the plan holds because an HR row that may be its owner's has a problem.

    Held mailboxes are never disabled, deleted or adopted by anyone, whatever
    ``disable_unmanaged`` says; they are listed "held: HR row has a problem" with the reason.
    ``employee_id`` is "" when the row had no usable employee id.
    """

    email: str
    employee_id: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """The whole decision of one planning run. Build it through :func:`make_plan` or
    :meth:`from_json`, which validate the order and fill ``summary`` and ``checksum``."""

    created_at: datetime
    config_fingerprint: str
    state_fingerprint: str
    actions: tuple[Action, ...]
    conflicts: tuple[Conflict, ...] = ()
    unmanaged: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()
    blocked_reasons: tuple[BlockedReason, ...] = ()
    explanations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    summary: Mapping[str, int] = field(default_factory=dict)
    held: tuple[Held, ...] = ()
    checksum: str = ""
    schema_version: int = SCHEMA_VERSION
    signature: str = ""
    tenant: str = ""  # the tenant (corp) it was made for, in a multi-tenant config

    # --- questions ---------------------------------------------------------------------------

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def count(self, *kinds: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind in kinds)

    @property
    def removal_count(self) -> int:
        return self.count(*REMOVAL_KINDS)

    @property
    def update_count(self) -> int:
        return self.count(*UPDATE_KINDS)

    def unreleased(self, release: Release | None = None) -> tuple[BlockedReason, ...]:
        """The brakes that ``release`` does not lift."""
        return tuple(r for r in self.blocked_reasons if not r.released_by(release))

    def is_blocked(self, release: Release | None = None) -> bool:
        return bool(self.unreleased(release))

    def raise_if_unsafe(self, release: Release | None = None) -> None:
        """Refuse a plan whose brakes the given release does not lift (octoDNS-style)."""
        left = self.unreleased(release)
        if left:
            text = "; ".join(f"{r.message} — {r.how_to_release}" for r in left)
            raise PlanBlockedError(
                f"plan blocked by {len(left)} brake(s): {text}",
                where=f"plan {self.checksum[:12]}",
            )

    def action(self, key: str) -> Action:
        for a in self.actions:
            if a.key == key:
                return a
        raise KeyError(key)

    def for_employee(self, employee_id: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.employee_id == employee_id)

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        from syncengine.plan_codec import body_dict

        body = body_dict(self)
        body["checksum"] = self.checksum
        body["signature"] = self.signature
        return body

    def to_json(self) -> str:
        """The plan file: indented, key-sorted UTF-8 JSON; ``from_json`` reads it back equal.

        Made once per plan (the plan is frozen): saving it and writing the file share the text,
        and indented JSON is made by the slow pure-Python encoder."""
        text = self.__dict__.get("_json_text")
        if not isinstance(text, str):
            text = json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, indent=2) + "\n"
            object.__setattr__(self, "_json_text", text)
        return text

    @classmethod
    def from_saved_copy(cls, data: str | bytes, checksum: str) -> Plan | None:
        """The plan of a file whose bytes are known to be the document of the saved plan
        ``checksum`` (their sha256 is the stored one's, see ``Repository.plan_of_document``).
        That checksum was computed from the plan itself when it was saved, so when the file
        states it, it is not computed again: the file is decoded straight into the plan's
        types (:func:`~syncengine.plan_codec.plan_from_saved_copy`). None when the file does
        not state it or does not decode so: read it with :meth:`from_json`, as any file."""
        from syncengine.plan_codec import plan_from_saved_copy

        return plan_from_saved_copy(data, checksum)

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        """Read a plan file; refuse a wrong schema version or a checksum that does not match."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                f"not a plan file (invalid JSON: {exc.msg} at line {exc.lineno})",
                where=source,
                hint="pass the file written by 'syncengine plan --out FILE'",
            ) from None
        if not isinstance(data, dict):
            raise PlanError("not a plan file (top level is not an object)", where=source)
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "plan") -> Plan:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PlanError(
                f"plan schema version {version!r} is not the supported version {SCHEMA_VERSION}",
                where=source,
                hint="make a new plan with this version of syncengine",
            )
        from syncengine.plan_codec import plan_from_dict

        try:
            plan = plan_from_dict(data)
        except PlanError as exc:
            raise PlanError(exc.message, where=source, hint="make a new plan") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(
                f"plan file is malformed ({type(exc).__name__}: {exc})",
                where=source,
                hint="make a new plan; plan files are not meant to be edited",
            ) from None
        stored = data.get("checksum")
        if stored != plan.checksum:
            raise PlanError(
                f"checksum mismatch: the file says {stored!r} but its content hashes to "
                f"{plan.checksum!r}; the plan was changed after it was made",
                where=source,
                hint="make a new plan and review it again",
            )
        signature = data.get("signature", "")
        return replace(plan, signature=signature if isinstance(signature, str) else "")


# --- building ------------------------------------------------------------------------------


def make_plan(
    *,
    created_at: datetime,
    config_fingerprint: str,
    state_fingerprint: str,
    actions: Sequence[Action],
    conflicts: Iterable[Conflict] = (),
    unmanaged: Iterable[str] = (),
    protected: Iterable[str] = (),
    quarantined: Iterable[str] = (),
    blocked_reasons: Iterable[BlockedReason] = (),
    explanations: Mapping[str, Sequence[str]] | None = None,
    held: Iterable[Held] = (),
) -> Plan:
    """A validated plan with its summary counts and checksum filled in."""
    validate_order(actions)
    counts = Counter(a.kind.value for a in actions)
    # adopt_group (added after the golden plans were recorded) is counted only when present,
    # like "held" below: a plan that does not adopt keeps its JSON and checksum.
    summary = {
        k.value: counts.get(k.value, 0)
        for k in ActionKind
        if k is not ActionKind.ADOPT_GROUP or k.value in counts
    }
    summary["total"] = len(actions)
    plan = Plan(
        created_at=created_at,
        config_fingerprint=config_fingerprint,
        state_fingerprint=state_fingerprint,
        actions=tuple(actions),
        conflicts=tuple(conflicts),
        unmanaged=tuple(unmanaged),
        protected=tuple(protected),
        quarantined=tuple(quarantined),
        blocked_reasons=tuple(blocked_reasons),
        explanations={k: tuple(v) for k, v in sorted((explanations or {}).items())},
        summary={},
        held=tuple(sorted(held, key=lambda h: (h.email, h.employee_id))),
    )
    summary["conflicts"] = len(plan.conflicts)
    summary["unmanaged"] = len(plan.unmanaged)
    summary["quarantined"] = len(plan.quarantined)
    summary["blocked"] = len(plan.blocked_reasons)
    summary["protected"] = len(plan.protected)
    if plan.held:
        summary["held"] = len(plan.held)
    plan = _replace(plan, summary=summary)
    return _replace(plan, checksum=compute_checksum(plan))


def validate_order(actions: Sequence[Action]) -> None:
    """Keys are unique and every dependency comes earlier in the list."""
    seen: set[str] = set()
    for a in actions:
        if a.key in seen:
            raise PlanError(f"action key {a.key!r} appears twice in the plan")
        missing = [d for d in a.depends_on if d not in seen]
        if missing:
            raise PlanError(
                f"action {a.key!r} depends on {missing} which do not come before it in the plan"
            )
        seen.add(a.key)


def compute_checksum(plan: Plan) -> str:
    """sha256 of the canonical JSON of the plan without its checksum (see
    :mod:`syncengine.plan_codec`)."""
    from syncengine import plan_codec

    return plan_codec.compute_checksum(plan)


def content_key(plan: Plan) -> str:
    """sha256 of what the plan does, without its time (see
    :func:`syncengine.plan_codec.content_key`): an approval covers the same changes planned
    again against the same directory."""
    from syncengine import plan_codec

    return plan_codec.content_key(plan)


def signature_for(checksum: str, key: bytes) -> str:
    """HMAC-SHA256 of the checksum under the engine's plan key (hex)."""
    return hmac.new(key, checksum.encode("ascii"), hashlib.sha256).hexdigest()


def for_tenant(plan: Plan, tenant: str | None) -> Plan:
    """The plan marked as made for ``tenant`` (its checksum covers the mark); unchanged for a
    single-company config."""
    if not tenant or plan.tenant == tenant:
        return plan
    marked = _replace(plan, tenant=tenant, signature="")
    return _replace(marked, checksum=compute_checksum(marked))


def signed(plan: Plan, key: bytes) -> Plan:
    """The plan with its signature under ``key``."""
    return replace(plan, signature=signature_for(plan.checksum, key))


def signature_ok(plan: Plan, key: bytes) -> bool:
    """Whether the plan's signature is the one ``key`` gives its checksum (constant time)."""
    return bool(plan.signature) and hmac.compare_digest(
        plan.signature, signature_for(plan.checksum, key)
    )


def checksum_prefix_error(given: str) -> str | None:
    """Why ``given`` cannot be a checksum prefix (None when it can): hex, 12 to 64 chars."""
    text = given.strip().lower()
    if not re.fullmatch(r"[0-9a-f]*", text):
        return f"{given.strip()!r} is not hexadecimal (a checksum has only 0-9 and a-f)"
    if len(text) < CHECKSUM_PREFIX_MIN:
        return (
            f"{given.strip()!r} is too short: give at least {CHECKSUM_PREFIX_MIN} characters of "
            "the checksum (as the plan shows it)"
        )
    if len(text) > 64:
        return f"{given.strip()!r} is longer than a checksum (64 characters)"
    return None


def _replace(plan: Plan, **changes: Any) -> Plan:
    return replace(plan, **changes)


# The JSON codec lives in syncengine.plan_codec (it imports the types above); its public
# functions stay importable from here.
_CODEC_NAMES = frozenset(
    {"mailbox_to_dict", "mailbox_from_dict", "update_to_dict", "update_from_dict",
     "action_to_dict", "action_from_dict"}
)  # fmt: skip

if TYPE_CHECKING:
    from syncengine.plan_codec import action_from_dict as action_from_dict
    from syncengine.plan_codec import action_to_dict as action_to_dict
    from syncengine.plan_codec import mailbox_from_dict as mailbox_from_dict
    from syncengine.plan_codec import mailbox_to_dict as mailbox_to_dict
    from syncengine.plan_codec import update_from_dict as update_from_dict
    from syncengine.plan_codec import update_to_dict as update_to_dict


def __getattr__(name: str) -> Any:
    if name in _CODEC_NAMES:
        from syncengine import plan_codec

        return getattr(plan_codec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
