"""The guess of the addresses a plan will create, checked with Exmail while the diff runs."""

from __future__ import annotations

from datetime import UTC, datetime

from syncengine.domain import IdentityLink, Mailbox, MailboxState, Person, Status
from syncengine.planner import Desired, diff
from syncengine.policy import Policy
from syncengine.service.address_checks import known_addresses, likely_new_addresses
from syncengine.service.planning import _addresses_to_create

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def test_the_guess_is_what_the_plan_creates() -> None:
    policy = Policy(domain="example.com")
    state = MailboxState(
        (
            Mailbox("zhangsan@example.com", "张三", ext_id="E1"),
            Mailbox("old.li@example.com", "李四", ext_id="E2", aliases=("li@example.com",)),
            Mailbox("wangwu@example.com", "王五", ext_id="E3"),
        ),
        groups=("all@example.com",),
    )
    links = {"E1": IdentityLink("E1", "zhangsan@example.com", NOW)}
    people = (
        Person("E1", "张三", "zhangsan@example.com"),  # unchanged: nothing new
        Person("E2", "李四", "Lisi.New@Example.com", aliases=("li@example.com",)),  # new primary
        Person("E3", "王五", "wangwu.new@example.com", status=Status.TERMINATED),  # leaving
        Person("E4", "赵六"),  # a hire without an address: one is generated
        Person("E5", "孙七", "sunqi@example.com", aliases=("qi@example.com",)),  # a hire
    )
    desired = Desired(people=people)
    known = known_addresses(state)
    guess = likely_new_addresses(desired, state, links, policy, policy.today(NOW), known)
    planned = _addresses_to_create(diff(desired, state, links, policy, NOW), state)
    assert (
        guess
        == planned
        == {
            "lisi.new@example.com",
            "zhaoliu@example.com",
            "sunqi@example.com",
            "qi@example.com",
        }
    )


def test_known_addresses_are_every_primary_alias_and_group_lower_cased() -> None:
    state = MailboxState(
        (Mailbox("A@Example.com", "A", aliases=("B@example.com",)),), groups=("G@example.com",)
    )
    assert known_addresses(state) == {"a@example.com", "b@example.com", "g@example.com"}


def test_early_checks_give_the_answers_or_raise_the_error_in_the_caller() -> None:
    from syncengine.domain import AddressKind
    from syncengine.errors import RetriableProviderError
    from syncengine.service.address_checks import EarlyChecks

    asked: list[list[str]] = []

    def check(addresses: list[str]) -> dict[str, AddressKind]:
        asked.append(addresses)
        return {a.upper(): AddressKind.GROUP for a in addresses}

    assert EarlyChecks(check, {"b@x.com", "a@x.com"}).result() == {
        "a@x.com": AddressKind.GROUP,
        "b@x.com": AddressKind.GROUP,
    }
    assert asked == [["a@x.com", "b@x.com"]]
    assert EarlyChecks(check, ()).result() == {} and len(asked) == 1  # nothing to ask: no call

    def failing(addresses: list[str]) -> dict[str, AddressKind]:
        raise RetriableProviderError("Exmail is busy", call="user/batchcheck")

    early = EarlyChecks(failing, {"a@x.com"})
    try:
        early.result()
    except RetriableProviderError as exc:
        assert "user/batchcheck" in str(exc)
    else:
        raise AssertionError("the check's error was not raised")
