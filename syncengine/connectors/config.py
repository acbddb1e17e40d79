"""The ``[source]``, ``[mapping]`` and ``[departments]`` tables of the configuration.

``[source]`` is deliberately open: it holds a ``type`` plus whatever options that connector
takes, and each connector validates its own options with its own model when it is built
(:func:`syncengine.connectors.base.make_connector`), so a plug-in connector needs no change
here. A wrong option is reported as ``source.<key>`` by :func:`options_error`.

``[mapping]`` says how a raw record becomes a :class:`syncengine.domain.Person`: for each
engine field, either the source field's name or a table with the field (or a template or a
constant) and its transforms. ``[departments]`` names a second source holding a department
table (id, name, parent id); people then reference departments by id or name.

These models are pure data (pydantic only) so the pure mapping module can take them as they
are.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncengine.errors import ConfigError

_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


def template_fields(template: str) -> list[str]:
    """The source field names a template such as ``"{first}.{last}"`` refers to."""
    return [name.strip() for name in _PLACEHOLDER_RE.findall(template)]


class SourceConfig(BaseModel):
    """``[source]`` (or ``[departments.source]``): a connector ``type`` plus its own options.

    Extra keys are allowed here on purpose: they belong to the connector, which checks them.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(min_length=1)

    @property
    def options(self) -> dict[str, Any]:
        """Every key of the table, ``type`` included, as ``make_connector`` takes them."""
        data: dict[str, Any] = {"type": self.type}
        data.update(self.model_extra or {})
        return data


class FieldSpec(BaseModel):
    """Where one engine field comes from and how its value is cleaned.

    Exactly one of ``field`` (a source field; ``a.b`` reaches into nested records),
    ``template`` (``"{first}.{last}"``: source fields substituted; empty when any is empty) or
    ``constant`` gives the raw value. Then, in this order: ``strip`` surrounding space,
    ``split`` into a list on a separator (lists from JSON or LDAP are taken as they are),
    change ``case``, look each value up in ``map`` (exact, then case-insensitively; values not
    in the map pass through), use ``default`` when the result is empty. ``date_format`` lists
    the ``strptime`` formats tried for date fields (ISO and the common Chinese forms are always
    tried after them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = None
    template: str | None = None
    constant: str | None = None
    strip: bool = True
    split: str | None = None
    case: Literal["lower", "upper"] | None = None
    map: dict[str, str] = Field(default_factory=dict)
    default: str | None = None
    date_format: list[str] = Field(default_factory=list)

    @field_validator("date_format", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("split")
    @classmethod
    def _split_not_empty(cls, value: str | None) -> str | None:
        if value is not None and value == "":
            raise ValueError("must not be empty (give the separator, e.g. ';')")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        given = [k for k in ("field", "template", "constant") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'field', 'template' or 'constant'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.template is not None:
            names = template_fields(self.template)
            if not names or any(not n for n in names):
                raise ValueError("template needs at least one {field} and no empty {}")
        return self

    def source_fields(self) -> list[str]:
        """The source field names this spec reads."""
        if self.field is not None:
            return [self.field]
        if self.template is not None:
            return template_fields(self.template)
        return []


def _spec(value: Any) -> Any:
    """A bare string in the config is shorthand for ``{ field = "..." }``."""
    return {"field": value} if isinstance(value, str) else value


PERSON_FIELDS = (
    "employee_id",
    "name",
    "email",
    "aliases",
    "departments",
    "position",
    "mobile",
    "tel",
    "gender",
    "status",
    "start_date",
    "end_date",
)
"""The engine fields a [mapping] can fill, in the order Person declares them."""


class MappingConfig(BaseModel):
    """``[mapping]``: source fields to the engine's Person.

    Fields not given are not mapped (empty), except ``employee_id`` and ``name``, which read
    the source fields ``employee_id`` and ``name`` unless told otherwise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    employee_id: FieldSpec = Field(default_factory=lambda: FieldSpec(field="employee_id"))
    name: FieldSpec = Field(default_factory=lambda: FieldSpec(field="name"))
    email: FieldSpec | None = None
    aliases: FieldSpec | None = None
    departments: FieldSpec | None = None
    position: FieldSpec | None = None
    mobile: FieldSpec | None = None
    tel: FieldSpec | None = None
    gender: FieldSpec | None = None
    status: FieldSpec | None = None
    start_date: FieldSpec | None = None
    end_date: FieldSpec | None = None

    # Within one department value: the separator of path segments (``研发中心/平台部``).
    department_separator: str = Field(default="/", min_length=1)
    # "mainland": 1[3-9]XXXXXXXXX with an optional +86; "any": 5 to 20 digits, optional "+".
    mobile_check: Literal["mainland", "any"] = "mainland"
    # HR columns kept on each person for mail groups (``[[groups.by_field]]``), by label:
    # ``[mapping.labels] location = "office"``. Not sent to Exmail.
    labels: dict[str, FieldSpec] = Field(default_factory=dict)

    @field_validator(*PERSON_FIELDS, mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _spec(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _label_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        bad = [k for k in value if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", str(k))]
        if bad:
            raise ValueError(f"label names must be lower-case words (a-z, 0-9, _): {bad}")
        return {k: _spec(v) for k, v in value.items()}

    def specs(self) -> dict[str, FieldSpec]:
        """The engine fields that are mapped, with their specs."""
        out: dict[str, FieldSpec] = {}
        for name in PERSON_FIELDS:
            spec = getattr(self, name)
            if spec is not None:
                out[name] = spec
        return out


class DepartmentsConfig(BaseModel):
    """``[departments]``: a separate department table (id, name, parent id).

    With it, the people's ``departments`` values are department ids (``reference = "id"``) or
    department names (``reference = "name"``, which must then be unique) and the mapping
    builds each path by walking up the parents, keeping the HR id on each department so a
    rename or a move in HR is recognised as such. A department whose parent is empty, one of
    ``top_parents``, or one of ``root_ids`` sits at the top; departments listed in
    ``root_ids`` are the company itself (the root of Exmail's tree) and are not created.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceConfig
    id_field: str = "id"
    name_field: str = "name"
    parent_field: str = "parent_id"
    reference: Literal["id", "name"] = "id"
    root_ids: list[str] = Field(default_factory=list)
    top_parents: list[str] = Field(default_factory=lambda: ["", "0"])


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not item.startswith("function-") and item not in {"literal", "str"}:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def options_error(exc: ValidationError, key: str) -> ConfigError:
    """A connector's option validation failure as one message naming ``<key>.<option>``."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _location(tuple(err["loc"]))
        where = f"{key}.{loc}" if loc else key
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option for this connector type (check the spelling)"
        elif err["type"] == "missing":
            msg = "is required but missing"
        lines.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return ConfigError("; ".join(lines), hint="see the README for each connector's options")
