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
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncengine.domain import is_valid_email, normalise_email, normalise_path
from syncengine.groups import TEMPLATE_FIELDS, GroupRules, template_fields

_POSTING = {"company": 0, "anyone": 1, "members": 2, "list": 3}


class GroupsConfig(BaseModel):
    """``[groups]``: one mail group per HR department (absent: the engine plans no groups)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str
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

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        unknown = template_fields(v) - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)} in {v!r}; use {sorted(TEMPLATE_FIELDS)}"
            )
        local, at, domain = v.rpartition("@")
        if not at or not local or not domain or "{" in domain:
            raise ValueError(f"{v!r} must be a local-part template, '@' and a fixed domain")
        return v

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

    @field_validator("extra_members", "allow_list")
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
        )
