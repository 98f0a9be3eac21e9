"""Request policies in front of every route: which Host names are served, which origins may change state, and
the headers that keep the page self-contained (see docs/security.md).

Both are pure ASGI middleware, so event streams pass through untouched.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``, ``Example.org.:80`` -> ``example.org``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always this machine
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostOriginPolicy:
    """Serve only requests whose Host is a loopback name or an allowed one (DNS rebinding lands elsewhere), and
    refuse state-changing requests that a browser sends from another origin (any web page could fill the queue).

    A request without ``Origin`` and ``Sec-Fetch-Site`` is not from a browser page (curl, scripts) and passes;
    browsers send them on every POST and DELETE.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = (b"host", b"origin", b"sec-fetch-site")
        headers = {k.decode(): v.decode("latin-1") for k, v in scope.get("headers", []) if k in wanted}
        host = headers.get("host", "")
        refusal = self._host_refusal(host) or self._origin_refusal(scope["method"], host, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _host_refusal(self, host: str) -> tuple[int, str] | None:
        name = host_name(host)
        if not name:
            return 400, "the request has no Host header"
        if self.any_host or is_loopback(name) or name in self.allowed:
            return None
        return 400, (f"this server does not answer to the host name {name!r}; if that is how clients reach it, "
                     f"start it with --allow-host {name}")

    @staticmethod
    def _origin_refusal(method: str, host: str, headers: dict[str, str]) -> tuple[int, str] | None:
        if method not in UNSAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.strip().lower()):
            return 403, f"cross-origin request refused: a page from {origin} may not submit or cancel jobs here"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "cross-origin request refused: only this server's own page may submit or cancel jobs"
        return None


class SecurityHeaders:
    """CSP, nosniff, no referrer, no framing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # FastAPI's /docs page loads Swagger UI from a CDN; everything else must work with nothing external.
        strict = not scope["path"].startswith(("/docs", "/redoc"))

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if strict:
                    headers += [(b"content-security-policy", _CSP.encode()), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)
