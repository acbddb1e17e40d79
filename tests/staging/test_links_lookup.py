"""The narrow link reads a hook batch and the apply-time checks use instead of loading every
link (issue 14): by address, addresses only, and the count."""

from __future__ import annotations

from datetime import UTC, date, datetime

from syncengine.domain import IdentityLink
from syncengine.staging.repository import Repository

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_links_by_address_addresses_only_and_count(staging_repo: Repository) -> None:
    repo = staging_repo
    a = IdentityLink("E1", "a@example.com", T0)
    b = IdentityLink("E2", "b@example.com", T0, date(2026, 2, 1), generated=True)
    c = IdentityLink("E3", "c@example.com", T0)
    assert repo.count_links() == 0 and repo.links_to(["a@example.com"]) == {}
    repo.save_links([a, b, c])
    # Compared lower-case, blanks and unknown addresses ignored; the whole link comes back.
    assert repo.links_to([" B@Example.com", "nobody@example.com", ""]) == {"E2": b}
    assert repo.links_to(["a@example.com", "c@example.com"]) == {"E1": a, "E3": c}
    assert repo.link_emails() == {"E1": "a@example.com", "E2": "b@example.com",
                                  "E3": "c@example.com"}  # fmt: skip
    assert repo.count_links() == 3
    assert repo.link_emails() == {e: lk.email for e, lk in repo.load_links().items()}
