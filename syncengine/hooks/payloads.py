"""The HR hook payloads: validation of a pushed body, and how events fold into one person.

PURE: no I/O, no clock (``today`` is an argument). Three kinds of event, one JSON object each
(``samples/hooks/*.json`` has an example of every kind)::

    {"kind": "upsert", "delivery_id": "hr-000123",
     "person": {"工号": "E0107", "姓名": "王小明", ...}}     # HR's own field names
    {"kind": "terminate", "delivery_id": "hr-000124",
     "employee_id": "E0107", "end_date": "2026-12-31"}      # end_date optional (today)
    {"kind": "department_change", "delivery_id": "hr-000125",
     "employee_id": "E0107", "departments": ["103"]}        # values as in HR's column

``delivery_id`` may come in the body or in the ``X-Syncengine-Delivery`` header (equal when
both are given); it makes a resent event recognisable as a replay.

How events combine with the nightly snapshot (see :func:`fold`): the worker starts from the
employee's record in the current snapshot and applies the events received since that snapshot
was taken, oldest first. An ``upsert`` replaces the record (mapped through the same
``[mapping]`` as the nightly run); ``terminate`` sets the end date and, once it is today or
past, the status terminated; ``department_change`` replaces the departments. The next nightly
ingest is again the whole truth: HR's export must carry the same change by then.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from syncengine.domain import Person, Status

KINDS = ("upsert", "terminate", "department_change")
MAX_ID = 128
MAX_DEPTH = 8
"""Deepest nesting of arrays and objects a body may have (an event needs 3: body, person,
a list value). Deeper bodies are refused before anything recurses over them."""
MAX_NUMBER_DIGITS = 40
"""Longest number literal accepted (a phone or an employee id sent as a number fits)."""


class PayloadError(ValueError):
    """The body is not a valid hook event; ``field`` names the bad part (``""``: the body)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)] | None = None


class UpsertEvent(_Base):
    """A hire or a change: the whole person record in the HR source's field names."""

    kind: Literal["upsert"]
    employee_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)] | None = None
    person: dict[str, Any] = Field(min_length=1)


class TerminateEvent(_Base):
    """A leaver: from ``end_date`` (default: the day it is processed) the mailbox is disabled."""

    kind: Literal["terminate"]
    employee_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
    end_date: date | None = None


class DepartmentChangeEvent(_Base):
    """A move: the person's departments, as the HR source's department column holds them."""

    kind: Literal["department_change"]
    employee_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
    departments: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(max_length=20)


HookPayload = Annotated[
    UpsertEvent | TerminateEvent | DepartmentChangeEvent, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[UpsertEvent | TerminateEvent | DepartmentChangeEvent] = TypeAdapter(
    HookPayload
)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in KINDS]
    return ".".join(parts)


class _BadNumber(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _BadNumber(f"a number of {len(text)} digits (at most {MAX_NUMBER_DIGITS}); "
                         "send long values as strings")  # fmt: skip
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS + 10:
        raise _BadNumber(f"a number of {len(text)} characters (at most "
                         f"{MAX_NUMBER_DIGITS + 10}); send long values as strings")  # fmt: skip
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"{text} is out of range for a number")
    return value


def _refuse_constant(text: str) -> Any:
    raise _BadNumber(f"{text} is not a JSON value")


def _nesting_beyond(body: bytes, limit: int) -> int | None:
    """The offset where ``body`` nests arrays/objects deeper than ``limit``, else None.

    A byte scan that skips strings, so neither the decoder nor anything after it recurses
    over a hostile body (``[[[[...`` thousands deep would otherwise end in RecursionError)."""
    depth = 0
    in_string = escaped = False
    for offset, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return offset
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return None


def parse_event(
    body: bytes, header_delivery: str | None = None
) -> UpsertEvent | TerminateEvent | DepartmentChangeEvent:
    """The validated event, its ``delivery_id`` filled from the header when the body has
    none. Raises :class:`PayloadError` naming the first bad field."""
    too_deep = _nesting_beyond(body, MAX_DEPTH)
    if too_deep is not None:
        raise PayloadError("", f"the body nests arrays/objects deeper than {MAX_DEPTH} levels "
                           f"(at byte {too_deep})")  # fmt: skip
    try:
        data = json.loads(body, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_refuse_constant)  # fmt: skip
    except _BadNumber as exc:
        raise PayloadError("", str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("", f"the body is not JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:  # any other refusal of the JSON decoder
        raise PayloadError("", f"the body is not usable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise PayloadError("", "the body must be a JSON object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise PayloadError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    try:
        event = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "is required"
        raise PayloadError(_location(tuple(err["loc"])), message) from None
    header = header_delivery.strip() if header_delivery else None
    if header and len(header) > MAX_ID:
        raise PayloadError("X-Syncengine-Delivery", f"longer than {MAX_ID} characters")
    if event.delivery_id and header and event.delivery_id != header:
        raise PayloadError("delivery_id", "differs from the X-Syncengine-Delivery header")
    delivery = event.delivery_id or header
    if not delivery:
        raise PayloadError(
            "delivery_id", "is required (in the body or the X-Syncengine-Delivery header)"
        )
    return event.model_copy(update={"delivery_id": delivery})


# --- folding events into a person ---------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One stored event, resolved: an upsert's mapped person, a terminate's end date, a
    department change's department paths."""

    kind: str
    person: Person | None = None
    end_date: date | None = None
    departments: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Folded:
    """The employee's record after the events (None: HR states nothing about them, so a
    linked mailbox is a leaver), notes on events that changed nothing, and ``problem`` when
    the events cannot be carried out (the events then fail with it)."""

    person: Person | None
    notes: tuple[str, ...] = ()
    problem: str | None = None


def fold(base: Person | None, changes: Sequence[Change], today: date) -> Folded:
    """Apply the events to the snapshot's record, oldest first (see the module docstring)."""
    person = base
    notes: list[str] = []
    for change in changes:
        if change.kind == "upsert" and change.person is not None:
            person = change.person
        elif change.kind == "terminate":
            end = change.end_date or today
            if person is None:
                notes.append("terminate: not in the HR snapshot; a linked mailbox is a leaver")
                continue
            status = Status.TERMINATED if end <= today else person.status
            person = replace(person, end_date=end, status=status)
        elif change.kind == "department_change":
            if person is None:
                return Folded(None, tuple(notes), "department_change for an employee in "
                              "neither the HR snapshot nor an earlier upsert; send an upsert "
                              "with the whole record")  # fmt: skip
            person = replace(person, departments=change.departments or ())
    return Folded(person, tuple(notes))
