"""Running an app with uvicorn: in the foreground (``novelview serve``) or in a background thread (tests, benchmarks).

One process, one worker: the model lives in this process, so uvicorn's multi-process mode would load it once per
process and split the queue; scale by running more servers behind a proxy instead.

Both ways share one configuration (:class:`ConnectionLimits`): a client that opens a connection must finish
sending its request headers within ``header_timeout_s`` (uvicorn itself would wait forever), at most
``max_connections`` connections are served at once (further requests get ``503``), and on SIGTERM or Ctrl-C
every unfinished job ends as cancelled first, so open progress streams send their final event before the
connections close.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from novelview.errors import NovelviewError

log = logging.getLogger("novelview.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0  # from connecting (or the end of the previous response) to complete headers
    max_connections: int = 64  # open connections, event streams included; requests beyond it get 503
    keep_alive_s: int = 5  # an idle connection is closed after this long
    graceful_shutdown_s: int = 5  # open connections get this long to finish on SIGTERM / Ctrl-C


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for request headers (slow-header clients are disconnected)."""

    header_timeout_s: float = ConnectionLimits.header_timeout_s
    _header_deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before the parent handles a pipelined request, which disarms it again
        super().on_response_complete()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """Ends the app's jobs before uvicorn waits for open connections (progress streams then finish by themselves)."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        jobs = getattr(getattr(app, "state", None), "jobs", None)
        self._begin_shutdown = getattr(jobs, "begin_shutdown", None)

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        if self._begin_shutdown is not None:
            self._begin_shutdown()
        await super().shutdown(sockets=sockets)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a port in use or a host that is not ours is a user error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        if err.errno == errno.EADDRINUSE:
            raise NovelviewError(f"{shown}:{port} is already in use (another server?); choose another --port") from None
        raise NovelviewError(f"cannot listen on {shown}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def _server(app: Any, log_level: str, limits: ConnectionLimits, graceful_s: int) -> _Server:
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": limits.header_timeout_s})
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level,
        lifespan="on",
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
        timeout_graceful_shutdown=graceful_s,
        proxy_headers=False,  # never trust X-Forwarded-* from arbitrary clients
        server_header=False,
    )
    return _Server(config, app)


def run(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limits: ConnectionLimits = ConnectionLimits(),
    sock: Optional[socket.socket] = None,
) -> None:
    """Serve ``app`` until interrupted (``sock``: one :func:`bind` made earlier, so a busy port fails first)."""
    sock = sock if sock is not None else bind(host, port)
    _server(app, log_level, limits, limits.graceful_shutdown_s).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on a free localhost port in a thread."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        self._sock = bind(host, port)
        self._server = _server(app, log_level, limits, graceful_s=2)
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> str:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="novelview-serve-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return self.url

    def stop(self, timeout_s: float = 15.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
