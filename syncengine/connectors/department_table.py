"""A separate HR department table (id, name, parent id) resolved into department paths.

PURE: no I/O, no clock. Every row is checked; problems name the row and the field. Split out of
:mod:`syncengine.connectors.mapping`, which uses the table to resolve people's departments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncengine.connectors.base import ERROR_KEY
from syncengine.connectors.config import (
    DepartmentsConfig,
)
from syncengine.connectors.fields import (
    cut_value,
    dept_name_problem,
    finish_problems,
    id_problem,
    record_value,
    row_number,
    text_value,
)
from syncengine.domain import (
    MAX_DEPARTMENT_DEPTH,
    Department,
    RowProblem,
)


@dataclass(frozen=True)
class DepartmentTable:
    """A department table resolved into paths.

    ``departments`` holds the valid ones (``hr_id`` set); ``by_id`` maps every valid id to its
    path (root ids to ``""``); ``invalid`` maps ids that cannot be used to the reason, so a
    person in such a department is quarantined with that reason.
    """

    departments: tuple[Department, ...]
    by_id: Mapping[str, str]
    by_name: Mapping[str, tuple[str, ...]]
    invalid: Mapping[str, str]
    problems: tuple[RowProblem, ...]
    parent_ids: Mapping[str, str | None] = field(default_factory=dict)
    rows: int = 0


def build_department_table(
    records: Iterable[Mapping[str, Any]], config: DepartmentsConfig
) -> DepartmentTable:
    """Resolve a department table (id, name, parent id) into paths, checking every row."""
    problems: list[RowProblem] = []
    names: dict[str, str] = {}
    parents: dict[str, str] = {}
    rows_of: dict[str, int | None] = {}
    invalid: dict[str, str] = {}
    roots = set(config.root_ids)
    tops = set(config.top_parents)
    id_f, name_f, parent_f = (
        f"departments.{config.id_field}",
        f"departments.{config.name_field}",
        f"departments.{config.parent_field}",
    )
    count = 0
    for index, record in enumerate(records):
        count += 1
        row = row_number(record, index)
        dept_id = text_value(record_value(record, config.id_field)).strip()
        name = text_value(record_value(record, config.name_field)).strip()
        parent = text_value(record_value(record, config.parent_field)).strip()
        error = record.get(ERROR_KEY)
        if error:
            problems.append(RowProblem(reason=text_value(error), row=row, field=id_f))
            if dept_id:
                invalid.setdefault(dept_id, f"department table row {row}: {text_value(error)}")
            continue
        if not dept_id:
            problems.append(RowProblem(reason="department id is missing", row=row, field=id_f))
            continue
        if id_problem(dept_id):
            problems.append(
                RowProblem(
                    reason=f"department id {id_problem(dept_id)}",
                    row=row,
                    field=id_f,
                    value=cut_value(dept_id),
                )
            )
            continue
        if dept_id in rows_of:
            first = rows_of[dept_id]
            problems.append(
                RowProblem(
                    reason=f"duplicate department id (also in row {first}); both are ignored",
                    row=row,
                    field=id_f,
                    value=dept_id,
                )
            )
            invalid[dept_id] = f"department id {dept_id} appears twice in the department table"
            continue
        rows_of[dept_id] = row
        if dept_id in roots:
            continue
        bad_name = dept_name_problem(name)
        if bad_name:
            problems.append(
                RowProblem(reason=f"department name {bad_name}", row=row, field=name_f, value=name)
            )
            invalid[dept_id] = f"department {dept_id} has a bad name ({bad_name})"
        names[dept_id] = name
        parents[dept_id] = parent

    by_id: dict[str, str] = {r: "" for r in roots}
    resolved_parent: dict[str, str | None] = {}

    def flag(dept: str, reason: str, field_name: str, value: str | None) -> None:
        invalid[dept] = reason
        problems.append(
            RowProblem(reason=reason, row=rows_of.get(dept), field=field_name, value=value)
        )

    def resolve(start: str) -> None:
        """Walk up from ``start`` to a known department (or the top), then settle the chain."""
        chain: list[str] = []
        position: dict[str, int] = {}
        cur = start
        base = ""
        reason: str | None = None
        while True:
            if cur in by_id:
                base = by_id[cur]
                break
            if cur in invalid:
                reason = f"its parent department {cur} is unusable"
                break
            if cur in position:
                loop = chain[position[cur] :]
                why = "department cycle: " + " → ".join([*loop, cur])
                for member in loop:
                    flag(member, why, parent_f, parents.get(member))
                chain = chain[: position[cur]]
                reason = "its parent department is in a cycle"
                break
            if cur not in names:
                child = chain[-1]
                flag(
                    child, f"parent department {cur} is not in the department table", parent_f, cur
                )
                chain.pop()
                reason = f"its parent department {child} is unusable"
                break
            position[cur] = len(chain)
            chain.append(cur)
            parent = parents[cur]
            if parent in tops or parent in roots:
                break
            cur = parent
        for dept in reversed(chain):
            parent = parents[dept]
            resolved_parent[dept] = None if (parent in tops or parent in roots) else parent
            if reason is not None:
                flag(dept, reason, parent_f, parent)
                reason = f"its parent department {dept} is unusable"
                continue
            path = f"{base}/{names[dept]}" if base else names[dept]
            depth = path.count("/") + 1
            if depth > MAX_DEPARTMENT_DEPTH:
                flag(
                    dept,
                    f"department path {path} is {depth} levels deep (at most "
                    f"{MAX_DEPARTMENT_DEPTH})",
                    parent_f,
                    parent,
                )
                reason = f"its parent department {dept} is unusable"
                continue
            by_id[dept] = path
            base = path

    for dept_id in names:
        if dept_id not in by_id and dept_id not in invalid:
            resolve(dept_id)

    # Two departments at the same path (siblings with one name) cannot both exist in Exmail.
    ids_at: dict[str, list[str]] = {}
    for dept_id, path in by_id.items():
        if dept_id not in roots:
            ids_at.setdefault(path, []).append(dept_id)
    for path, ids in ids_at.items():
        if len(ids) > 1:
            why = f"departments {', '.join(ids)} would all be {path}"
            for dept_id in ids:
                invalid[dept_id] = why
                problems.append(
                    RowProblem(
                        reason=why, row=rows_of.get(dept_id), field=name_f, value=names.get(dept_id)
                    )
                )
    # Anything below an invalid department is unusable too.
    changed = True
    while changed:
        changed = False
        for dept_id in list(by_id):
            if dept_id in roots or dept_id in invalid:
                continue
            up = resolved_parent.get(dept_id)
            if up is not None and up in invalid:
                invalid[dept_id] = f"its parent department {up} is unusable"
                problems.append(
                    RowProblem(
                        reason=invalid[dept_id],
                        row=rows_of.get(dept_id),
                        field=parent_f,
                        value=up,
                    )
                )
                changed = True
    for dept_id in invalid:
        by_id.pop(dept_id, None)

    valid = sorted((d for d in by_id if d not in roots), key=lambda d: by_id[d])
    by_name: dict[str, list[str]] = {}
    for dept_id in valid:
        by_name.setdefault(names[dept_id], []).append(by_id[dept_id])
    return DepartmentTable(
        departments=tuple(Department(path=by_id[d], hr_id=d) for d in valid),
        by_id=by_id,
        by_name={k: tuple(v) for k, v in by_name.items()},
        invalid=invalid,
        problems=finish_problems(problems),
        parent_ids={d: resolved_parent.get(d) for d in valid},
        rows=count,
    )
