"""Raw HR records to validated Persons and Departments, with every problem collected.

PURE: no I/O, no clock; records in, a :class:`MappingResult` out. Mapping never raises on
the *content* of a record: whatever a row holds, the worst outcome is a
:class:`~syncengine.domain.RowProblem` naming the row, the field, the value and the reason,
and the row's employee being *quarantined*. A quarantined employee is not synced and, just as
important, is never treated as a leaver: ``MappingResult.quarantined`` carries their ids so the
planner leaves their mailboxes alone until HR fixes the row.

Departments come either from the people rows (paths such as ``研发中心/平台部``, one or several
per person) or from a separate department table (id, name, parent id), built by
:func:`build_department_table`; then the people's department values are ids or names, paths
are resolved by walking up the parents, and each Department keeps its HR id so the planner can
tell a rename or a move from a delete and a create.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syncengine.connectors.base import ERROR_KEY, RAW_KEY, ROW_KEY
from syncengine.connectors.config import (
    DepartmentsConfig,
    MappingConfig,
    template_fields,
)
from syncengine.connectors.department_table import DepartmentTable, build_department_table
from syncengine.connectors.fields import (
    MISSING,
    department_path,
    field_value,
    field_values,
    finish_problems,
    hold_back_shared_addresses,
    lookup,
    normalise_mobile,
    parse_date,
    problem_key,
    row_number,
    text_value,
)
from syncengine.connectors.person_builder import BuiltRow, PersonBuilder
from syncengine.domain import (
    Department,
    Person,
    RowProblem,
    UnidentifiedRow,
    parent_path,
)


@dataclass(frozen=True)
class MappingResult:
    """What one source yields once mapped and checked.

    ``problems`` quarantine rows (their employees are in ``quarantined`` when the row had a
    usable employee id); ``notes`` are informational (an identical duplicate kept once) and
    quarantine nothing. ``missing_fields`` lists configured source fields no record had at all:
    usually a misspelt column name in ``[mapping]``.
    """

    people: tuple[Person, ...]
    departments: tuple[Department, ...]
    problems: tuple[RowProblem, ...]
    quarantined: frozenset[str]
    rows: int
    notes: tuple[RowProblem, ...] = ()
    missing_fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    unidentified: tuple[UnidentifiedRow, ...] = ()

    def held_reasons(self) -> dict[str, str]:
        """Each quarantined employee's first problem, as the plan shows why it holds them."""
        out: dict[str, str] = {}
        for p in self.problems:
            if p.employee_id and p.employee_id not in out:
                out[p.employee_id] = f"{p.field}: {p.reason}" if p.field else p.reason
        return out

    def department_parents(self) -> dict[str, str | None]:
        """Each department's parent HR id (None at the top or without a department table)."""
        hr_ids = {d.path: d.hr_id for d in self.departments}
        return {d.path: hr_ids.get(parent_path(d.path)) for d in self.departments}

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "people": len(self.people),
            "departments": len(self.departments),
            "quarantined": len(self.quarantined),
            "problems": len(self.problems),
        }


def map_people(
    records: Iterable[Mapping[str, Any]],
    config: MappingConfig,
    *,
    department_table: DepartmentTable | None = None,
    reference: str = "id",
    domains: Iterable[str] = (),
) -> MappingResult:
    """Map and check every record; never raises on a record's content.

    ``domains``: the ``[exmail] domains``; an address or alias outside them is quarantined
    (none given: not checked).
    """
    builder = PersonBuilder(config, department_table, reference, domains)
    specs = [*config.specs().values(), *config.labels.values()]
    wanted = {name for spec in specs for name in spec.source_fields()}
    seen_fields: set[str] = set()
    first: dict[str, BuiltRow] = {}
    dupes: dict[str, list[BuiltRow]] = {}
    loose: list[RowProblem] = []
    unidentified: list[UnidentifiedRow] = []
    count = 0
    columns: tuple[str, ...] = ()
    for index, record in enumerate(records):
        count += 1
        if count == 1:
            columns = tuple(str(k) for k in record if k not in (ROW_KEY, ERROR_KEY, RAW_KEY))
        if len(seen_fields) < len(wanted):
            seen_fields.update(n for n in wanted if lookup(record, n) is not MISSING)
        row = row_number(record, index)
        employee_id, person, probs = builder.build(record, row)
        if not employee_id:
            loose.extend(probs)
            unidentified.append(builder.hints(record, row))
            continue
        if ERROR_KEY in record:
            # The reader saw damage: values may sit in the wrong columns, so the id may be
            # garbage; the row also holds whatever its addresses or name lead to.
            unidentified.append(builder.hints(record, row, everywhere=True))
        entry = BuiltRow(row, person, probs)
        if employee_id in first:
            dupes.setdefault(employee_id, []).append(entry)
        else:
            first[employee_id] = entry

    problems: list[RowProblem] = list(loose)
    notes: list[RowProblem] = []
    quarantined: set[str] = set()
    people: list[Person] = []
    id_label = builder.label("employee_id")
    for employee_id, head in first.items():
        entries = [head, *dupes.get(employee_id, ())]
        if len(entries) > 1:
            rows = [e.row for e in entries]
            persons = {e.person for e in entries}
            if any(e.problems for e in entries) or len(persons) != 1:
                for e in entries:
                    others = ", ".join(str(r) for r in rows if r != e.row)
                    e.problems.append(
                        RowProblem(
                            reason=f"duplicate employee id with different data (also in row "
                            f"{others}); every row of this employee is held back",
                            row=e.row,
                            field=id_label,
                            value=employee_id,
                            employee_id=employee_id,
                        )
                    )
            else:
                for e in entries[1:]:
                    notes.append(
                        RowProblem(
                            reason=f"identical duplicate of row {head.row}; kept once",
                            row=e.row,
                            field=id_label,
                            value=employee_id,
                            employee_id=employee_id,
                        )
                    )
                entries = [head]
        if any(e.problems for e in entries):
            quarantined.add(employee_id)
            for e in entries:
                problems.extend(e.problems)
        elif head.person is not None:
            people.append(head.person)

    people = hold_back_shared_addresses(
        people, {k: r.row for k, r in first.items()}, builder.label, quarantined, problems
    )

    if department_table is not None:
        departments = department_table.departments
        problems.extend(department_table.problems)
    else:
        paths: set[str] = set()
        for person in people:
            for path in person.departments:
                segs = path.split("/")
                paths.update("/".join(segs[: i + 1]) for i in range(len(segs)))
        departments = tuple(Department(path=p) for p in sorted(paths))

    return MappingResult(
        people=tuple(sorted(people, key=lambda p: p.employee_id)),
        departments=departments,
        problems=finish_problems(problems),
        quarantined=frozenset(quarantined),
        rows=count,
        notes=tuple(sorted(notes, key=problem_key)),
        missing_fields=tuple(sorted(wanted - seen_fields)) if count else (),
        columns=columns,
        unidentified=tuple(unidentified),
    )


def map_records(
    records: Iterable[Mapping[str, Any]],
    config: MappingConfig,
    *,
    department_records: Iterable[Mapping[str, Any]] | None = None,
    departments: DepartmentsConfig | None = None,
    domains: Iterable[str] = (),
) -> MappingResult:
    """Map people records, first resolving the department table when one is configured."""
    table = None
    if departments is not None:
        table = build_department_table(department_records or (), departments)
    return map_people(
        records,
        config,
        department_table=table,
        reference=departments.reference if departments is not None else "id",
        domains=domains,
    )


__all__ = [
    "DepartmentTable",
    "MappingResult",
    "build_department_table",
    "department_path",
    "field_value",
    "field_values",
    "map_people",
    "map_records",
    "normalise_mobile",
    "parse_date",
    "template_fields",
    "text_value",
]
