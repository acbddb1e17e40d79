"""The engine's own vocabulary: people from HR, mailboxes and departments in Exmail.

PURE: frozen dataclasses and normalisers only; no I/O, no clock, no third-party imports.
Every adapter translates into these types at the edge (connectors from HR rows, providers from
Exmail's two API generations), so the planner compares like with like.

Department paths are written the way Exmail Gen 1 writes them: segments joined by ``/``,
the root (company) node left out, so ``""`` is the root itself and ``"研发中心/平台部"`` is a
department two levels down. Membership in the root alone is an empty ``departments`` tuple.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

MAX_NAME_BYTES = 64
MAX_POSITION_BYTES = 64
MAX_ALIASES = 5
MAX_DEPARTMENTS = 20
MAX_DEPARTMENT_DEPTH = 5
MAX_DEPARTMENT_NAME_BYTES = 64
# Characters Exmail refuses in a department name, plus "/" (the Gen 1 path separator).
FORBIDDEN_DEPARTMENT_CHARS = frozenset('\\:*?"<>｜|/')

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_EMAIL_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._+\-]*@{_LABEL}(?:\.{_LABEL})+$")


class Gender(enum.IntEnum):
    """Exmail's gender codes (both generations): 0 unset, 1 male, 2 female."""

    UNSET = 0
    MALE = 1
    FEMALE = 2


class Status(enum.StrEnum):
    """A person's employment status as HR states it."""

    ACTIVE = "active"
    LEAVE = "leave"  # leave of absence: kept or disabled as the policy says
    TERMINATED = "terminated"


class AddressKind(enum.IntEnum):
    """What an address is in Exmail (``user/check`` Type, ``user/batchcheck`` type)."""

    INVALID = -1
    FREE = 0
    USER = 1
    ALIAS = 2
    GROUP = 3


@dataclass(frozen=True)
class Department:
    """A department as HR knows it.

    ``hr_id`` is present when the source has a department table (id, name, parent id); it lets
    the planner recognise a rename or move as the same department rather than delete + create.
    """

    path: str
    hr_id: str | None = None

    @property
    def name(self) -> str:
        return path_name(self.path)


@dataclass(frozen=True, slots=True)
class Person:
    """One person as HR states them: the desired side of the diff."""

    employee_id: str
    name: str
    email: str | None = None
    aliases: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    position: str = ""
    mobile: str = ""
    tel: str = ""
    gender: Gender = Gender.UNSET
    status: Status = Status.ACTIVE
    start_date: date | None = None
    end_date: date | None = None
    labels: tuple[tuple[str, str], ...] = ()
    """HR columns kept for mail groups (``[mapping.labels]``): sorted (label, value) pairs
    with non-empty values; empty for everyone when no label is mapped."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One Exmail member as read from the API: the actual side of the diff.

    ``ext_id`` is Exmail's ``extid``/``ExtId``: the engine stores the HR employee id there.
    """

    email: str
    name: str
    ext_id: str = ""
    departments: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    position: str = ""
    tel: str = ""
    mobile: str = ""
    gender: Gender = Gender.UNSET
    enabled: bool = True


@dataclass(frozen=True)
class Party:
    """A department as it exists in Exmail. ``id`` is the Gen 2 department id (None in Gen 1)."""

    path: str
    id: int | None = None


@dataclass(frozen=True)
class UserUpdate:
    """The fields of one ``update user`` call; ``None`` means "leave as it is"."""

    name: str | None = None
    gender: Gender | None = None
    position: str | None = None
    tel: str | None = None
    mobile: str | None = None
    ext_id: str | None = None
    departments: tuple[str, ...] | None = None
    aliases: tuple[str, ...] | None = None
    enabled: bool | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)


@dataclass(frozen=True)
class MailEvent:
    """A new-mail notification (Gen 1 ``listen`` or a Gen 2 ``mail/newcount`` change)."""

    email: str
    new_count: int
    version: str = ""
    mail_id: str = ""
    sender: str = ""
    subject: str = ""


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """The stored tie between an HR employee and the mailbox the engine manages for them.

    Once made, a link survives name and address changes (an address change is an update of the
    same mailbox). ``generated`` marks an address the engine generated from the template: it is
    kept on later runs so the address never changes. ``disabled_since`` starts the grace period
    after which a leaver's mailbox is deleted.
    """

    employee_id: str
    email: str
    first_seen: datetime
    disabled_since: date | None = None
    generated: bool = False


@dataclass(frozen=True)
class RowProblem:
    """Why one source record was quarantined: it is not synced and never treated as a leaver."""

    reason: str
    row: int | None = None
    field: str | None = None
    value: str | None = None
    employee_id: str | None = None

    def __str__(self) -> str:
        where = [f"row {self.row}" if self.row is not None else "", self.field or ""]
        if self.employee_id:
            where.append(f"employee {self.employee_id}")
        prefix = ", ".join(w for w in where if w)
        shown = f" (value {self.value!r})" if self.value is not None else ""
        return f"{prefix}: {self.reason}{shown}" if prefix else f"{self.reason}{shown}"


@dataclass(frozen=True)
class UnidentifiedRow:
    """A quarantined row with no usable employee id: whoever it belonged to is not gone.

    ``emails`` and ``name`` are what the row still tells (valid addresses, the name) so the
    planner can find the mailbox it may be and hold it; a row that leads nowhere holds every
    removal of people absent from HR.
    """

    row: int | None
    emails: tuple[str, ...] = ()
    name: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "emails": list(self.emails), "name": self.name}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> UnidentifiedRow:
        row = d.get("row")
        emails = d.get("emails")
        return cls(
            row=row if isinstance(row, int) else None,
            emails=tuple(str(e) for e in emails) if isinstance(emails, list) else (),
            name=str(d.get("name") or ""),
        )


@dataclass(frozen=True)
class MailboxState:
    """The whole directory as read from Exmail at one moment."""

    mailboxes: tuple[Mailbox, ...] = ()
    parties: tuple[Party, ...] = ()
    groups: tuple[str, ...] = field(default=())

    def fingerprint(self) -> str:
        """A stable hash of the state, independent of listing order.

        A saved plan records it; ``apply`` recomputes it to refuse a stale plan. Groups are
        left out: no Exmail API lists them, so they are learned by checking addresses while
        planning and a later read could never see them again to compare.
        """
        # The canonical JSON of {"mailboxes": [rows sorted by address], "parties": [...]} is
        # hashed a slice of rows at a time: the whole text (tens of MB at 100,000 mailboxes)
        # and a list of every row are never built, which was the planning run's memory peak.
        # The usual zero or one department and alias need no sort.
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        order = sorted(self.mailboxes, key=lambda m: str(m.email))  # stable, as before
        digest = hashlib.sha256(b'{"mailboxes":[')
        for start in range(0, len(order), _FINGERPRINT_SLICE):
            rows = [
                [
                    m.email,
                    m.name,
                    m.ext_id,
                    sorted(m.departments) if len(m.departments) > 1 else list(m.departments),
                    sorted(m.aliases) if len(m.aliases) > 1 else list(m.aliases),
                    m.position,
                    m.tel,
                    m.mobile,
                    int(m.gender),
                    m.enabled,
                ]
                for m in order[start : start + _FINGERPRINT_SLICE]
            ]
            text = dumps(rows)[1:-1]  # the rows without the list's brackets
            digest.update((text if start == 0 else "," + text).encode("utf-8"))
        parties = dumps(sorted(p.path for p in self.parties))
        digest.update(('],"parties":' + parties + "}").encode("utf-8"))
        return digest.hexdigest()


_FINGERPRINT_SLICE = 2000
"""Mailboxes per slice of :meth:`MailboxState.fingerprint`'s canonical JSON."""


# --- normalisers -------------------------------------------------------------------------


def normalise_email(value: str) -> str:
    """Addresses compare case-insensitively and are stored lower-case."""
    return value.strip().lower()


def is_valid_email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value))


def email_domain(value: str) -> str:
    return value.rpartition("@")[2].lower()


def normalise_path(value: str) -> str:
    """``/A/ B //C/`` -> ``A/B/C``: segments stripped, empty segments dropped."""
    return "/".join(seg.strip() for seg in value.split("/") if seg.strip())


def path_segments(path: str) -> tuple[str, ...]:
    return tuple(seg for seg in path.split("/") if seg)


def path_name(path: str) -> str:
    return path.rpartition("/")[2]


def parent_path(path: str) -> str:
    return path.rpartition("/")[0]


def path_depth(path: str) -> int:
    return len(path_segments(path))


def ancestors(path: str) -> tuple[str, ...]:
    """Proper ancestors of a path, nearest the root first (the root ``""`` excluded)."""
    segs = path_segments(path)
    return tuple("/".join(segs[:i]) for i in range(1, len(segs)))


def is_under(path: str, ancestor: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(ancestor + "/")


def byte_length(value: str) -> int:
    """Exmail counts name and position lengths in UTF-8 bytes (a Chinese character is 3)."""
    return len(value.encode("utf-8"))


def department_name_problem(name: str) -> str | None:
    """Why Exmail would refuse this department name, or None when it is fine."""
    if not name:
        return "is empty"
    if byte_length(name) > MAX_DEPARTMENT_NAME_BYTES:
        return f"is {byte_length(name)} bytes long (at most {MAX_DEPARTMENT_NAME_BYTES})"
    bad = sorted(set(name) & FORBIDDEN_DEPARTMENT_CHARS)
    if bad:
        return "contains forbidden characters " + " ".join(bad)
    return None


def sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
