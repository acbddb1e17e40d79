"""The approval pages of ``syncengine serve`` (issue 12), mounted at ``/review``.

* ``GET /review/login``, ``POST /review/login``: sign in with an ``[[review.approvers]]``
  account (argon2 hash). A failed sign-in says only that the name or password is wrong.
* ``GET /review/``: the plans waiting for a decision, newest first.
* ``GET /review/plans/{id}``: the plan page (the same page as ``show --format html``) with
  Approve / Reject and a comment, and the decisions so far.
* ``POST /review/plans/{id}/decision``: records the decision (see :mod:`syncengine.approvals`:
  refused for a stale or edited plan), an audit row with it.
* ``POST /review/logout``.

Five wrong passwords in a row for one name lock that name out for five minutes (429).

Sessions live in this process's memory (a restart signs everyone out): a random token in an
``HttpOnly; SameSite=Strict`` cookie (``Secure`` unless ``[review] secure_cookies = false``),
scoped to ``/review``, expiring after ``session_minutes``. Every POST carries a CSRF token
that must match the session's (the sign-in form's matches a sign-in cookie). Pages are sent
with a Content-Security-Policy that allows the plan page's own script and nothing else, no
framing, no caching.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

import jinja2
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from syncengine import plan_page
from syncengine.hooks.bodies import Gone, TooLarge, read_capped, tell, tell_gone
from syncengine.plan import Plan
from syncengine.plan_page import ReviewContext
from syncengine.translations import translations

log = logging.getLogger(__name__)

PREFIX = "/review"
SESSION_COOKIE = "syncengine_review"
LOGIN_COOKIE = "syncengine_review_login"
MAX_FORM_BYTES = 16_384
CSRF_REFUSED = "Missing or wrong CSRF token: nothing was recorded."
THROTTLED = "Too many failed sign-ins for this name; wait a few minutes."
MAX_FAILURES = 5
LOCKOUT_SECONDS = 300.0
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash verified for an unknown name (the same work as for a known one). Made once,
    when the first pages are built, not on import: ``plan`` imports this module and
    never signs anyone in (an argon2 hash is 0.2 s of CPU and 64 MiB)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


@dataclass(frozen=True)
class ReviewSettings:
    """What the pages need from ``[review]``: language, accounts (name -> argon2 hash) and
    the session rules."""

    lang: str = "zh"
    approvers: Mapping[str, str] = field(default_factory=dict)
    secure_cookies: bool = True
    session_minutes: int = 480


@dataclass(frozen=True)
class PlanView:
    """One stored plan as its review page shows it."""

    plan: Plan
    context: ReviewContext
    stale: str | None  # why no decision can be taken any more (None: open)
    needs: str | None  # why the approval policy wants a decision (None: it does not)
    decisions: list[dict[str, str]]  # decision, approver, at, checksum, comment


class ReviewBackend(Protocol):
    """The staging side of the pages (built by the service layer)."""

    settings: ReviewSettings

    def pending(self) -> list[dict[str, Any]]:
        """Plans waiting for a decision, newest first: id, created, short, add, change,
        remove, blocked, decision."""

    def view(self, plan_id: int) -> PlanView | None: ...

    def decide(
        self, plan_id: int, *, user: str, decision: str, checksum: str, comment: str
    ) -> str | None:
        """Record the decision; the refusal's text when it is refused."""


_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!DOCTYPE html>
<html lang="{{ html_lang }}"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.35rem .5rem;
text-align:left}.error{color:#cf222e;font-weight:600}.rem{color:#cf222e}.add{color:#1a7f37}
</style></head><body><h1>{{ title }}</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
{% if login %}
<form method="post" action="{{ prefix }}/login" id="login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<p><label>{{ t("Name") }}<br><input name="name" id="name" autocomplete="username"></label></p>
<p><label>{{ t("Password") }}<br><input name="password" id="password" type="password"
autocomplete="current-password"></label></p><p><button type="submit" id="signin">{{ t("Sign in")
}}</button></p></form>
{% else %}
<form method="post" action="{{ prefix }}/logout"><input type="hidden" name="csrf"
value="{{ csrf }}">{{ t("Signed in as %(user)s", user=user) }}
<button type="submit" id="logout">{{ t("Sign out") }}</button></form>
{% if plans %}<table id="pending"><thead><tr><th>#</th><th>{{ t("Created") }}</th>
<th>{{ t("Checksum") }}</th><th>{{ t("Changes") }}</th><th>{{ t("Decision") }}</th></tr></thead>
<tbody>{% for p in plans %}<tr class="plan"><td><a href="{{ prefix }}/plans/{{ p.id }}">#{{ p.id
}}</a></td><td>{{ p.created }}</td><td><code>{{ p.short }}</code></td><td><span class="add">+{{
p.add }}</span> ~{{ p.change }} <span class="rem">−{{ p.remove }}</span>{% if p.blocked %} · {{
t("blocked") }}{% endif %}</td><td>{{ p.decision }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p id="none">{{ t("No plan is waiting for a decision.") }}</p>{% endif %}
{% endif %}</body></html>"""
)


class ReviewPages:
    """The sub-app's state: the config, the sessions, and the routes."""

    def __init__(self, backend: ReviewBackend, prefix: str = PREFIX) -> None:
        self.backend = backend
        self.prefix = prefix  # where the pages are mounted (a tenant's: /tenants/NAME/review)
        self.settings = backend.settings
        self.accounts = dict(self.settings.approvers)
        self._dummy = _dummy_hash()
        self.sessions: dict[str, Session] = {}
        self.failures: dict[str, tuple[int, float]] = {}  # name -> (count, locked until)
        self._lock = threading.Lock()
        self.lang = self.settings.lang
        self._ = translations(self.lang).gettext

    # --- plumbing ----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; "
                f"script-src 'sha256-{plan_page.SCRIPT_SHA256}'; form-action 'self'; "
                "frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }

    def _html(self, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=self._headers())

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=self.prefix, httponly=True, samesite="strict",
            secure=self.settings.secure_cookies,
        )  # fmt: skip

    def _t(self, text: str, **kw: Any) -> str:
        out = self._(text)
        return out % kw if kw else out

    def _simple(self, title: str, status: int = 200, **kw: Any) -> HTMLResponse:
        defaults: dict[str, Any] = {"error": None, "login": False, "csrf": "", "user": "",
                                    "plans": []}  # fmt: skip
        body = _PAGE.render(
            html_lang="zh-CN" if self.lang == "zh" else "en",
            title=title, prefix=self.prefix, t=self._t, **{**defaults, **kw},
        )  # fmt: skip
        return self._html(body, status)

    def session(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE, "")
        with self._lock:
            s = self.sessions.get(token)
            if s is not None and s.expires < time.monotonic():
                del self.sessions[token]
                return None
            return s

    async def form(self, request: Request) -> dict[str, str] | Response:
        """The posted form's fields, or the refusal to send instead: a body past
        :data:`MAX_FORM_BYTES` is refused by its declared length or as soon as it streams
        past it (never buffered beyond), and a client gone mid-body gets one log line."""
        try:
            body = await read_capped(request, MAX_FORM_BYTES)
        except TooLarge:
            message = f"the form is larger than {MAX_FORM_BYTES} bytes"
            tell(request, 413, message)
            return PlainTextResponse(message, 413, headers=self._headers())
        except Gone:
            tell_gone(request)
            return PlainTextResponse("the form was not received", 400, headers=self._headers())
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items() if v}

    # --- sign in / out -----------------------------------------------------------------

    def _login_page(self, error: str | None = None, status: int = 200) -> Response:
        token = secrets.token_urlsafe(32)
        response = self._simple(self._t("Sign in to review plans"), status, login=True,
                                csrf=token, error=error)  # fmt: skip
        self._cookie(response, LOGIN_COOKIE, token, 600)
        return response

    async def login_form(self, request: Request) -> Response:
        return self._login_page()

    def _check_password(self, name: str, password: str) -> bool:
        stored = self.accounts.get(name)
        try:
            return _HASHER.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    async def login(self, request: Request) -> Response:
        data = await self.form(request)
        if isinstance(data, Response):
            return data
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, data.get("csrf", "")):
            log.warning("review sign-in refused: missing or wrong CSRF token")
            return self._login_page(self._t("The form expired; please sign in again."), 403)
        name = data.get("name", "").strip()[:100]
        with self._lock:
            count, until = self.failures.get(name, (0, 0.0))
        if until > time.monotonic():
            log.warning("review sign-in refused for %r: locked out after failures", name)
            return self._login_page(self._t(THROTTLED), 429)
        ok = await run_in_threadpool(self._check_password, name, data.get("password", ""))
        if not ok:
            count += 1
            locked = time.monotonic() + LOCKOUT_SECONDS if count >= MAX_FAILURES else 0.0
            with self._lock:
                self.failures[name] = (0 if locked else count, locked)
            log.warning("review sign-in refused for %r: wrong name or password", name)
            return self._login_page(self._t("Wrong name or password."), 401)
        with self._lock:
            self.failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        minutes = self.settings.session_minutes
        with self._lock:
            self.sessions[token] = Session(name, secrets.token_urlsafe(32),
                                           time.monotonic() + minutes * 60)  # fmt: skip
        log.info("review: %s signed in", name)
        response = RedirectResponse(f"{self.prefix}/", status_code=303, headers=self._headers())
        self._cookie(response, SESSION_COOKIE, token, minutes * 60)
        response.delete_cookie(LOGIN_COOKIE, path=self.prefix)
        return response

    async def logout(self, request: Request) -> Response:
        s = self.session(request)
        data = await self.form(request)
        if isinstance(data, Response):
            return data
        if s is not None and hmac.compare_digest(s.csrf, data.get("csrf", "")):
            with self._lock:
                self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = RedirectResponse(
            f"{self.prefix}/login", status_code=303, headers=self._headers()
        )
        response.delete_cookie(SESSION_COOKIE, path=self.prefix)
        return response

    # --- pages -------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse(f"{self.prefix}/login", status_code=303)
        rows = await run_in_threadpool(self.backend.pending)
        return self._simple(self._t("Plans waiting for a decision"), user=s.user, csrf=s.csrf,
                            plans=rows)  # fmt: skip

    def _plan_page(self, plan_id: int, s: Session, message: str | None) -> tuple[int, str]:
        view = self.backend.view(plan_id)
        if view is None:
            return 404, ""
        decided = [{**d, "decision": self._t(d["decision"])} for d in view.decisions]
        approval = {
            "user": s.user, "home": f"{self.prefix}/", "csrf": s.csrf,
            "action": f"{self.prefix}/plans/{plan_id}/decision", "open": view.stale is None,
            "closed": view.stale or "", "message": message or "", "decisions": decided,
            "needs": view.needs or "",
        }  # fmt: skip
        page = plan_page.render_page(
            view.plan, release=None, context=view.context, approval=approval
        )
        return 200, page

    async def plan(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse(f"{self.prefix}/login", status_code=303)
        plan_id = int(request.path_params["plan_id"])
        note = request.query_params.get("done")
        message = {"approved": self._t("Approved."), "rejected": self._t("Rejected.")}.get(
            note or ""
        )
        status, body = await run_in_threadpool(self._plan_page, plan_id, s, message)
        if status == 404:
            return self._simple(self._t("No such plan"), 404, user=s.user, csrf=s.csrf,
                                error=f"#{plan_id}")  # fmt: skip
        return self._html(body)

    def _decide(self, plan_id: int, user: str, data: dict[str, str]) -> str | None:
        return self.backend.decide(
            plan_id,
            user=user,
            decision=data.get("decision", ""),
            checksum=data.get("checksum", ""),
            comment=data.get("comment", ""),
        )

    async def decide(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return self._simple(self._t("Sign in to review plans"), 401,
                                error=self._t("Your session ended; sign in again."))  # fmt: skip
        data = await self.form(request)
        if isinstance(data, Response):
            return data
        if not hmac.compare_digest(s.csrf, data.get("csrf", "")):
            log.warning("review: decision by %s refused: missing or wrong CSRF token", s.user)
            return self._simple(self._t("Refused"), 403, user=s.user, csrf=s.csrf,
                                error=self._t(CSRF_REFUSED))  # fmt: skip
        plan_id = int(request.path_params["plan_id"])
        refused = await run_in_threadpool(self._decide, plan_id, s.user, data)
        if refused is not None:
            log.warning("review: decision by %s on plan #%s refused: %s", s.user, plan_id,
                        refused)  # fmt: skip
            return self._simple(self._t("Refused"), 409, user=s.user, csrf=s.csrf,
                                error=refused)  # fmt: skip
        done = data.get("decision", "")
        return RedirectResponse(f"{self.prefix}/plans/{plan_id}?done={done}", status_code=303,
                                headers=self._headers())  # fmt: skip

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/login", self.login_form, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/", self.home, methods=["GET"]),
                Route("/plans/{plan_id:int}", self.plan, methods=["GET"]),
                Route("/plans/{plan_id:int}/decision", self.decide, methods=["POST"]),
            ]
        )


def with_review(app: ASGIApp, backend: ReviewBackend | None, *, prefix: str = PREFIX) -> ASGIApp:
    """``app`` with the review pages mounted at ``prefix`` (None: without them)."""
    if backend is None:
        return app
    pages = ReviewPages(backend, prefix)
    return Starlette(routes=[Mount(prefix, app=pages.app()), Mount("", app=app)])
