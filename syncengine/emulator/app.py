"""Builds the emulator's Starlette app for one API generation.

Routes: Gen 2 ``/cgi-bin/<endpoint>``; Gen 1 ``/cgi-bin/token`` and ``/openapi/<endpoint>``;
both ``/cgi-bin/login`` (the SSO landing page a login URL leads to); ``/_emulator/...`` when
the control API is on. A raw ASGI middleware in front of the API routes injects latency, 503
answers and dropped connections, and writes the call log.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncengine.emulator import control, gen1, gen2
from syncengine.emulator.model import Directory
from syncengine.emulator.options import EmulatorOptions
from syncengine.emulator.runtime import Runtime
from syncengine.emulator.seed import default_seed

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499
"""The call log's status of a request whose client went away before it was answered (the
status nginx logs for it; nothing is sent)."""
_ERRCODE = re.compile(rb'"errcode"\s*:\s*"?(-?\d+)')


class FaultsAndLog:
    """Latency, 503, dropped connections and the call log, for every non-control request.

    A drop sends the response head with a Content-Length and closes without the body, so a
    real client sees the connection die mid-response (httpx: RemoteProtocolError).
    """

    def __init__(self, app: ASGIApp, runtime: Runtime):
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        roll = self.rt.roll()
        fail, drop = roll.fail, roll.drop
        if roll.latency_ms:
            await asyncio.sleep(roll.latency_ms / 1000)
        path, method = scope["path"], scope["method"]
        if roll.busy and path != "/cgi-bin/login":
            code = -1 if self.rt.api == "v2" else 1002
            body = (
                b'{"errcode":-1,"errmsg":"system busy"}'
                if code == -1
                else b'{"errcode":"1002","error":"temporarily_unavailable"}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            self.rt.record(path, method, 200, code, _ms(started))
            return
        if fail:
            body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"text/html"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            self.rt.record(path, method, 503, None, _ms(started))
            return
        if drop and roll.drop_when == "before":
            await _drop(send)
            self.rt.record(path, method, 0, None, _ms(started), dropped=True)
            return
        status = 0
        head = b""

        async def capture(message: Message) -> None:
            nonlocal status, head
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(head) < 200:
                head += message.get("body", b"")[:200]
            if not drop:
                await send(message)

        try:
            await self.app(scope, receive, capture)
        except ClientDisconnect:  # the client went away before its body arrived (killed)
            log.info("emulator: %s %s: the client closed the connection mid-request", method, path)
            self.rt.record(path, method, CLIENT_CLOSED, None, _ms(started))
            return
        if drop:
            await _drop(send)
            self.rt.record(path, method, 0, None, _ms(started), dropped=True)
            return
        match = _ERRCODE.search(head)
        errcode = int(match.group(1)) if match else None
        if errcode is None and b'"invalid_token"' in head:
            errcode = 1200  # the Gen 1 refusal without its errcode (invalid_token_answer "error")
        self.rt.record(path, method, status, errcode, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _drop(send: Send) -> None:
    log.info("emulator: dropping the connection (injected fault)")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"errcode":', "more_body": True})
    # Returning now leaves the response incomplete: uvicorn closes the connection.


async def sso_login(request: Request) -> Response:
    """The page a login URL leads to: checks the single-use key and names the user."""
    rt: Runtime = request.app.state.emulator
    q = {k.lower(): v for k, v in request.query_params.items()}
    user = None
    if q.get("fun") == "bizopenssologin":
        if q.get("method") == "openapi" and "authkey" in q:
            user = rt.directory.redeem_sso_key(q["authkey"], q.get("userid", ""), None)
        elif q.get("method") == "bizauth" and "ticket" in q:
            user = rt.directory.redeem_sso_key(q["ticket"], q.get("user", ""), q.get("agent", ""))
    if user is None or not user.enable:
        reason = "account disabled" if user is not None else "invalid or used login key"
        return HTMLResponse(
            f'<html><body><h1>登录失败</h1><p id="reason">{reason}</p></body></html>',
            status_code=403,
        )
    return HTMLResponse(
        "<html><head><title>腾讯企业邮箱</title></head><body>"
        f"<h1>欢迎, {html.escape(user.name)}</h1>"
        f'<p id="user">{html.escape(user.userid)}</p></body></html>'
    )


def create_app(
    api: Literal["v1", "v2"],
    seed: dict[str, Any] | None = None,
    options: EmulatorOptions | None = None,
) -> Starlette:
    """A ready Starlette app emulating one generation; ``app.state.emulator`` is its runtime.

    With ``options.state_file`` pointing at an existing file the state is loaded from it and
    the seed only serves ``/_emulator/reset``.
    """
    if api not in ("v1", "v2"):
        raise ValueError(f"api must be 'v1' or 'v2' (got {api!r})")
    options = options or EmulatorOptions()
    directory = Directory(
        seed if seed is not None else default_seed(), state_file=options.state_file
    )
    runtime = Runtime(api, directory, options)
    routes: list[Route] = [Route("/cgi-bin/login", sso_login, methods=["GET"])]
    if api == "v2":
        routes.append(Route("/cgi-bin/{path:path}", gen2.endpoint, methods=["GET", "POST"]))
    else:
        routes.append(Route("/cgi-bin/token", gen1.token_endpoint, methods=["GET", "POST"]))
        routes.append(Route("/openapi/{path:path}", gen1.endpoint, methods=["GET", "POST"]))
    if options.control:
        routes.extend(control.ROUTES)
    app = Starlette(routes=routes)
    app.state.emulator = runtime
    app.add_middleware(FaultsAndLog, runtime=runtime)
    return app
