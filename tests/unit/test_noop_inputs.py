"""What the no-op proof leaves out of its digest cannot change a plan without actions.

service/noop_proof.py digests the planner's inputs. Two of them it reads in a reduced form,
on the strength of how the planner uses them; these tests hold the planner to that:
- the shrink baseline (``previous_size``) feeds only the brakes, and every brake needs an
  action: a plan without actions is the same whatever the baseline;
- the earlier departments are read as a set of (path, HR id): repeating them (a nightly copy
  of the same snapshot) or reordering them changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from syncengine.domain import Department, IdentityLink, Mailbox, MailboxState, Party, Person
from syncengine.plan import Plan
from syncengine.planner import Desired, diff
from syncengine.policy import Brakes, Policy

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DEPTS = ("研发/平台", "研发/移动", "销售")


def world(n: int = 30) -> tuple[Desired, MailboxState, dict[str, IdentityLink]]:
    """HR and Exmail in agreement: the plan has no action."""
    people, boxes, links = [], [], {}
    for i in range(n):
        eid, email, dept = f"E{i:03d}", f"p{i}@x.com", DEPTS[i % 3]
        people.append(Person(eid, f"人{i}", email, departments=(dept,)))
        boxes.append(Mailbox(email, f"人{i}", ext_id=eid, departments=(dept,)))
        links[eid] = IdentityLink(eid, email, NOW)
    depts = tuple(Department(p, f"D{i}") for i, p in enumerate(DEPTS))
    parties = tuple(Party(p, i + 2) for i, p in enumerate(["研发", *DEPTS]))
    desired = Desired(people=tuple(people), departments=depts)
    return desired, MailboxState(tuple(boxes), parties), links


def plan(desired: Desired, state: MailboxState, links: dict[str, IdentityLink],
         policy: Policy) -> Plan:  # fmt: skip
    return diff(desired, state, links, policy, NOW)


POLICIES = [
    Policy(domain="x.com"),
    Policy(domain="x.com", brakes=Brakes(min_existing=1, max_shrink_share=0.01)),
    Policy(domain="x.com", delete_empty_departments=True, disable_unmanaged=True),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("previous_size", [None, 0, 1, 30, 10**6])
def test_the_shrink_baseline_cannot_change_a_plan_without_actions(
    policy: Policy, previous_size: int | None
) -> None:
    desired, state, links = world()
    base = plan(desired, state, links, policy)
    assert not base.actions and not base.blocked_reasons
    other = plan(replace(desired, previous_size=previous_size), state, links, policy)
    assert other.to_dict() == base.to_dict()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", range(5))
def test_earlier_departments_count_as_a_set(policy: Policy, seed: int) -> None:
    rng = random.Random(seed)
    desired, state, links = world()
    earlier = [*desired.departments, Department("旧部门", "D9"), Department("研发/平台", None)]
    once = replace(desired, previous_departments=tuple(earlier))
    repeated = earlier * rng.randint(2, 5)
    rng.shuffle(repeated)
    many = replace(desired, previous_departments=tuple(repeated))
    assert plan(many, state, links, policy).to_dict() == plan(once, state, links, policy).to_dict()
