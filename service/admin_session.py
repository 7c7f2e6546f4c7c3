"""Console sessions: a short-lived signed cookie standing in for the admin token in a browser.

`POST /v1/admin/session` (with the admin token) answers a cookie
`mg_admin_session=v1.<token id>.<expires>.<nonce>.<signature>`, HttpOnly (page scripts cannot read
it), SameSite=Strict (other sites' pages do not send it), Path=/ (the console's pages and the API
share it), Secure when the request came over TLS. The signature is an HMAC-SHA256 of the rest under
the session secret (MG_ADMIN_SESSION_SECRET, else a key generated once in the data dir, 0600).
A session is bound to the admin token's id: changing the admin token ends every session made with
the old one. It is stateless: signing out clears the cookie in that browser, and a copy of the
cookie taken before works until it expires (MG_ADMIN_SESSION_TTL_S).

Writes authenticated by the cookie also need the session's CSRF value in the `x-mg-csrf` header: an
HMAC of the session's nonce, returned by `POST /v1/admin/session` to the page that signed in. A
page on another origin can make a browser send the cookie (SameSite aside), but cannot read that
value nor set a custom header without a CORS preflight, which the gateway never grants.

`AdminSessions.verify_cookie_header` is the check: the admin interceptor uses it, and so can
anything else the session protects (the console's pages and images).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from service.admin_token import AdminToken, configured_admin_token
from service.config import Settings
from service.data_dir import create_private_once

COOKIE_NAME = "mg_admin_session"
CSRF_HEADER = "x-mg-csrf"
SESSION_SECRET_FILE = "admin-session-secret"  # in the data dir
_VERSION = "v1"


def _mac(secret: bytes, purpose: str, text: str) -> str:
    digest = hmac.new(secret, f"{purpose}:{text}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SessionClaims:
    """What a valid session cookie says: which admin token made it, until when, and its nonce."""

    token_id: str
    expires_at: int
    nonce: str


class AdminSessions:
    """Issues and checks session cookies and their CSRF values for one admin token."""

    def __init__(self, token: AdminToken, secret: bytes, ttl_s: float) -> None:
        self.token = token
        self._secret = secret
        self._ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminSessions | None:
        """None when no admin token is configured (the admin API and console are off)."""
        token = configured_admin_token(settings)
        if token is None:
            return None
        return cls(token, session_secret(settings), settings.admin_session_ttl_s)

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def issue(self, now: float | None = None) -> tuple[str, SessionClaims]:
        """(the cookie value, its claims) for a new session of the admin token."""
        now = time.time() if now is None else now
        claims = SessionClaims(self.token.id, int(now + self._ttl_s), secrets.token_urlsafe(16))
        body = f"{_VERSION}.{claims.token_id}.{claims.expires_at}.{claims.nonce}"
        return f"{body}.{_mac(self._secret, 'session', body)}", claims

    def verify(self, value: str, now: float | None = None) -> SessionClaims | None:
        """The claims of a cookie value this gateway signed for its current admin token and that
        has not expired; None for anything else."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        body, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(_mac(self._secret, "session", body), signature):
            return None
        _, token_id, expires, nonce = parts[:4]
        if token_id != self.token.id or not expires.isdigit():
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return SessionClaims(token_id, int(expires), nonce)

    def verify_cookie_header(self, cookie_header: str, now: float | None = None) -> SessionClaims | None:
        """The valid session among the `Cookie` header's mg_admin_session cookies, if any. Browsers
        do not keep cookies apart by port, so two gateways on one host both see each other's
        cookies: each is tried, and only one this gateway signed passes."""
        for value in session_cookie_values(cookie_header):
            claims = self.verify(value, now)
            if claims is not None:
                return claims
        return None

    def csrf_token(self, claims: SessionClaims) -> str:
        return _mac(self._secret, "csrf", claims.nonce)

    def csrf_ok(self, claims: SessionClaims, presented: str) -> bool:
        return hmac.compare_digest(self.csrf_token(claims), presented)


def session_cookie_values(cookie_header: str) -> list[str]:
    """The values of every mg_admin_session cookie in a `Cookie` header (name=value pairs joined by
    "; "). Read by hand: other applications' cookies on the same host may be anything, and must
    not make a valid session unreadable."""
    values = []
    for pair in cookie_header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name == COOKIE_NAME:
            values.append(value.strip().strip('"'))
    return values


def cookie_header_of(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The request's `Cookie` header (HTTP/2 may split it in several; they are joined back)."""
    return "; ".join(str(v) for k, v in metadata if k == "cookie")


def set_cookie(value: str, max_age_s: int, *, secure: bool) -> str:
    """The Set-Cookie header value for the session cookie (max_age_s 0: clear it)."""
    attributes = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={max_age_s}", "HttpOnly", "SameSite=Strict"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def session_secret(settings: Settings) -> bytes:
    """MG_ADMIN_SESSION_SECRET, or a key generated once in the data dir (shared by its workers)."""
    if settings.admin_session_secret:
        return settings.admin_session_secret.encode()
    path = settings.data_dir / SESSION_SECRET_FILE
    if not path.exists():
        create_private_once(path, secrets.token_urlsafe(32))
    return path.read_text().strip().encode()
