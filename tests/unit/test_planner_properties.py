"""Hypothesis properties of the planner over small random directories.

1. Convergence: applying a plan to the in-memory Exmail model and planning again gives no
   actions.
2. Valid order: the model asserts while applying (departments before their users and children,
   users out before a department is deleted, alias added before the swap, addresses free).
3. Determinism: shuffled inputs give the same plan and checksum; JSON round trips exactly.

Pools are small (a few ids, names, addresses and departments) so collisions, clashes and
conflicts are frequent; example counts are modest to keep the suite fast.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncengine.domain import (
    Department,
    Gender,
    IdentityLink,
    Mailbox,
    MailboxState,
    Party,
    Person,
    Status,
    ancestors,
)
from syncengine.plan import Plan
from syncengine.planner import Desired, diff
from syncengine.policy import AliasMode, Brakes, LeaveAction, Policy
from tests.unit.test_planner import NOW, TODAY, World, apply_plan

IDS = [f"E{i}" for i in range(1, 8)]
NAMES = ["张伟", "张伟", "欧阳娜娜", "单雄信", "曾国藩", "John Smith", "李娜"]
ADDRS = [f"{x}@x.com" for x in ("a", "b", "c", "d", "e", "f", "zhangwei", "lina", "g", "h")]
MORE = [f"m{i}@x.com" for i in range(8)]  # extra aliases, so some mailboxes have five
PATHS = ["A", "A/B", "A/B/C", "D", "D/E", "F"]
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def closed(paths: set[str]) -> set[str]:
    return paths | {a for p in paths for a in ancestors(p)}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Desired, MailboxState, dict[str, IdentityLink], Policy]:
    # Exmail: distinct addresses shared out between mailboxes (primary + aliases) and groups.
    addrs = draw(st.permutations(ADDRS + MORE))
    n_boxes = draw(st.integers(0, 5))
    pos = 0
    boxes: list[Mailbox] = []
    parties = closed(set(draw(st.lists(st.sampled_from(PATHS), max_size=4))))
    for _ in range(n_boxes):
        n_alias = draw(st.sampled_from([0, 0, 1, 2, 5]))
        if pos + 1 + n_alias > len(addrs):
            break
        primary, aliases = addrs[pos], tuple(sorted(addrs[pos + 1 : pos + 1 + n_alias]))
        pos += 1 + n_alias
        depts = tuple(
            sorted(set(draw(st.lists(st.sampled_from(sorted(parties) or [""]), max_size=2))) - {""})
        )
        boxes.append(
            Mailbox(
                email=primary,
                name=draw(st.sampled_from(NAMES)),
                ext_id=draw(st.sampled_from(["", "", *IDS])),
                departments=depts,
                aliases=aliases,
                gender=draw(st.sampled_from(list(Gender))),
                enabled=draw(st.booleans()),
            )
        )
    groups = tuple(addrs[pos : pos + draw(st.integers(0, 1))])

    # HR.
    people: list[Person] = []
    for eid in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=6)):
        status = draw(
            st.sampled_from([Status.ACTIVE, Status.ACTIVE, Status.LEAVE, Status.TERMINATED])
        )
        people.append(
            Person(
                employee_id=eid,
                name=draw(st.sampled_from(NAMES)),
                email=draw(st.sampled_from([None, None, *ADDRS])),
                aliases=tuple(draw(st.lists(st.sampled_from(ADDRS), max_size=2, unique=True))),
                departments=tuple(draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True))),
                position=draw(st.sampled_from(["", "工程师"])),
                gender=draw(st.sampled_from(list(Gender))),
                status=status,
                start_date=draw(
                    st.sampled_from([None, TODAY + timedelta(days=3), TODAY + timedelta(days=30)])
                ),
                end_date=draw(st.sampled_from([None, None, TODAY, TODAY + timedelta(days=5)])),
            )
        )
    # HR departments with ids; the previous snapshot may have had them elsewhere.
    hr_ids = {p: f"D{i}" for i, p in enumerate(PATHS)}
    listed = draw(st.lists(st.sampled_from(PATHS), max_size=3, unique=True))
    departments = tuple(Department(p, hr_ids[p]) for p in listed)
    previous = tuple(
        Department(draw(st.sampled_from(PATHS)), d.hr_id)
        for d in departments
        if draw(st.booleans())
    )
    # Stored links.
    links: dict[str, IdentityLink] = {}
    for eid in draw(st.lists(st.sampled_from(IDS), unique=True, max_size=4)):
        links[eid] = IdentityLink(
            eid,
            draw(st.sampled_from(ADDRS)),
            NOW - timedelta(days=100),
            disabled_since=draw(st.sampled_from([None, TODAY - timedelta(days=40), TODAY])),
            generated=draw(st.booleans()),
        )
    policy = Policy(
        domain="x.com",
        protected=("admin@*", "h@*"),
        delete_empty_departments=draw(st.booleans()),
        disable_unmanaged=draw(st.booleans()),
        alias_mode=draw(st.sampled_from(list(AliasMode))),
        leave_action=draw(st.sampled_from(list(LeaveAction))),
        grace_days=draw(st.sampled_from([1, 30])),
        brakes=Brakes(min_existing=0),
    )
    desired = Desired(
        tuple(people),
        departments,
        frozenset(draw(st.lists(st.sampled_from(IDS), max_size=1)))
        - {p.employee_id for p in people},
        None,
        previous,
    )
    state = MailboxState(tuple(boxes), tuple(Party(p) for p in sorted(parties)), groups)
    return desired, state, links, policy


@SETTINGS
@given(worlds())
def test_plan_applies_in_order_and_converges(
    case: tuple[Desired, MailboxState, dict[str, IdentityLink], Policy],
) -> None:
    desired, state, links, policy = case
    plan = diff(desired, state, links, policy, NOW)
    world = apply_plan(plan, World.of(state, links))  # asserts a valid order
    rolled = replace(desired, previous_departments=desired.departments)
    for _ in range(3):
        rolled = replace(rolled, former_addresses=world.former)  # the audit's swaps
        again = diff(rolled, world.state(), world.links, policy, NOW)
        if not again.actions:
            break
        # Only a conflict may need another run (e.g. an address freed by a deletion in this
        # plan becomes available to the person who wanted it); otherwise one plan suffices.
        assert plan.conflicts, [a.key for a in again.actions]
        world = apply_plan(again, world)
    else:
        raise AssertionError(f"no convergence after 3 runs: {[a.key for a in again.actions]}")
    # every department a mailbox is in exists, with its ancestors
    for m in world.mailboxes.values():
        for d in m.departments:
            assert d in world.parties and set(ancestors(d)) <= world.parties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.randoms(use_true_random=False))
def test_same_inputs_in_any_order_give_the_same_plan(
    case: tuple[Desired, MailboxState, dict[str, IdentityLink], Policy], rnd: random.Random
) -> None:
    desired, state, links, policy = case
    plan = diff(desired, state, links, policy, NOW)
    people, boxes, parties = list(desired.people), list(state.mailboxes), list(state.parties)
    link_items = list(links.items())
    depts, previous = list(desired.departments), list(desired.previous_departments)
    for seq in (people, boxes, parties, link_items, depts, previous):
        rnd.shuffle(seq)  # type: ignore[arg-type]
    shuffled = diff(
        replace(
            desired,
            people=tuple(people),
            departments=tuple(depts),
            previous_departments=tuple(previous),
        ),
        MailboxState(tuple(boxes), tuple(parties), state.groups),
        dict(link_items),
        policy,
        NOW,
    )
    assert shuffled.checksum == plan.checksum
    assert Plan.from_json(plan.to_json()) == plan
