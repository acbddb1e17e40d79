"""Listening sockets for the servers the engine runs (the emulator, the hook receiver).

One helper so both get the same care: ``IPPROTO_TCP`` as the protocol (not 0), so asyncio sets
TCP_NODELAY on accepted connections. Without it every keep-alive response stalls about 40 ms
on Nagle's algorithm plus the client's delayed ACK.
"""

from __future__ import annotations

import socket


def listening_socket(host: str, port: int, *, backlog: int = 512) -> socket.socket:
    """A bound, listening TCP socket with TCP_NODELAY; ``port`` 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock
