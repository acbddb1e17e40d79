"""Table tests of the pure planner, and the in-memory Exmail model the property tests share.

The model (:class:`World`, :func:`apply_plan`) applies every action kind the way Exmail and the
executor would, and asserts the order is valid while doing it: a department exists before a
user is placed in it or it gets children, users have left a department before it is deleted,
an alias exists before it is swapped in, an address is free before it is taken.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import pytest

from syncengine.domain import (
    Department,
    Gender,
    IdentityLink,
    Mailbox,
    MailboxState,
    Party,
    Person,
    Status,
    UserUpdate,
    ancestors,
    is_under,
    parent_path,
)
from syncengine.plan import Action, ActionKind, ConflictKind, Plan
from syncengine.planner import Desired, diff
from syncengine.policy import AliasMode, Brakes, LeaveAction, Policy

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
TODAY = NOW.date()
POLICY = Policy(domain="x.com", brakes=Brakes(min_existing=1000))


# --- the model -------------------------------------------------------------------------------


@dataclass
class World:
    """A tiny Exmail plus the link store, mutable, with Exmail's rules as assertions."""

    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    parties: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    links: dict[str, IdentityLink] = field(default_factory=dict)
    former: dict[str, frozenset[str]] = field(default_factory=dict)  # the audit's swaps

    @classmethod
    def of(cls, state: MailboxState, links: dict[str, IdentityLink] | None = None) -> World:
        return cls(
            {m.email: m for m in state.mailboxes},
            {p.path for p in state.parties},
            set(state.groups),
            dict(links or {}),
        )

    def state(self) -> MailboxState:
        return MailboxState(
            tuple(self.mailboxes[e] for e in sorted(self.mailboxes)),
            tuple(Party(p) for p in sorted(self.parties)),
            tuple(sorted(self.groups)),
        )

    def owner(self, address: str) -> str | None:
        if address in self.groups:
            return "<group>"
        for m in self.mailboxes.values():
            if address == m.email or address in m.aliases:
                return m.email
        return None

    def check_departments(self, depts: tuple[str, ...], action: Action) -> None:
        for d in depts:
            assert d in self.parties, f"{action.key}: department {d} does not exist yet"

    def check_aliases(self, email: str, aliases: tuple[str, ...], action: Action) -> None:
        assert len(aliases) <= 5, f"{action.key}: more than 5 aliases"
        for a in aliases:
            o = self.owner(a)
            assert o in (None, email), f"{action.key}: alias {a} belongs to {o}"

    def update(self, email: str, u: UserUpdate, action: Action) -> None:
        m = self.mailboxes[email]
        if u.departments is not None:
            self.check_departments(u.departments, action)
        if u.aliases is not None:
            self.check_aliases(email, u.aliases, action)
        fields = {k: getattr(u, k) for k in u.__dataclass_fields__ if getattr(u, k) is not None}
        self.mailboxes[email] = replace(m, **fields)


def apply_action(w: World, a: Action, now: datetime = NOW) -> None:
    k = a.kind
    if k is ActionKind.CREATE_DEPARTMENT:
        assert a.target not in w.parties, f"{a.key}: exists"
        assert parent_path(a.target) in w.parties | {""}, f"{a.key}: parent missing"
        w.parties.add(a.target)
    elif k is ActionKind.MOVE_DEPARTMENT:
        old, new = a.target, a.new_path
        assert new is not None
        assert old in w.parties and new not in w.parties, a.key
        assert parent_path(new) in w.parties | {""}, f"{a.key}: new parent missing"

        def mv(p: str) -> str:
            return new + p[len(old) :] if is_under(p, old) else p

        w.parties = {mv(p) for p in w.parties}
        for e, m in list(w.mailboxes.items()):
            w.mailboxes[e] = replace(m, departments=tuple(mv(d) for d in m.departments))
    elif k is ActionKind.DELETE_DEPARTMENT:
        assert a.target in w.parties
        assert not any(parent_path(p) == a.target for p in w.parties), f"{a.key}: has children"
        for m in w.mailboxes.values():
            assert not any(is_under(d, a.target) for d in m.departments), (
                f"{a.key}: {m.email} is still in it"
            )
        w.parties.remove(a.target)
    elif k is ActionKind.CREATE_USER:
        assert a.mailbox is not None and a.mailbox.email == a.target
        assert w.owner(a.target) is None, f"{a.key}: address taken"
        w.check_departments(a.mailbox.departments, a)
        w.check_aliases(a.target, a.mailbox.aliases, a)
        w.mailboxes[a.target] = a.mailbox
    elif k in {
        ActionKind.UPDATE_USER,
        ActionKind.ADD_ALIAS,
        ActionKind.ENABLE_USER,
        ActionKind.DISABLE_USER,
    }:
        assert a.target in w.mailboxes, f"{a.key}: no such mailbox"
        assert a.update is not None and not a.update.is_empty()
        w.update(a.target, a.update, a)
    elif k is ActionKind.SWAP_PRIMARY:
        m = w.mailboxes.pop(a.target)
        assert a.alias in m.aliases, f"{a.key}: {a.alias} is not an alias yet"
        aliases = tuple(sorted((set(m.aliases) - {a.alias}) | {m.email}))
        w.mailboxes[a.alias] = replace(m, email=a.alias, aliases=aliases)
        w.former[a.employee_id] = w.former.get(a.employee_id, frozenset()) | {m.email}
    elif k is ActionKind.DELETE_USER:
        assert not w.mailboxes[a.target].enabled, f"{a.key}: deleting an enabled mailbox"
        del w.mailboxes[a.target]
        w.links.pop(a.employee_id, None)
    elif k is ActionKind.UNLINK:
        w.links.pop(a.employee_id)
    if a.link is not None:
        old = w.links.get(a.link.employee_id)
        w.links[a.link.employee_id] = IdentityLink(
            employee_id=a.link.employee_id,
            email=a.link.email,
            first_seen=old.first_seen if old else now,
            disabled_since=a.link.disabled_since,
            generated=a.link.generated,
        )


def apply_plan(plan: Plan, world: World) -> World:
    done: set[str] = set()
    for a in plan.actions:
        assert all(d in done for d in a.depends_on), f"{a.key} before its dependencies"
        apply_action(world, a)
        done.add(a.key)
    return world


# --- helpers ---------------------------------------------------------------------------------


def mb(email: str, name: str = "某人", **kw: object) -> Mailbox:
    return Mailbox(email=email, name=name, **kw)  # type: ignore[arg-type]


def link(eid: str, email: str, **kw: object) -> IdentityLink:
    return IdentityLink(eid, email, NOW - timedelta(days=400), **kw)  # type: ignore[arg-type]


def plan_for(
    people: list[Person],
    mailboxes: list[Mailbox] = (),  # type: ignore[assignment]
    *,
    parties: list[str] = (),  # type: ignore[assignment]
    groups: list[str] = (),  # type: ignore[assignment]
    links: dict[str, IdentityLink] | None = None,
    policy: Policy = POLICY,
    departments: list[Department] = (),  # type: ignore[assignment]
    previous: list[Department] = (),  # type: ignore[assignment]
    quarantined: frozenset[str] = frozenset(),
    previous_size: int | None = None,
    only: list[str] | None = None,
    now: datetime = NOW,
) -> tuple[Plan, World]:
    state = MailboxState(tuple(mailboxes), tuple(Party(p) for p in parties), tuple(groups))
    desired = Desired(
        tuple(people), tuple(departments), quarantined, previous_size, tuple(previous)
    )
    plan = diff(desired, state, links or {}, policy, now, only=only)
    world = apply_plan(plan, World.of(state, links))
    # Convergence: the same desired state against the result needs nothing more.
    rolled = replace(desired, previous_departments=desired.departments,
                     former_addresses=world.former)  # fmt: skip
    again = diff(rolled, world.state(), world.links, policy, now, only=only)
    assert not again.actions, [a.key for a in again.actions]
    return plan, world


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(a.kind.value, a.target) for a in plan.actions]


# --- departments -----------------------------------------------------------------------------


def test_creates_missing_departments_parents_first() -> None:
    p = Person("E1", "张三", email="zs@x.com", departments=("研发/平台/基础",))
    plan, world = plan_for([p], parties=["研发"])
    assert kinds(plan)[:2] == [
        ("create_department", "研发/平台"),
        ("create_department", "研发/平台/基础"),
    ]
    create = plan.action("create_user:zs@x.com")
    assert set(create.depends_on) == {
        "create_department:研发/平台",
        "create_department:研发/平台/基础",
    }
    assert world.mailboxes["zs@x.com"].departments == ("研发/平台/基础",)


def test_rename_is_a_move_not_delete_and_create() -> None:
    people = [Person("E1", "张三", email="zs@x.com", departments=("研发中心/平台部",))]
    plan, world = plan_for(
        people,
        [mb("zs@x.com", "张三", ext_id="E1", departments=("研发部/平台部",))],
        parties=["研发部", "研发部/平台部"],
        departments=[Department("研发中心", "D1"), Department("研发中心/平台部", "D2")],
        previous=[Department("研发部", "D1"), Department("研发部/平台部", "D2")],
        links={"E1": link("E1", "zs@x.com")},
    )
    assert kinds(plan) == [("move_department", "研发部")]
    assert plan.actions[0].new_path == "研发中心"
    assert world.parties == {"研发中心", "研发中心/平台部"}


def test_child_moved_to_a_new_parent_after_parent_rename() -> None:
    plan, world = plan_for(
        [],
        parties=["A", "A/B", "C"],
        departments=[Department("A2", "1"), Department("C/B2", "2"), Department("C", "3")],
        previous=[Department("A", "1"), Department("A/B", "2"), Department("C", "3")],
    )
    assert kinds(plan) == [("move_department", "A"), ("move_department", "A2/B")]
    assert world.parties == {"A2", "C", "C/B2"}


def test_empty_managed_departments_deleted_children_first_after_users_move_out() -> None:
    policy = replace(POLICY, delete_empty_departments=True)
    people = [Person("E1", "张三", email="zs@x.com", departments=("新部门",))]
    plan, world = plan_for(
        people,
        [mb("zs@x.com", "张三", ext_id="E1", departments=("旧/子",))],
        parties=["旧", "旧/子", "手工"],
        links={"E1": link("E1", "zs@x.com")},
        previous=[Department("旧/子")],
        policy=policy,
    )
    keys = [a.key for a in plan.actions]
    assert keys.index("delete_department:旧/子") < keys.index("delete_department:旧")
    sub = plan.action("delete_department:旧/子")
    assert "update_user:zs@x.com" in sub.depends_on
    assert "手工" in world.parties  # made by hand, never HR's: not managed, left alone
    assert world.parties == {"新部门", "手工"}


def test_departments_not_deleted_without_the_policy() -> None:
    plan, world = plan_for([], parties=["旧"], previous=[Department("旧")])
    assert not plan.actions and world.parties == {"旧"}


def test_department_roots_make_hand_made_departments_managed() -> None:
    policy = replace(POLICY, delete_empty_departments=True, department_roots=("公司",))
    plan, _ = plan_for([], parties=["公司", "公司/临时", "其他"], policy=policy)
    assert kinds(plan) == [("delete_department", "公司/临时")]


def test_department_with_unmanaged_member_kept() -> None:
    policy = replace(POLICY, delete_empty_departments=True)
    plan, _ = plan_for(
        [], [mb("x@x.com", departments=("旧",))], parties=["旧"], previous=[Department("旧")],
        policy=policy,
    )  # fmt: skip
    assert not plan.actions and plan.unmanaged == ("x@x.com",)


# --- users -----------------------------------------------------------------------------------


def test_create_user_with_generated_address_and_password_policy() -> None:
    people = [Person("E2", "张三"), Person("E1", "张三"), Person("E3", "欧阳娜娜")]
    plan, world = plan_for(people, [mb("zhangsan@x.com")], groups=["ouyangnana@x.com"])
    creates = {a.employee_id: a for a in plan.actions if a.kind is ActionKind.CREATE_USER}
    assert creates["E1"].target == "zhangsan2@x.com"  # the first free one, by employee id
    assert creates["E2"].target == "zhangsan3@x.com"
    assert creates["E3"].target == "ouyangnana2@x.com"
    a = creates["E1"]
    assert a.link is not None and a.link.generated
    assert a.password is not None and a.password.change_at_login
    assert a.password.delivery == "file"
    assert a.mailbox is not None and a.mailbox.ext_id == "E1"
    assert world.links["E1"].email == "zhangsan2@x.com" and world.links["E1"].generated


def test_generated_address_kept_on_later_runs_even_when_the_name_changes() -> None:
    people = [Person("E1", "李四")]
    plan, _ = plan_for(
        people,
        [mb("zhangsan@x.com", "张三", ext_id="E1")],
        links={"E1": link("E1", "zhangsan@x.com", generated=True)},
    )
    assert kinds(plan) == [("update_user", "zhangsan@x.com")]
    assert dict(plan.actions[0].changes) == {"name": ("张三", "李四")}


def test_update_field_diffs() -> None:
    p = Person(
        "E1", "张三", email="zs@x.com", departments=("B", "A"), position="工程师", tel="1",
        mobile="138", gender=Gender.FEMALE,
    )  # fmt: skip
    plan, _ = plan_for(
        [p],
        [mb("zs@x.com", "张叁", ext_id="E1", departments=("A",), gender=Gender.MALE)],
        parties=["A", "B"],
        links={"E1": link("E1", "zs@x.com")},
    )
    (a,) = plan.actions
    assert a.kind is ActionKind.UPDATE_USER
    assert dict(a.changes) == {
        "name": ("张叁", "张三"),
        "position": ("", "工程师"),
        "tel": ("", "1"),
        "mobile": ("", "138"),
        "gender": (1, 2),
        "departments": (("A",), ("A", "B")),
    }
    assert a.update == UserUpdate(
        name="张三", position="工程师", tel="1", mobile="138", gender=Gender.FEMALE,
        departments=("A", "B"),
    )  # fmt: skip


def test_unset_gender_and_unmanaged_fields_left_alone() -> None:
    policy = replace(POLICY, managed_fields=frozenset({"name"}))
    p = Person("E1", "张三", email="zs@x.com", mobile="")
    plan, _ = plan_for(
        [p], [mb("zs@x.com", "张三", ext_id="E1", mobile="139", gender=Gender.MALE,
                 departments=("X",))],
        parties=["X"], links={"E1": link("E1", "zs@x.com")}, policy=policy,
    )  # fmt: skip
    assert not plan.actions


def test_matched_by_address_is_adopted_ext_id_set_and_linked() -> None:
    p = Person("E1", "张三", email="ZS@x.com")
    plan, world = plan_for([p], [mb("zs@x.com", "张三")])
    (a,) = plan.actions
    assert a.kind is ActionKind.UPDATE_USER and dict(a.changes) == {"ext_id": ("", "E1")}
    assert a.link is not None and a.link.email == "zs@x.com" and not a.link.generated
    assert world.links["E1"].email == "zs@x.com"


def test_matched_by_ext_id_without_a_stored_link_gets_a_link_action() -> None:
    plan, world = plan_for([Person("E1", "张三")], [mb("zs@x.com", "张三", ext_id="E1")])
    assert kinds(plan) == [("link", "zs@x.com")]
    assert plan.actions[0].key == "link:E1"
    assert world.links["E1"].email == "zs@x.com"


def test_matched_by_alias() -> None:
    plan, _ = plan_for(
        [Person("E1", "张三", email="san@x.com")],
        [mb("zs@x.com", "张三", aliases=("san@x.com",))],
    )
    assert kinds(plan) == [("swap_primary", "zs@x.com"), ("update_user", "san@x.com")]


def test_address_change_is_add_alias_then_swap() -> None:
    plan, world = plan_for(
        [Person("E1", "张三", email="new@x.com")],
        [mb("old@x.com", "张三", ext_id="E1", aliases=("a@x.com",))],
        links={"E1": link("E1", "old@x.com")},
    )
    add, swap = plan.actions
    assert add.kind is ActionKind.ADD_ALIAS and add.alias == "new@x.com"
    assert add.update == UserUpdate(aliases=("a@x.com", "new@x.com"))
    assert swap.kind is ActionKind.SWAP_PRIMARY and swap.depends_on == (add.key,)
    assert swap.link is not None and swap.link.email == "new@x.com"
    assert world.mailboxes["new@x.com"].aliases == ("a@x.com", "old@x.com")


def test_address_change_exact_alias_mode_keeps_the_old_address() -> None:
    """Exact mode sets the aliases to HR's list, but the old primary address stays an alias
    (the plan says so, and mail to it must not bounce); another extra alias goes."""
    policy = replace(POLICY, alias_mode=AliasMode.EXACT)
    plan, world = plan_for(
        [Person("E1", "张三", email="new@x.com", aliases=("z@x.com",))],
        [mb("old@x.com", "张三", ext_id="E1", aliases=("gone@x.com",))],
        links={"E1": link("E1", "old@x.com")},
        policy=policy,
    )
    assert [a.kind for a in plan.actions] == [
        ActionKind.ADD_ALIAS, ActionKind.SWAP_PRIMARY, ActionKind.UPDATE_USER,
    ]  # fmt: skip
    swap, update = plan.actions[1], plan.actions[2]
    assert "old@x.com stays an alias" in swap.reason
    assert update.update is not None and update.update.aliases == ("old@x.com", "z@x.com")
    assert world.mailboxes["new@x.com"].aliases == ("old@x.com", "z@x.com")
    # The next run: HR still lists only z@x.com; the former address stays all the same.
    again = diff(
        Desired((Person("E1", "张三", email="new@x.com", aliases=("z@x.com",)),),
                former_addresses=world.former),
        world.state(), world.links, policy, NOW,
    )  # fmt: skip
    assert again.actions == ()


def test_rehire_enables_the_old_mailbox() -> None:
    plan, world = plan_for(
        [Person("E1", "张三", email="zs@x.com")],
        [mb("zs@x.com", "张三", ext_id="E1", enabled=False)],
        links={"E1": link("E1", "zs@x.com", disabled_since=date(2026, 11, 20))},
    )
    (a,) = plan.actions
    assert a.kind is ActionKind.ENABLE_USER
    assert a.link is not None and a.link.disabled_since is None
    assert world.mailboxes["zs@x.com"].enabled


# --- lifecycle -------------------------------------------------------------------------------


def test_leaver_disabled_on_end_date_then_deleted_after_grace() -> None:
    p = Person("E1", "张三", email="zs@x.com", end_date=TODAY)
    plan, world = plan_for([p], [mb("zs@x.com", ext_id="E1")], links={"E1": link("E1", "zs@x.com")})
    assert kinds(plan) == [("disable_user", "zs@x.com")]
    assert world.links["E1"].disabled_since == TODAY
    later = NOW + timedelta(days=29)
    plan2 = diff(Desired((p,)), world.state(), world.links, POLICY, later)
    assert not plan2.actions
    plan3 = diff(Desired((p,)), world.state(), world.links, POLICY, later + timedelta(days=1))
    assert kinds(plan3) == [("delete_user", "zs@x.com")]
    apply_plan(plan3, world)
    assert not world.mailboxes and "E1" not in world.links


def test_future_end_date_is_not_a_leaver_yet() -> None:
    p = Person("E1", "张三", email="zs@x.com", end_date=TODAY + timedelta(days=1))
    plan, _ = plan_for(
        [p], [mb("zs@x.com", "张三", ext_id="E1")], links={"E1": link("E1", "zs@x.com")}
    )
    assert not plan.actions


def test_leaver_already_disabled_starts_the_grace_period() -> None:
    p = Person("E1", "张三", email="zs@x.com", status=Status.TERMINATED)
    plan, world = plan_for([p], [mb("zs@x.com", ext_id="E1", enabled=False)])
    assert kinds(plan) == [("link", "zs@x.com")]
    assert world.links["E1"].disabled_since == TODAY


def test_absent_person_is_a_leaver_but_quarantined_is_not() -> None:
    mbs = [mb("a@x.com", ext_id="E1"), mb("b@x.com", ext_id="E2")]
    links = {"E1": link("E1", "a@x.com"), "E2": link("E2", "b@x.com")}
    plan, _ = plan_for([], mbs, links=links, quarantined=frozenset({"E2"}))
    assert kinds(plan) == [("disable_user", "a@x.com")]
    assert plan.quarantined == ("E2",)
    assert "no longer in the HR source" in plan.actions[0].reason


def test_absent_person_whose_mailbox_is_gone_is_unlinked() -> None:
    plan, world = plan_for([], [], links={"E1": link("E1", "gone@x.com")})
    assert [a.key for a in plan.actions] == ["unlink:E1"]
    assert not world.links


def test_future_hire_created_only_inside_the_window() -> None:
    early = Person("E1", "张三", email="zs@x.com", start_date=TODAY + timedelta(days=8))
    soon = Person("E2", "李四", email="ls@x.com", start_date=TODAY + timedelta(days=7))
    plan, _ = plan_for([early, soon])
    assert kinds(plan) == [("create_user", "ls@x.com")]


@pytest.mark.parametrize(
    ("action", "expect"),
    [(LeaveAction.KEEP, []), (LeaveAction.DISABLE, [("disable_user", "zs@x.com")])],
)
def test_leave_of_absence(action: LeaveAction, expect: list[tuple[str, str]]) -> None:
    p = Person("E1", "张三", email="zs@x.com", status=Status.LEAVE)
    plan, _ = plan_for(
        [p], [mb("zs@x.com", "张三", ext_id="E1")], links={"E1": link("E1", "zs@x.com")},
        policy=replace(POLICY, leave_action=action),
    )  # fmt: skip
    assert kinds(plan) == expect


# --- ownership and conflicts -----------------------------------------------------------------


def test_protected_accounts_never_touched_even_when_matched() -> None:
    policy = replace(POLICY, protected=("admin@*", "*-shared@*"))
    people = [
        Person("E1", "管理员", email="admin@x.com"),
        Person("E2", "x", status=Status.TERMINATED),
    ]
    plan, _ = plan_for(
        people,
        [mb("admin@x.com", "Admin"), mb("hr-shared@x.com", ext_id="E2")],
        links={"E9": link("E9", "hr-shared@x.com")},
        policy=policy,
    )
    assert not plan.actions
    assert plan.protected == ("admin@x.com", "hr-shared@x.com")


def test_unmanaged_reported_and_disabled_only_by_policy() -> None:
    boxes = [mb("stranger@x.com"), mb("other@x.com", enabled=False)]
    plan, _ = plan_for([], boxes)
    assert not plan.actions and plan.unmanaged == ("other@x.com", "stranger@x.com")
    plan2, _ = plan_for([], boxes, policy=replace(POLICY, disable_unmanaged=True))
    assert kinds(plan2) == [("disable_user", "stranger@x.com")]


def test_person_matching_two_mailboxes_is_a_conflict() -> None:
    plan, _ = plan_for(
        [Person("E1", "张三", email="zs@x.com")],
        [mb("a@x.com", ext_id="E1"), mb("b@x.com", ext_id="E1")],
    )
    assert not plan.actions
    (c,) = plan.conflicts
    assert c.kind is ConflictKind.PERSON_MATCHES_TWO and c.emails == ("a@x.com", "b@x.com")


def test_two_people_claiming_one_mailbox_is_a_conflict() -> None:
    plan, _ = plan_for(
        [Person("E1", "张三", email="zs@x.com"), Person("E2", "张三", email="zs@x.com")],
        [mb("zs@x.com")],
    )
    assert not plan.actions
    assert plan.conflicts[0].kind is ConflictKind.MAILBOX_CLAIMED_TWICE
    assert plan.conflicts[0].employee_ids == ("E1", "E2")


def test_address_match_on_a_mailbox_of_another_employee_is_a_conflict() -> None:
    plan, _ = plan_for([Person("E1", "张三", email="zs@x.com")], [mb("zs@x.com", ext_id="E7")])
    assert not plan.actions and plan.conflicts[0].kind is ConflictKind.FOREIGN_EXT_ID


def test_wanted_address_owned_by_another_mailbox_or_group_is_a_conflict() -> None:
    plan, _ = plan_for(
        [Person("E1", "张三", email="taken@x.com"), Person("E2", "李四", email="all@x.com")],
        [mb("zs@x.com", ext_id="E1"), mb("taken@x.com", ext_id="E5", enabled=False)],
        groups=["all@x.com"],
    )
    assert {c.kind for c in plan.conflicts} == {ConflictKind.ADDRESS_TAKEN}
    assert not any(a.employee_id in {"E1", "E2"} for a in plan.actions)


def test_alias_owned_by_someone_else_is_left_out() -> None:
    plan, world = plan_for(
        [Person("E1", "张三", email="zs@x.com", aliases=("boss@x.com", "san@x.com"))],
        [mb("boss@x.com", "老板")],
    )
    assert plan.conflicts[0].kind is ConflictKind.ALIAS_TAKEN
    assert world.mailboxes["zs@x.com"].aliases == ("san@x.com",)


# --- plan-level ------------------------------------------------------------------------------


def scenario() -> tuple[Desired, MailboxState, dict[str, IdentityLink]]:
    people = tuple(
        Person(f"E{i:03d}", name, email=None if i % 3 else f"p{i}@x.com", departments=(d,))
        for i, (name, d) in enumerate(
            [("张伟", "研发"), ("张伟", "研发/平台"), ("王芳", "销售"), ("李娜", "研发"),
             ("刘洋", "销售/华南"), ("陈静", "研发"), ("单田芳", "研发")]
        )
    )  # fmt: skip
    state = MailboxState(
        (
            mb("p0@x.com", "张伟"),
            mb("zhangwei@x.com", "张伟", ext_id="X"),
            mb("old@x.com", ext_id="E003"),
        ),
        (Party("研发"), Party("销售")),
        ("all@x.com",),
    )  # fmt: skip
    return Desired(people), state, {"E003": link("E003", "old@x.com")}


def test_determinism_and_input_order_independence() -> None:
    desired, state, links = scenario()
    a = diff(desired, state, links, POLICY, NOW)
    b = diff(desired, state, links, POLICY, NOW)
    assert a.to_json() == b.to_json()
    rng = random.Random(7)
    people = list(desired.people)
    boxes = list(state.mailboxes)
    parties = list(state.parties)
    rng.shuffle(people)
    rng.shuffle(boxes)
    rng.shuffle(parties)
    c = diff(
        Desired(tuple(people)),
        MailboxState(tuple(boxes), tuple(parties), state.groups),
        dict(reversed(list(links.items()))),
        POLICY,
        NOW,
    )
    assert c.checksum == a.checksum
    assert Plan.from_json(a.to_json()) == a


def test_only_keeps_the_named_people_and_explains() -> None:
    desired, state, links = scenario()
    plan = diff(desired, state, links, POLICY, NOW, only=["E004"])
    assert {a.employee_id for a in plan.actions} == {"E004", ""}
    assert [a.key for a in plan.actions if not a.employee_id] == ["create_department:销售/华南"]
    steps = plan.explanations["E004"]
    assert steps[0] == "match: no mailbox"
    assert any(s.startswith("action create_user:liuyang@x.com") for s in steps)


def test_empty_source_blocks_the_plan_but_keeps_it_complete() -> None:
    boxes = [mb(f"u{i}@x.com", ext_id=f"E{i}") for i in range(3)]
    links = {f"E{i}": link(f"E{i}", f"u{i}@x.com") for i in range(3)}
    plan, _ = plan_for([], boxes, links=links)
    assert plan.count(ActionKind.DISABLE_USER) == 3
    assert plan.is_blocked()
    assert [r.brake for r in plan.blocked_reasons] == ["empty_source"]
    assert "--allow-removals 3" in plan.blocked_reasons[0].how_to_release


def test_plan_fingerprints() -> None:
    desired, state, links = scenario()
    plan = diff(desired, state, links, POLICY, NOW, config_fingerprint="cfg1")
    assert plan.state_fingerprint == state.fingerprint()
    assert plan.config_fingerprint == "cfg1"
    assert plan.created_at == NOW


def test_scenario_converges() -> None:
    desired, state, links = scenario()
    plan = diff(desired, state, links, POLICY, NOW)
    world = apply_plan(plan, World.of(state, links))
    assert not diff(desired, world.state(), world.links, POLICY, NOW).actions
    assert all(
        set(ancestors(d)) <= world.parties for m in world.mailboxes.values() for d in m.departments
    )


# --- stale and duplicate links, edge rules ----------------------------------------------------


def test_stale_link_of_a_leaver_to_a_mailbox_someone_else_matches_is_dropped() -> None:
    plan, _ = plan_for(
        [Person("E4", "张三", email="a@x.com")],
        [mb("a@x.com", "张三", ext_id="E4")],
        links={"E1": link("E1", "a@x.com"), "E4": link("E4", "a@x.com")},
    )
    # two links on one mailbox are not trusted: a conflict, nobody acts on it
    assert not plan.actions
    assert plan.conflicts[0].kind is ConflictKind.MAILBOX_CLAIMED_TWICE
    plan2, world2 = plan_for(
        [Person("E4", "张三", email="a@x.com")],
        [mb("a@x.com", "张三", ext_id="E4")],
        links={"E1": link("E1", "a@x.com")},
    )
    assert [a.key for a in plan2.actions] == ["unlink:E1", "link:E4"]
    assert set(world2.links) == {"E4"}


def test_a_leaver_is_never_adopted_by_address() -> None:
    p = Person("E1", "张三", email="zs@x.com", status=Status.TERMINATED)
    plan, _ = plan_for([p], [mb("zs@x.com", "张三")])
    assert not plan.actions and plan.unmanaged == ("zs@x.com",)


def test_two_people_wanting_one_new_address_is_a_conflict() -> None:
    plan, _ = plan_for(
        [Person("E1", "张三", email="x@x.com"), Person("E2", "李四", email="X@x.com")]
    )
    assert not plan.actions
    assert plan.conflicts[0].kind is ConflictKind.ADDRESS_TAKEN
    assert plan.conflicts[0].employee_ids == ("E1", "E2")


def test_alias_listed_for_two_people_goes_to_the_first_by_employee_id() -> None:
    people = [
        Person("E2", "李四", email="ls@x.com", aliases=("team@x.com",)),
        Person("E1", "张三", email="zs@x.com", aliases=("team@x.com",)),
    ]
    plan, world = plan_for(people)
    assert world.mailboxes["zs@x.com"].aliases == ("team@x.com",)
    assert world.mailboxes["ls@x.com"].aliases == ()
    (c,) = plan.conflicts
    assert c.kind is ConflictKind.ALIAS_TAKEN and c.employee_ids == ("E2",)


def test_more_than_five_aliases_are_cut_and_reported() -> None:
    aliases = tuple(f"a{i}@x.com" for i in range(7))
    plan, world = plan_for([Person("E1", "张三", email="zs@x.com", aliases=aliases)])
    assert len(world.mailboxes["zs@x.com"].aliases) == 5
    assert plan.conflicts[0].kind is ConflictKind.TOO_MANY_ALIASES


def test_disabled_for_leave_is_never_deleted() -> None:
    p = Person("E1", "张三", email="zs@x.com", status=Status.LEAVE)
    policy = replace(POLICY, leave_action=LeaveAction.DISABLE, grace_days=1)
    plan, world = plan_for(
        [p],
        [mb("zs@x.com", "张三", ext_id="E1", enabled=False)],
        links={"E1": link("E1", "zs@x.com", disabled_since=TODAY - timedelta(days=90))},
        policy=policy,
    )
    assert not plan.actions and "zs@x.com" in world.mailboxes
    back = diff(
        Desired((replace(p, status=Status.ACTIVE),)), world.state(), world.links, policy, NOW
    )
    assert kinds(back) == [("enable_user", "zs@x.com")]


def test_stored_link_address_wins_over_an_outside_swap() -> None:
    # Someone swapped the primary address by hand; the engine keeps the linked address.
    plan, world = plan_for(
        [Person("E1", "张三")],
        [mb("other@x.com", "张三", ext_id="E1", aliases=("zhangsan@x.com",))],
        links={"E1": link("E1", "zhangsan@x.com", generated=True)},
    )
    assert kinds(plan) == [("swap_primary", "other@x.com")]
    assert "zhangsan@x.com" in world.mailboxes


def test_address_change_without_a_free_alias_slot_is_a_conflict() -> None:
    five = tuple(f"a{i}@x.com" for i in range(5))
    plan, _ = plan_for(
        [Person("E1", "张三", email="new@x.com", position="经理")],
        [mb("old@x.com", "张三", ext_id="E1", aliases=five)],
        links={"E1": link("E1", "old@x.com")},
    )
    assert not plan.actions
    assert plan.conflicts[0].kind is ConflictKind.TOO_MANY_ALIASES
    assert "free alias slot" in plan.conflicts[0].message
    # one of the five is the new address already: a plain swap needs no slot
    plan2, world = plan_for(
        [Person("E1", "张三", email="a0@x.com")],
        [mb("old@x.com", "张三", ext_id="E1", aliases=five)],
        links={"E1": link("E1", "old@x.com")},
    )
    assert kinds(plan2) == [("swap_primary", "old@x.com")]
    assert "old@x.com" in world.mailboxes["a0@x.com"].aliases


def test_department_created_for_a_move_is_never_moved_itself() -> None:
    # D moves to A/B/C (A and A/B created for it); another HR department moved from A/B to D.
    # A/B in Exmail is the one this plan creates, not HR's old A/B: it must not be moved.
    plan, world = plan_for(
        [],
        parties=["D"],
        departments=[Department("D", "D3"), Department("A", "D0"), Department("A/B/C", "D2")],
        previous=[Department("A/B", "D3"), Department("D", "D2")],
    )
    assert kinds(plan) == [
        ("create_department", "A"),
        ("create_department", "A/B"),
        ("move_department", "D"),
        ("create_department", "D"),
    ]
    assert world.parties == {"A", "A/B", "A/B/C", "D"}
