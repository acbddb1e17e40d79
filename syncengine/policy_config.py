"""The ``[policy]``, ``[addresses]`` and ``[lifecycle]`` config tables, and the pure Policy
built from them.

The models validate the TOML (unknown keys are errors that name the key); :func:`build_policy`
turns them into the frozen :class:`syncengine.policy.Policy` the planner takes, so the pure core
never sees pydantic.

Example::

    [policy]
    protected = ["admin@*", "*-shared@*"]
    department_roots = []            # also manage hand-made departments under these
    delete_empty_departments = false
    disable_unmanaged = false
    alias_mode = "add"               # add | exact | ignore
    max_shrink_share = 0.1
    max_delete_share = 0.1
    max_disable_share = 0.1
    max_update_share = 0.3
    min_existing = 10

    [addresses]
    domain = "example.com"           # default: the first of exmail.domains
    template = "{pinyin_family}{pinyin_given}"

    [lifecycle]
    grace_days = 30
    leave = "keep"                   # keep | disable
    create_days_before_start = 7
    change_password_at_login = true  # the channel is [passwords] delivery
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncengine.addresses import check_template
from syncengine.domain import normalise_path
from syncengine.errors import ConfigError
from syncengine.policy import DEFAULT_MANAGED_FIELDS, AliasMode, Brakes, LeaveAction, Policy

if TYPE_CHECKING:
    from syncengine.config import Config

ManagedField = Literal["name", "gender", "position", "tel", "mobile", "departments"]


def _default_fields() -> list[ManagedField]:
    return cast(list[ManagedField], sorted(DEFAULT_MANAGED_FIELDS))


class PolicyConfig(BaseModel):
    """``[policy]``: ownership, protection and the brakes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protected: list[str] = Field(default_factory=lambda: ["admin@*", "postmaster@*", "abuse@*"])
    department_roots: list[str] = Field(default_factory=list)
    delete_empty_departments: bool = False
    disable_unmanaged: bool = False
    alias_mode: Literal["add", "exact", "ignore"] = "add"
    managed_fields: list[ManagedField] = Field(default_factory=_default_fields)
    set_ext_id: bool = True
    max_shrink_share: float | None = Field(default=0.1, ge=0.0, le=1.0)
    max_deletes: int | None = Field(default=None, ge=0)
    max_delete_share: float | None = Field(default=0.1, ge=0.0, le=1.0)
    max_disables: int | None = Field(default=None, ge=0)
    max_disable_share: float | None = Field(default=0.1, ge=0.0, le=1.0)
    max_updates: int | None = Field(default=None, ge=0)
    max_update_share: float | None = Field(default=0.3, ge=0.0, le=1.0)
    min_existing: int = Field(default=10, ge=0)

    @field_validator("department_roots")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return [normalise_path(p) for p in v]


class AddressesConfig(BaseModel):
    """``[addresses]``: how an address is generated when HR gives none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str | None = None
    template: str = "{pinyin_family}{pinyin_given}"
    fallback_template: str = "u{employee_id}"

    @field_validator("template", "fallback_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            check_template(v)
        except ConfigError as exc:
            raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
        return v


class LifecycleConfig(BaseModel):
    """``[lifecycle]``: leavers, leave of absence, future hires, initial passwords."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_days: int = Field(default=30, ge=0)
    leave: Literal["keep", "disable"] = "keep"
    create_days_before_start: int = Field(default=7, ge=0)
    change_password_at_login: bool = True


def build_policy(
    policy: PolicyConfig,
    addresses: AddressesConfig,
    lifecycle: LifecycleConfig,
    *,
    default_domain: str | None = None,
    password_delivery: str = "file",
    timezone: tzinfo = UTC,
) -> Policy:
    """The planner's Policy. ``default_domain`` (the first Exmail domain) is used when
    ``[addresses] domain`` is not set; with neither, generating addresses is impossible."""
    domain = addresses.domain or default_domain
    if not domain:
        raise ConfigError(
            "no mail domain for generated addresses",
            where="addresses.domain",
            hint="set [addresses] domain or [exmail] domains",
        )
    return Policy(
        domain=domain.lower(),
        address_template=addresses.template,
        address_fallback_template=addresses.fallback_template,
        protected=tuple(p.lower() for p in policy.protected),
        department_roots=tuple(policy.department_roots),
        delete_empty_departments=policy.delete_empty_departments,
        disable_unmanaged=policy.disable_unmanaged,
        alias_mode=AliasMode(policy.alias_mode),
        managed_fields=frozenset(policy.managed_fields),
        set_ext_id=policy.set_ext_id,
        grace_days=lifecycle.grace_days,
        leave_action=LeaveAction(lifecycle.leave),
        create_days_before_start=lifecycle.create_days_before_start,
        password_delivery=password_delivery,
        timezone=timezone,
        change_password_at_login=lifecycle.change_password_at_login,
        brakes=Brakes(
            max_shrink_share=policy.max_shrink_share,
            max_deletes=policy.max_deletes,
            max_delete_share=policy.max_delete_share,
            max_disables=policy.max_disables,
            max_disable_share=policy.max_disable_share,
            max_updates=policy.max_updates,
            max_update_share=policy.max_update_share,
            min_existing=policy.min_existing,
        ),
    )


def policy_from_config(config: Config) -> Policy:
    """The Policy of a loaded config (domain defaults to the first of ``[exmail] domains``;
    the password channel named in plans is ``[passwords] delivery``, the executor's)."""
    domains = config.exmail.domains
    return build_policy(
        config.policy,
        config.addresses,
        config.lifecycle,
        default_domain=domains[0] if domains else None,
        password_delivery=config.passwords.delivery,
        timezone=config.timezone,
    )
