"""The ``[groups]`` config table and the pure :class:`~syncengine.groups.GroupRules` built
from it.

Example::

    [groups]
    template = "dept-{code}@example.com"   # {code} HR department id, {pinyin}, {initials},
                                           # {path_pinyin}; the address is kept once made
    root = ""                              # only this subtree ("" = every department)
    include_subdepartments = false         # members of sub-departments join too
    name = "{name}"                        # the group's display name: {name} or {path}
    extra_members = ["hr-bot@example.com"] # in every group
    department_members = { "101" = ["cto@example.com"] }  # by HR department id or path
    posting = "company"                    # company | anyone | members | list
    allow_list = []                        # who may post when posting = "list"
    keeper = "postmaster@example.com"      # a retiring group is emptied down to the keeper
    grace_days = 30                        # then deleted after this many days
    max_member_loss = 0.5                  # brake: a group losing more than this share
    min_members = 4                        #   once it has at least this many members

    [[groups.by_field]]                    # one group per distinct value of an HR column
    field = "location"                     # a label of [mapping.labels]
    template = "loc-{value}@example.com"   # {value}: the value (pinyin when Chinese)
    name = "{value}"                       # {value} or {field}

    adopt = ["team@example.com"]           # existing groups to take over (Gen 2 only)
    adopt_existing = false                 # true: take over any existing group at a
                                           #   desired group's address (Gen 2 only)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncengine.domain import is_valid_email, normalise_email, normalise_path
from syncengine.groups import TEMPLATE_FIELDS, GroupRules, template_fields
from syncengine.groups_field import NAME_FIELDS, VALUE_FIELDS, FieldGroupRule

_POSTING = {"company": 0, "anyone": 1, "members": 2, "list": 3}


def _address_template(v: str, allowed: frozenset[str]) -> str:
    unknown = template_fields(v) - allowed
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in {v!r}; use {sorted(allowed)}")
    local, at, domain = v.rpartition("@")
    if not at or not local or not domain or "{" in domain:
        raise ValueError(f"{v!r} must be a local-part template, '@' and a fixed domain")
    return v


class FieldGroupsConfig(BaseModel):
    """``[[groups.by_field]]``: one mail group per distinct value of an HR label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    template: str
    name: str = "{value}"

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "value" not in template_fields(v):
            raise ValueError(f"{v!r} needs {{value}}: every value gets its own address")
        return _address_template(v, VALUE_FIELDS)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        unknown = template_fields(v) - NAME_FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)} in {v!r}; use field, value")
        return v


class GroupsConfig(BaseModel):
    """``[groups]``: one mail group per HR department (absent: the engine plans no groups)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = ""  # "" with by_field only: no department groups
    root: str = ""
    include_subdepartments: bool = False
    name: str = "{name}"
    extra_members: list[str] = Field(default_factory=list)
    department_members: dict[str, list[str]] = Field(default_factory=dict)
    posting: Literal["company", "anyone", "members", "list"] = "company"
    allow_list: list[str] = Field(default_factory=list)
    keeper: str = ""
    grace_days: int = Field(default=30, ge=0)
    max_member_loss: float | None = Field(default=0.5, ge=0.0, le=1.0)
    min_members: int = Field(default=4, ge=1)
    by_field: list[FieldGroupsConfig] = Field(default_factory=list)
    adopt: list[str] = Field(default_factory=list)
    adopt_existing: bool = False

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _address_template(v, TEMPLATE_FIELDS) if v else v

    @model_validator(mode="after")
    def _something(self) -> GroupsConfig:
        if not self.template and not self.by_field:
            raise ValueError("set template (department groups) or [[groups.by_field]] or both")
        fields = [f.field for f in self.by_field]
        twice = sorted({f for f in fields if fields.count(f) > 1})
        if twice:
            raise ValueError(f"by_field: the field(s) {twice} are listed more than once")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        unknown = template_fields(v) - {"name", "path"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)} in {v!r}; use name, path")
        return v

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        return normalise_path(v)

    @field_validator("extra_members", "allow_list", "adopt")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not is_valid_email(normalise_email(x))]
        if bad:
            raise ValueError(f"not email addresses: {bad}")
        return [normalise_email(x) for x in v]

    @field_validator("department_members")
    @classmethod
    def _department_emails(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return {normalise_path(k): cls._emails(x) for k, x in v.items()}

    @field_validator("keeper")
    @classmethod
    def _keeper(cls, v: str) -> str:
        if v and not is_valid_email(normalise_email(v)):
            raise ValueError(f"{v!r} is not an email address")
        return normalise_email(v)

    def rules(self, api: str) -> GroupRules:
        """The pure rules; ``api`` decides what can change after creation (Gen 1: no rename)."""
        return GroupRules(
            template=self.template,
            root=self.root,
            include_subdepartments=self.include_subdepartments,
            name_template=self.name,
            extra_members=tuple(self.extra_members),
            department_members={k: tuple(v) for k, v in self.department_members.items()},
            posting=_POSTING[self.posting],
            allow_list=tuple(self.allow_list),
            keeper=self.keeper,
            grace_days=self.grace_days,
            can_rename=api != "v1",
            max_member_loss=self.max_member_loss,
            min_members=self.min_members,
            adopt=tuple(self.adopt),
            adopt_existing=self.adopt_existing,
            by_field=tuple(FieldGroupRule(f.field, f.template, f.name) for f in self.by_field),
        )
