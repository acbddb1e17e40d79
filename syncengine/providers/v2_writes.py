"""Gen 2's user write bodies, and those writes as :class:`~.curl_multi.DirectPost` requests
for an executor that drives many at once (see :mod:`syncengine.providers.curl_multi`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from syncengine.domain import Gender, Mailbox, UserUpdate
from syncengine.providers.direct import CurlJsonPost
from syncengine.providers.http import TokenAuth

if TYPE_CHECKING:
    from syncengine.providers.curl_multi import DirectPost, MultiPoster


def create_user_body(
    mailbox: Mailbox,
    password: str,
    change_password_at_login: bool,
    department_ids: Callable[[Sequence[str]], list[int]],
) -> dict[str, Any]:
    """``user/create``'s body (``enable`` is not one of its fields: see ``create_user``)."""
    body: dict[str, Any] = {
        "userid": mailbox.email,
        "name": mailbox.name,
        "department": department_ids(mailbox.departments),
        "password": password,
        "cpwd_login": 1 if change_password_at_login else 0,
    }
    for key, value in (
        ("position", mailbox.position),
        ("mobile", mailbox.mobile),
        ("tel", mailbox.tel),
        ("extid", mailbox.ext_id),
    ):
        if value:
            body[key] = value
    if mailbox.gender != Gender.UNSET:
        body["gender"] = str(int(mailbox.gender))
    if mailbox.aliases:
        body["slaves"] = list(mailbox.aliases)
    return body


def update_user_body(
    email: str, update: UserUpdate, department_ids: Callable[[Sequence[str]], list[int]]
) -> dict[str, Any]:
    """``user/update``'s body for the fields ``update`` sets."""
    body: dict[str, Any] = {"userid": email}
    if update.name is not None:
        body["name"] = update.name
    if update.gender is not None:
        body["gender"] = str(int(update.gender))
    for key, value in (
        ("position", update.position),
        ("tel", update.tel),
        ("mobile", update.mobile),
        ("extid", update.ext_id),
    ):
        if value is not None:
            body[key] = value
    if update.departments is not None:
        body["department"] = department_ids(update.departments)
    if update.aliases is not None:
        body["slaves"] = list(update.aliases)
    if update.enabled is not None:
        body["enable"] = 1 if update.enabled else 0
    return body


class V2DirectWrites:
    """The user writes of :class:`~syncengine.providers.exmail_v2.ExmailV2Provider` as single
    requests, for an executor that drives many at once on one thread (the provider supplies
    the attributes below)."""

    _posts: CurlJsonPost | None
    _clock: Callable[[], float]
    _department_ids: Callable[[Sequence[str]], list[int]]
    _prepared: Callable[[str], tuple[httpx.URL, TokenAuth]]
    _checked: Callable[..., Mapping[str, Any]]

    def multi_poster(self) -> MultiPoster | None:
        """A driver for many :class:`DirectPost` at once on one thread; None when this
        client's wire is not libcurl (a test's transport): every write then takes the
        provider's ``call``."""
        if self._posts is None:
            return None
        from syncengine.providers.curl_multi import MultiPoster

        return MultiPoster(self._posts, self._clock)

    def create_user_post(
        self, mailbox: Mailbox, *, password: str, change_password_at_login: bool = True
    ) -> DirectPost | None:
        """``create_user`` as one request; None when it is not one (a disabled mailbox needs
        a second call) or writes do not go on libcurl."""
        if not mailbox.enabled or self._posts is None:
            return None
        body = create_user_body(mailbox, password, change_password_at_login, self._department_ids)
        return self._direct_post("user/create", body, mailbox.email)

    def update_user_post(self, email: str, update: UserUpdate) -> DirectPost | None:
        """``update_user`` as one request; None when it makes none or writes do not go on
        libcurl."""
        if update.is_empty() or self._posts is None:
            return None
        body = update_user_body(email, update, self._department_ids)
        return self._direct_post("user/update", body, email)

    def _direct_post(self, call: str, body: Mapping[str, Any], subject: str) -> DirectPost:
        from syncengine.providers.curl_multi import DirectPost

        assert self._posts is not None
        url, auth = self._prepared(call)
        return DirectPost(call, url, self._posts.encode(body), auth, subject, self._checked)
