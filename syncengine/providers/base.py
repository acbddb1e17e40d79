"""The ``MailboxProvider`` interface: Exmail in the engine's own terms.

Both API generations implement it (``exmail_v2`` for the current API, ``exmail_v1`` for the
open protocol). Departments are paths (see :mod:`syncengine.domain`), users carry the HR
employee id in ``ext_id``. Every method raises only :class:`syncengine.errors.ProviderError`
subclasses; ``RetriableProviderError`` means "the same call may succeed later, but a write may
already have taken effect" and the executor decides whether and how to retry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from syncengine.domain import AddressKind, Mailbox, MailboxState, MailEvent, UserUpdate
from syncengine.plan import Action

Progress = Callable[[int, int | None], None]
"""Called as ``progress(done, total)`` during long reads; ``total`` may be unknown (None)."""


class GroupPosting(enum.IntEnum):
    """Who may post to a mail group: Gen 2 ``allow_type`` values; Gen 1 ``status`` words."""

    COMPANY = 0  # Gen 1 "inner": members of the company
    ANYONE = 1  # Gen 1 "all"
    MEMBERS = 2  # Gen 1 "group": the group's own members
    ALLOW_LIST = 3  # Gen 1 "list": the accounts in ``allow_list``

    @property
    def v1_status(self) -> str:
        return {0: "inner", 1: "all", 2: "group", 3: "list"}[int(self)]


@dataclass(frozen=True)
class MailGroup:
    """A mail group (邮件群组). ``departments`` are paths; Gen 1 groups cannot hold departments
    or other groups, only member accounts."""

    address: str
    name: str
    members: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    posting: GroupPosting = GroupPosting.COMPANY
    allow_list: tuple[str, ...] = ()


@runtime_checkable
class GroupProvider(Protocol):
    """The mail group calls the executor's group handlers make (both generations)."""

    can_read_groups: bool
    """Gen 2 ``group/get``; Gen 1 cannot read a group (``get_group`` answers None)."""

    def create_group(self, group: MailGroup) -> None: ...

    def change_group(self, group: MailGroup, *, add: Sequence[str], remove: Sequence[str]) -> None:
        """Make ``group`` the group's state; ``add`` / ``remove`` are the member changes."""
        ...

    def delete_group(self, address: str) -> None: ...

    def get_group(self, address: str) -> MailGroup | None: ...

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]: ...


@dataclass(frozen=True)
class ApiCall:
    """One Exmail request an action makes: what ``sync --dry-run`` says it would send."""

    method: str
    path: str
    note: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.note})" if self.note else "")


@runtime_checkable
class MailboxProvider(Protocol):
    """What the planner and executor need from Exmail, whatever the API generation."""

    api: str
    """``"v1"`` or ``"v2"``."""

    def read_state(self, *, progress: Progress | None = None) -> MailboxState:
        """The whole directory: every department (root excluded), member and group address."""
        ...

    def get_user(self, email: str) -> Mailbox | None:
        """One member by primary address; None when there is none."""
        ...

    def create_department(self, path: str) -> None:
        """Create the department at ``path``.

        Both generations answer alike: NotFoundError when the parent does not exist (create
        ancestors first, parents before children), AlreadyExistsError when ``path`` exists.
        """
        ...

    def move_department(self, old_path: str, new_path: str) -> None:
        """Rename and/or move a department with its members and children."""
        ...

    def delete_department(self, path: str) -> None:
        """Delete an empty leaf department."""
        ...

    def create_user(
        self, mailbox: Mailbox, *, password: str, change_password_at_login: bool = True
    ) -> None:
        """Create a member. ``password`` is sent and forgotten: never logged or kept."""
        ...

    def update_user(self, email: str, update: UserUpdate) -> None:
        """Change the fields that are not None; lists given replace the whole list."""
        ...

    def delete_user(self, email: str) -> None: ...

    def swap_alias(self, email: str, alias: str) -> None:
        """Make ``alias`` the primary address and keep ``email`` as an alias."""
        ...

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]:
        """What each address is in Exmail (free, a user, an alias, a group, invalid)."""
        ...

    def login_url(self, email: str) -> str:
        """A fresh single sign-on URL for the member."""
        ...

    def new_mail_count(self, email: str) -> int:
        """The member's unread-mail count."""
        ...

    @property
    def pushes_mail(self) -> bool:
        """Whether :meth:`listen` long-polls new-mail events (Gen 1); else poll
        :meth:`new_mail_count` (Gen 2)."""
        ...

    def listen(self, version: str, timeout: float) -> tuple[list[MailEvent], str]:
        """One long poll for new-mail events after ``version``: (events, next version)."""
        ...

    def department_exists(self, path: str) -> bool:
        """Whether the department ``path`` exists now: the executor's cheap look before it
        redoes a department write (Gen 2 lists the tree, Gen 1 the parent's children)."""
        ...

    def planned_calls(self, action: Action) -> tuple[ApiCall, ...]:
        """The write requests ``action`` makes through this provider (``sync --dry-run``).
        Reads it may add (a look before redoing a write) change nothing and are not listed;
        link-only actions make none."""
        ...

    def close(self) -> None: ...
