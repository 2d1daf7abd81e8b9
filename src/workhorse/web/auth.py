"""Optional auth for the dashboard: a bearer token or HTTP basic, on every page and API call.

A pure ASGI middleware rather than Starlette's ``AuthenticationMiddleware``: that one only
labels a request as authenticated and leaves every route to enforce it, while here nothing
but the login page and the static files may be reached without credentials.

Browsers cannot send a bearer header when they follow a link, so with a token the login page
sets an HttpOnly, SameSite=Strict cookie that holds an HMAC of the token (never the token
itself); API clients send ``Authorization: Bearer <token>``. Basic auth is left to the browser's
own prompt.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from workhorse.tokens import bearer_matches, same

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Name of the cookie the login page sets when a bearer token guards the dashboard.
COOKIE = "workhorse_session"
#: Paths (below the mount point) reachable without credentials.
PUBLIC_PREFIXES = ("/static/", "/login")


@dataclasses.dataclass(frozen=True)
class BearerToken:
    """Require ``Authorization: Bearer <token>`` (or the login cookie, for browsers)."""

    token: str

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the dashboard token must not be empty")

    def session(self) -> str:
        """The cookie value that stands for the token."""
        return hmac.new(self.token.encode(), b"workhorse dashboard session",
                        hashlib.sha256).hexdigest()

    def check(self, headers: dict[str, str]) -> bool:
        """True if the request carries the token or its session cookie."""
        if bearer_matches(headers.get("authorization", ""), self.token):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE)
        return cookie is not None and same(cookie, self.session())


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    """Require HTTP basic auth with this user name and password."""

    username: str
    password: str

    def check(self, headers: dict[str, str]) -> bool:
        """True if the request carries these credentials."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        # Both compared, whatever the first gives, so timing tells nothing about which failed.
        user_ok = same(username, self.username)
        password_ok = same(password, self.password)
        return bool(sep) and user_ok and password_ok


Auth = BearerToken | BasicAuth


def parse_basic(text: str) -> BasicAuth:
    """``"user:password"`` as BasicAuth; ValueError without a colon or a user name."""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise ValueError("basic auth must be given as USER:PASSWORD")
    return BasicAuth(username, password)


class AuthMiddleware:
    """Let a request through only with valid credentials, or to a public path."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = relative_path(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if path.startswith(PUBLIC_PREFIXES) or self.auth.check(headers):
            await self.app(scope, receive, send)
            return
        base = scope.get("root_path", "")
        if isinstance(self.auth, BasicAuth):
            await _respond(send, 401, b'{"error": "authentication required"}',
                           [(b"www-authenticate", b'Basic realm="workhorse", charset="UTF-8"')])
        elif path.startswith("/api") or scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 401, b'{"error": "authentication required"}',
                           [(b"www-authenticate", b'Bearer realm="workhorse"')])
        else:
            target = f"{base}/login?next={quote(path, safe='/')}"
            await _respond(send, 303, b"", [(b"location", target.encode("latin-1"))])


def relative_path(scope: Scope) -> str:
    """The request path below the dashboard's mount point."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, sep, value in pairs if sep}


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    content_type = b"application/json" if body else b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
