"""Running an app with uvicorn: in the foreground (``novelview serve``) or in a background thread (tests, benchmarks).

One process, one worker: the model lives in this process, so uvicorn's multi-process mode would load it once per
process and split the queue; scale by running more servers behind a proxy instead.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any, Optional

log = logging.getLogger("novelview.serve")

#: Seconds open connections (event streams of running jobs) get to finish on Ctrl-C before they are cut.
GRACEFUL_SHUTDOWN_S = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        proxy_headers=False,  # never trust X-Forwarded-* from arbitrary clients
        server_header=False,
    )


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on a free localhost port in a thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> str:
        self._thread = threading.Thread(target=self._server.run, name="novelview-serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self, timeout_s: float = 15.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
