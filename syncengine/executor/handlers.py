"""What each action kind does, and how to tell it is done (one handler per kind)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncengine.domain import AddressKind, Mailbox, normalise_email
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
from syncengine.plan import Action, ActionKind, GroupRecord, adoption_writes
from syncengine.providers.base import GroupPosting, GroupProvider, MailGroup

if TYPE_CHECKING:
    from syncengine.executor.steps import ActionSteps
    from syncengine.providers.curl_multi import DirectPost


# --- what each action kind does, and how to tell it is done -----------------------------------
# One handler per kind (octoDNS's ``_apply_<Change>``): the write and the look-before-redo
# check of a kind sit side by side, and nothing else branches on the kind.


class Handler:
    """The write an action kind makes, and the check that it already took effect."""

    def prepare(self, ex: ActionSteps, run: ActionRun) -> None:
        """What a first write needs made durable before its call, done while the action's
        start checkpoint commits (a new mailbox's password); nothing for most kinds."""

    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        raise NotImplementedError

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        raise NotImplementedError

    def single(self, action: Action) -> bool:
        """Whether the action's first write is one request the lane may send (see
        :mod:`syncengine.executor.lane`); the workers run every other action."""
        return False

    def post(self, ex: ActionSteps, run: ActionRun) -> tuple[str, DirectPost] | None:
        """The lane's request for the action's write and the call's name in the attempt
        row; None when the provider cannot make it one request (the workers run it). What
        must be durable before the call (a password) is put on ``run``, not handed over."""
        return None


class _NoCall(Handler):
    """``link`` / ``unlink``: bookkeeping only, no Exmail call."""

    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        return None

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        return True


class _CreateDepartment(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "create_department", lambda: ex.provider.create_department(a.target))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        return ex._exists(run, run.action.target)


class _MoveDepartment(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        new_path = need(a.new_path, a, "new_path")
        ex._call(run, "move_department", lambda: ex.provider.move_department(a.target, new_path))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        a = run.action
        new_path = need(a.new_path, a, "new_path")
        return ex._exists(run, new_path) and not ex._exists(run, a.target)


class _DeleteDepartment(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "delete_department", lambda: ex.provider.delete_department(a.target))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        return not ex._exists(run, run.action.target)


class _CreateUser(Handler):
    def prepare(self, ex: ActionSteps, run: ActionRun) -> None:
        self._password(ex, run)

    @staticmethod
    def _new_password(action: Action, mailbox: Mailbox) -> PasswordDelivery:
        policy = action.password
        return PasswordDelivery(
            employee_id=action.employee_id,
            email=mailbox.email,
            password=generate_password(policy.length if policy else 16),
            change_at_login=policy.change_at_login if policy else True,
        )

    @classmethod
    def _password(cls, ex: ActionSteps, run: ActionRun) -> PasswordDelivery:
        """The action's password, generated and handed to its channel once."""
        a = run.action
        mailbox = need(a.mailbox, a, "mailbox")
        if run.password is None:
            delivery = cls._new_password(a, mailbox)
            ex.passwords.deliver(delivery)  # before the call: never lose the only copy
            run.password = delivery
        return run.password

    def single(self, action: Action) -> bool:
        return action.mailbox is not None and action.mailbox.enabled

    def post(self, ex: ActionSteps, run: ActionRun) -> tuple[str, DirectPost] | None:
        writes = ex.direct_writes
        a = run.action
        if writes is None or a.mailbox is None:
            return None
        pw = self._new_password(a, a.mailbox)
        made = writes.create_user_post(
            a.mailbox, password=pw.password, change_password_at_login=pw.change_at_login
        )
        if made is None:
            return None
        run.password = pw  # handed over by the lane, with its batch, before the call
        return "create_user", made

    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        mailbox = need(a.mailbox, a, "mailbox")
        pw = self._password(ex, run)
        ex._call(
            run,
            "create_user",
            lambda: ex.provider.create_user(
                mailbox, password=pw.password, change_password_at_login=pw.change_at_login
            ),
        )

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
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

    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        update = need(a.update, a, "update")
        ex._call(run, "update_user", lambda: ex.provider.update_user(a.target, update))

    def single(self, action: Action) -> bool:
        return action.update is not None and not action.update.is_empty()

    def post(self, ex: ActionSteps, run: ActionRun) -> tuple[str, DirectPost] | None:
        writes = ex.direct_writes
        a = run.action
        if writes is None or a.update is None:
            return None
        made = writes.update_user_post(a.target, a.update)
        return None if made is None else ("update_user", made)

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        a = run.action
        update = need(a.update, a, "update")
        live = ex._live(run, a.target)
        return live is not None and not update_differences(live, update)


class _SwapPrimary(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        alias = need(a.alias, a, "alias")
        ex._call(run, "swap_alias", lambda: ex.provider.swap_alias(a.target, alias))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        a = run.action
        live = ex._live(run, need(a.alias, a, "alias"))
        return live is not None and normalise_email(a.target) in norm_emails(live.aliases)


class _DeleteUser(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        ex._call(run, "delete_user", lambda: ex.provider.delete_user(a.target))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        return ex._live(run, run.action.target) is None


def _groups(ex: ActionSteps, run: ActionRun) -> GroupProvider:
    if not isinstance(ex.provider, GroupProvider):
        raise Mismatch(
            f"the provider {type(ex.provider).__name__} has no mail group calls",
            where=run.action.key,
        )
    return ex.provider


def _mail_group(group: GroupRecord) -> MailGroup:
    return MailGroup(
        address=group.address,
        name=group.name,
        members=group.members,
        posting=GroupPosting(group.posting),
        allow_list=group.allow_list,
    )


def _is_group(ex: ActionSteps, run: ActionRun, address: str) -> bool:
    gp = _groups(ex, run)
    kinds = ex._call(run, "check_addresses", lambda: gp.check_addresses([address]))
    return kinds.get(normalise_email(address)) is AddressKind.GROUP


def _group_differences(live: MailGroup, wanted: GroupRecord) -> dict[str, tuple[Any, Any]]:
    diffs: dict[str, tuple[Any, Any]] = {}
    if set(norm_emails(live.members)) != set(norm_emails(wanted.members)):
        diffs["members"] = (sorted(live.members), sorted(wanted.members))
    if live.name != wanted.name:
        diffs["name"] = (live.name, wanted.name)
    return diffs


class _CreateGroup(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        group = need(run.action.group, run.action, "group")
        gp = _groups(ex, run)
        ex._call(run, "create_group", lambda: gp.create_group(_mail_group(group)))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        a = run.action
        group = need(a.group, a, "group")
        gp = _groups(ex, run)
        if not gp.can_read_groups:  # Gen 1: a group at the address is all it can tell
            return _is_group(ex, run, group.address)
        live = ex._call(run, "get_group", lambda: gp.get_group(group.address))
        if live is None:
            return False
        diffs = _group_differences(live, group)
        if diffs:
            raise Mismatch(
                f"mail group {group.address} exists but is not the one asked for "
                f"({describe(diffs)})",
                where=a.key,
                hint="someone else made it; remove it or pick another [groups] template",
            )
        return True


class _UpdateGroup(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        group = need(run.action.group, run.action, "group")
        gp = _groups(ex, run)
        ex._call(
            run,
            "change_group",
            lambda: gp.change_group(_mail_group(group), add=group.add, remove=group.remove),
        )

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        group = need(run.action.group, run.action, "group")
        gp = _groups(ex, run)
        if not gp.can_read_groups:
            return False  # Gen 1: add/remove members are safe to send again
        live = ex._call(run, "get_group", lambda: gp.get_group(group.address))
        return live is not None and not _group_differences(live, group)


class _DeleteGroup(Handler):
    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        a = run.action
        gp = _groups(ex, run)
        ex._call(run, "delete_group", lambda: gp.delete_group(a.target))

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        return not _is_group(ex, run, run.action.target)


class _AdoptGroup(Handler):
    """Take over a group that exists in Exmail (read with ``group/get`` when planned): one
    ``group/update`` when HR wants other members, name or posting, else no call; the ledger
    row is stored on success like any group action's."""

    def write(self, ex: ActionSteps, run: ActionRun) -> None:
        group = need(run.action.group, run.action, "group")
        gp = _groups(ex, run)
        if not gp.can_read_groups:
            raise Mismatch(
                f"cannot adopt mail group {group.address}: this API generation cannot read a "
                "group (no group/get)",
                where=run.action.key,
            )
        if adoption_writes(run.action):
            ex._call(
                run,
                "change_group",
                lambda: gp.change_group(_mail_group(group), add=group.add, remove=group.remove),
            )

    def satisfied(self, ex: ActionSteps, run: ActionRun) -> bool:
        group = need(run.action.group, run.action, "group")
        gp = _groups(ex, run)
        if not gp.can_read_groups or not adoption_writes(run.action):
            return False  # nothing to look up: writing is free (or refused with the reason)
        live = ex._call(run, "get_group", lambda: gp.get_group(group.address))
        return live is not None and not _group_differences(live, group)


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
    ActionKind.CREATE_GROUP: _CreateGroup(),
    ActionKind.UPDATE_GROUP: _UpdateGroup(),
    ActionKind.DELETE_GROUP: _DeleteGroup(),
    ActionKind.ADOPT_GROUP: _AdoptGroup(),
}
"""Every action kind's handler (a test checks that none is missing)."""
