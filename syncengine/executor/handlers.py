"""What each action kind does, and how to tell it is done (one handler per kind)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncengine.domain import normalise_email
from syncengine.executor.model import (
    ActionRun,
    Mismatch,
    PasswordDelivery,
    describe,
    generate_password,
    mailbox_differences,
    need,
    norm_emails,
    update_differences,
)
from syncengine.plan import ActionKind

if TYPE_CHECKING:
    from syncengine.executor.core import Executor


# --- what each action kind does, and how to tell it is done -----------------------------------
# One handler per kind (octoDNS's ``_apply_<Change>``): the write and the look-before-redo
# check of a kind sit side by side, and nothing else branches on the kind.


class Handler:
    """The write an action kind makes, and the check that it already took effect."""

    def write(self, ex: Executor, run: ActionRun) -> None:
        raise NotImplementedError

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        raise NotImplementedError


class _NoCall(Handler):
    """``link`` / ``unlink``: bookkeeping only, no Exmail call."""

    def write(self, ex: Executor, run: ActionRun) -> None:
        return None

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        return True


class _CreateDepartment(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "create_department", lambda: ex.provider.create_department(a.target))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        return ex._exists(run, run.action.target)


class _MoveDepartment(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        new_path = need(a.new_path, a, "new_path")
        ex._call(run, "move_department", lambda: ex.provider.move_department(a.target, new_path))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        a = run.action
        new_path = need(a.new_path, a, "new_path")
        return ex._exists(run, new_path) and not ex._exists(run, a.target)


class _DeleteDepartment(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "delete_department", lambda: ex.provider.delete_department(a.target))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        return not ex._exists(run, run.action.target)


class _CreateUser(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        mailbox = need(a.mailbox, a, "mailbox")
        if run.password is None:
            policy = a.password
            delivery = PasswordDelivery(
                employee_id=a.employee_id,
                email=mailbox.email,
                password=generate_password(policy.length if policy else 16),
                change_at_login=policy.change_at_login if policy else True,
            )
            ex.passwords.deliver(delivery)  # before the call: never lose the only copy
            run.password = delivery
        pw = run.password
        ex._call(
            run,
            "create_user",
            lambda: ex.provider.create_user(
                mailbox, password=pw.password, change_password_at_login=pw.change_at_login
            ),
        )

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        a = run.action
        wanted = need(a.mailbox, a, "mailbox")
        live = ex._live(run, wanted.email)
        if live is None:
            return False
        diffs = mailbox_differences(live, wanted)
        if diffs:
            raise Mismatch(
                f"mailbox {wanted.email} exists but is not the one asked for ({describe(diffs)})",
                where=f"employee {a.employee_id}" if a.employee_id else a.key,
                hint="someone else made or changed it; plan again after checking it "
                "in the admin console",
            )
        return True


class _UpdateUser(Handler):
    """``update_user``, ``add_alias``, ``enable_user``, ``disable_user``: one user/update."""

    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        update = need(a.update, a, "update")
        ex._call(run, "update_user", lambda: ex.provider.update_user(a.target, update))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        a = run.action
        update = need(a.update, a, "update")
        live = ex._live(run, a.target)
        return live is not None and not update_differences(live, update)


class _SwapPrimary(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        alias = need(a.alias, a, "alias")
        ex._call(run, "swap_alias", lambda: ex.provider.swap_alias(a.target, alias))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        a = run.action
        live = ex._live(run, need(a.alias, a, "alias"))
        return live is not None and normalise_email(a.target) in norm_emails(live.aliases)


class _DeleteUser(Handler):
    def write(self, ex: Executor, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "delete_user", lambda: ex.provider.delete_user(a.target))

    def satisfied(self, ex: Executor, run: ActionRun) -> bool:
        return ex._live(run, run.action.target) is None


HANDLERS: dict[ActionKind, Handler] = {
    ActionKind.CREATE_DEPARTMENT: _CreateDepartment(),
    ActionKind.MOVE_DEPARTMENT: _MoveDepartment(),
    ActionKind.DELETE_DEPARTMENT: _DeleteDepartment(),
    ActionKind.CREATE_USER: _CreateUser(),
    ActionKind.UPDATE_USER: _UpdateUser(),
    ActionKind.ADD_ALIAS: _UpdateUser(),
    ActionKind.ENABLE_USER: _UpdateUser(),
    ActionKind.DISABLE_USER: _UpdateUser(),
    ActionKind.SWAP_PRIMARY: _SwapPrimary(),
    ActionKind.DELETE_USER: _DeleteUser(),
    ActionKind.LINK: _NoCall(),
    ActionKind.UNLINK: _NoCall(),
}
"""Every action kind's handler (a test checks that none is missing)."""
