"""Many Gen 2 JSON POSTs in flight on one thread: libcurl's multi interface.

The threaded apply blocks one thread per call in ``Easy.perform``; at 64 calls at once the
process spends its time handing the GIL between those threads. :class:`MultiPoster` instead
adds each request to one ``CurlMulti`` and lets libcurl do the HTTP of all of them in C; the
one thread that drives it only encodes bodies and reads the short answers.

Each request keeps what :class:`~syncengine.providers.direct.CurlJsonPost` does for a POST on
the threaded path, with the same code where it can: the pace before each request that goes
out (which blocks the driving thread while the pace asks it to wait), the token (an
invalid-token answer invalidates it and the request is sent once more with a fresh one; that
second answer is final), the client's headers and timeouts, the error mapping (a transport
failure becomes the httpx exception of that failure and then the typed error through
:func:`~.http.transport_error`; an answer other than a plain HTTP 200 becomes the
``httpx.Response`` httpx would have made and goes through :func:`~.http.decode_json`), the
provider's errcode check, and no URL with its token in a message or a log line.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import httpx
import pycurl

from syncengine.errors import ProviderError
from syncengine.providers.curl_transport import CurlAnswer, CurlTransport, _parse_head
from syncengine.providers.direct import CurlJsonPost
from syncengine.providers.http import TokenAuth, transport_error, v2_token_rejected_answer

log = logging.getLogger("syncengine.providers")

_READ = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR  # libcurl reads to learn which


@dataclass(frozen=True)
class DirectPost:
    """One Gen 2 write as it goes on the wire: the call, its URL without the token, its JSON
    body (encoded), the token it needs and the provider's check of a decoded answer (its
    errcode: raises the typed error, returns the answer when it is a success)."""

    call: str
    url: httpx.URL
    content: bytes
    auth: TokenAuth
    subject: str | None
    check: Callable[[str, Mapping[str, Any], str | None], Mapping[str, Any]]


Answer = tuple[object, "Mapping[str, Any] | ProviderError", float]
"""What a finished request gives back: its tag, the checked answer or the typed error, and
the seconds from its first send to its last answer."""


class _Handle:
    """A curl handle with its two buffers (reset for each request)."""

    __slots__ = ("body", "curl", "head", "url")

    def __init__(self, curl: pycurl.Curl) -> None:
        self.curl = curl
        self.body = BytesIO()
        self.head = BytesIO()
        self.url = ""
        curl.setopt(pycurl.WRITEFUNCTION, self.body.write)
        curl.setopt(pycurl.HEADERFUNCTION, self.head.write)


class _Flight:
    __slots__ = ("handle", "post", "resent", "sent", "started", "tag", "token")

    def __init__(
        self,
        post: DirectPost,
        tag: object,
        token: str,
        sent: httpx.URL,
        handle: _Handle,
        started: float,
        resent: bool,
    ) -> None:
        self.post = post
        self.tag = tag
        self.token = token
        self.sent = sent
        self.handle = handle
        self.started = started
        self.resent = resent


class MultiPoster:
    """Drives :class:`DirectPost` requests through one ``CurlMulti`` (see the module doc).
    One thread only: :meth:`add`, :meth:`wait` and :meth:`answers` are not thread-safe."""

    def __init__(self, poster: CurlJsonPost, clock: Callable[[], float] = time.monotonic) -> None:
        self._poster = poster
        self._clock = clock
        self._multi = pycurl.CurlMulti()
        self._idle: list[_Handle] = []
        self._flights: dict[int, _Flight] = {}
        # libcurl's socket interface: it says which sockets to watch for what, and when its
        # next timer is due; only the sockets with something to do are then handed to it
        # (``perform`` would look at every transfer in flight, each time).
        self._watch = select.epoll()
        self._watched: set[int] = set()
        self._due: float | None = None  # when libcurl's timer expires (monotonic seconds)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def add(self, post: DirectPost, tag: object) -> None:
        """Send ``post`` (after the pace); its answer comes back from :meth:`answers` with
        ``tag``. A failure before anything was sent (the token fetch) is raised here."""
        self._send(post, tag, post.auth.tokens.get(), self._clock(), resent=False)

    def _send(self, post: DirectPost, tag: object, token: str, started: float, *,
              resent: bool) -> None:  # fmt: skip
        sent, text = self._poster.target(post.url, token)
        handle = self._take(post.url)
        curl = handle.curl
        if handle.url != text:
            curl.setopt(pycurl.URL, text)
            handle.url = text
        curl.setopt(pycurl.POSTFIELDSIZE, len(post.content))
        curl.setopt(pycurl.COPYPOSTFIELDS, post.content)
        self._poster.pace(post.call)
        self._multi.add_handle(curl)
        self._flights[id(curl)] = _Flight(post, tag, token, sent, handle, started, resent)

    def _take(self, url: httpx.URL) -> _Handle:
        if self._idle:
            handle = self._idle.pop()
            handle.body.seek(0)
            handle.body.truncate()
            handle.head.seek(0)
            handle.head.truncate()
            return handle
        curl = self._poster.transport.new_handle()
        connect_ms, read_ms = self._poster.timeouts_ms
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, connect_ms)
        curl.setopt(pycurl.TIMEOUT_MS, connect_ms + read_ms)
        # The client's header lines; libcurl adds Content-Length for the body it is given,
        # and "Expect:" stops it from adding its own 100-continue handshake.
        curl.setopt(pycurl.HTTPHEADER, [*self._poster.lines(url), b"Expect:"])
        return _Handle(curl)

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        if what == pycurl.POLL_REMOVE:
            if fd in self._watched:
                self._watched.discard(fd)
                try:
                    self._watch.unregister(fd)
                except OSError:  # closed already: the kernel dropped it itself
                    pass
            return
        events = (select.EPOLLIN if what & pycurl.POLL_IN else 0) | (
            select.EPOLLOUT if what & pycurl.POLL_OUT else 0
        )
        if fd in self._watched:
            self._watch.modify(fd, events)
        else:
            self._watch.register(fd, events)
            self._watched.add(fd)

    def _on_timer(self, ms: int) -> None:
        self._due = None if ms < 0 else time.monotonic() + ms / 1000

    def wait(self, timeout: float) -> None:
        """Until a transfer has something to do, at most ``timeout`` seconds (and no longer
        than libcurl's own next timer), then let libcurl do it."""
        if not self._flights:
            if timeout > 0:
                time.sleep(timeout)
            return
        self._timers()  # what was added since the last look starts now, not after the wait
        if self._due is not None:
            timeout = max(0.0, min(timeout, self._due - time.monotonic()))
        self._poll(timeout)

    def _poll(self, timeout: float) -> None:
        act = self._multi.socket_action
        for fd, events in self._watch.poll(timeout):
            mask = (pycurl.CSELECT_IN if events & _READ else 0) | (
                pycurl.CSELECT_OUT if events & select.EPOLLOUT else 0
            )
            act(fd, mask)
        self._timers()

    def _timers(self) -> None:
        """Run libcurl's timer when it is due (a transfer just added starts this way)."""
        while self._due is not None and self._due <= time.monotonic():
            self._due = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)

    def drive(self) -> None:
        """Put what was just added on the wire now, without waiting for anything else: its
        transfer is started, and its socket written as soon as it can be."""
        if self._flights:
            self._timers()
            self._poll(0)

    def answers(self) -> list[Answer]:
        """The requests finished since the last look (a token refused once is sent again
        and answers later)."""
        multi = self._multi
        out: list[Answer] = []
        while True:
            queued, ok, failed = multi.info_read()
            for curl in ok:
                self._finished(curl, None, out)
            for curl, errno, errmsg in failed:
                self._finished(curl, pycurl.error(errno, errmsg), out)
            if not queued:
                return out

    def _finished(self, curl: pycurl.Curl, error: pycurl.error | None, out: list[Answer]) -> None:
        flight = self._flights.pop(id(curl))
        self._multi.remove_handle(curl)
        post, handle = flight.post, flight.handle
        call, subject = post.call, post.subject
        elapsed = self._clock() - flight.started
        try:
            if error is not None:
                exc = CurlTransport.error(curl, error, httpx.Request("POST", flight.sent))
                err = transport_error(call, exc, subject=subject)
                log.info("%s failed: %s", call, err)
                raise err
            status = int(curl.getinfo(pycurl.RESPONSE_CODE))
            content, head = handle.body.getvalue(), handle.head.getvalue()
            response: httpx.Response | None = None
            if status != 200 or b"content-encoding" in head.lower():
                version, reason, headers = _parse_head(head)
                answer = CurlAnswer(status, version, reason, headers, content)
                lines = [*self._poster.lines(post.url), b"Content-Length: %d" % len(post.content)]
                status, content, response = CurlJsonPost.answered(
                    call, flight.sent, lines, post.content, answer, subject
                )
            if not flight.resent and v2_token_rejected_answer(status, content):
                log.info("token refused by %s; fetching a fresh one and retrying once", call)
                tokens = post.auth.tokens
                tokens.invalidate(flight.token)
                self._idle.append(handle)
                self._send(post, flight.tag, tokens.get(), flight.started, resent=True)
                return
            data = post.check(call, CurlJsonPost.data(call, content, response, subject), subject)
        except ProviderError as exc:
            out.append((flight.tag, exc, elapsed))
        else:
            out.append((flight.tag, data, elapsed))
        finally:
            if handle not in self._idle and id(curl) not in self._flights:
                self._idle.append(handle)

    def close(self) -> None:
        """Drop what is in flight (its answers are not waited for) and close the handles."""
        for flight in self._flights.values():
            self._multi.remove_handle(flight.handle.curl)
            flight.handle.curl.close()
        self._flights.clear()
        for handle in self._idle:
            handle.curl.close()
        self._idle.clear()
        self._multi.close()
        self._watch.close()
