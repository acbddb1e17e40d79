"""Mail groups from an HR field (``[[groups.by_field]]``): one group per distinct value.

PURE: no I/O, no clock, no randomness. People carry the HR column as a label
(``[mapping.labels]``, :attr:`syncengine.domain.Person.labels`); every distinct non-empty
value of the label gets a group of the people having it, planned by :mod:`syncengine.groups`
with the department groups (same ledger, under the key ``field:<label>:<value>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from syncengine.addresses import name_parts, sanitise_local

VALUE_FIELDS = frozenset({"value"})
"""What a by-field address template may use: the HR value (pinyin when it is Chinese)."""
NAME_FIELDS = frozenset({"value", "field"})

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class FieldGroupRule:
    """One ``[[groups.by_field]]`` table as the pure planner sees it."""

    field: str  # a label of [mapping.labels]
    template: str  # "loc-{value}@example.com"
    name_template: str = "{value}"


def group_key(field: str, value: str) -> str:
    return f"field:{field}:{value}"


def value_local(value: str) -> str:
    """The address-safe form of an HR value: pinyin of a Chinese value (the helpers the
    department names use), else the value itself, both through ``sanitise_local``."""
    if _CJK.search(value):
        parts = name_parts(value)
        return sanitise_local("".join(parts.family + parts.given))
    return sanitise_local(value.replace(" ", "-"))


def render_field_address(template: str, value: str) -> str:
    """The group address for one value ("" when the template renders to nothing)."""
    local, _, domain = template.format(value=value_local(value)).rpartition("@")
    local = sanitise_local(local)
    return f"{local}@{domain.lower()}" if local and domain else ""


def render_field_name(rule: FieldGroupRule, value: str) -> str:
    return rule.name_template.format(value=value, field=rule.field)
