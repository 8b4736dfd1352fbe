"""Who may use the admin, and how they prove it.

Two roles: `admin` (everything) and `read_only` (every GET). A request proves one by
- a bearer token of ADMIN_TOKENS (admin) or ADMIN_READ_TOKENS (read_only): compared by
  their SHA-256, each against every configured one, in constant time;
- a bearer JWT of the Saathii backend's (ADMIN_JWT_KEY, ADMIN_JWT_ALGORITHM), whose
  ADMIN_JWT_ROLE_CLAIM names the role (an access token: a refresh or registration token
  is refused), so its own admins' tokens work where it mounts the router;
- a browser session: the signed cookie the login page gives for one of those, HttpOnly,
  SameSite=Strict, for ADMIN_SESSION_HOURS.
A browser's unsafe request (POST) must also be same-origin (Sec-Fetch-Site, else Origin
against Host) and carry the session's CSRF token: a cookie is sent by the browser whoever
asked, a bearer token only by whoever holds it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import jwt

from workers.settings import Settings

SESSION_COOKIE = "saathii_admin"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read_only"


class Refused(Exception):
    """A request that may not go on: its HTTP status and why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Identity:
    role: Role
    #: Who, for the audit: a token's fingerprint, a JWT's subject.
    actor: str
    #: How: "token", "jwt" or "session".
    via: str
    #: A session's CSRF token (None for a bearer).
    csrf: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _tokens(secret) -> list[str]:
    if secret is None:
        return []
    return [token.strip() for token in secret.get_secret_value().split(",") if token.strip()]


class Access:
    """The credentials of one configuration, ready to check requests against."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tokens = [(Role.ADMIN, _digest(t)) for t in _tokens(settings.admin_tokens)]
        self.tokens += [(Role.READ_ONLY, _digest(t)) for t in _tokens(settings.admin_read_tokens)]
        jwt_key = settings.admin_jwt_key.get_secret_value() if settings.admin_jwt_key else None
        self.jwt_key = jwt_key
        # The session's signing key follows the credentials: changing them ends every
        # session signed before.
        material = b"".join(digest for _, digest in self.tokens) + (jwt_key or "").encode()
        self.session_key = hashlib.sha256(b"saathii-admin-session\0" + material).digest()

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.jwt_key)

    # bearer credentials -----------------------------------------------------------------

    def bearer(self, token: str) -> Identity:
        digest = _digest(token)
        role = None
        for candidate, known in self.tokens:  # every one compared: no early exit
            if hmac.compare_digest(digest, known):
                role = candidate
        if role is not None:
            return Identity(role, f"token {digest.hex()[:8]}", "token")
        if self.jwt_key and token.count(".") == 2:
            return self._jwt(token)
        raise Refused(401, "invalid token")

    def _jwt(self, token: str) -> Identity:
        try:
            claims = jwt.decode(token, self.jwt_key,
                                algorithms=[self.settings.admin_jwt_algorithm],
                                options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise Refused(401, "token expired") from None
        except jwt.PyJWTError:
            raise Refused(401, "invalid token") from None
        if claims.get("type", "access") != "access":
            raise Refused(401, f"a {claims['type']} token is not an access token")
        role = claims.get(self.settings.admin_jwt_role_claim)
        roles = set(role) if isinstance(role, list) else {role}
        found = (Role.ADMIN if Role.ADMIN.value in roles
                 else Role.READ_ONLY if Role.READ_ONLY.value in roles else None)
        if found is None:
            raise Refused(403, f"the token's {self.settings.admin_jwt_role_claim!r} claim"
                               " names no admin role")
        subject = claims.get("sub") or claims.get("user_id") or "?"
        return Identity(found, f"jwt {subject}", "jwt")

    # browser sessions -------------------------------------------------------------------

    def new_session(self, identity: Identity, now: float | None = None) -> str:
        """The cookie value of a session for `identity`: its claims, signed."""
        now = time.time() if now is None else now
        claims = {"role": str(identity.role), "actor": identity.actor,
                  "exp": int(now + self.settings.admin_session_hours * 3600),
                  "csrf": secrets.token_urlsafe(24)}
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def session(self, cookie: str, now: float | None = None) -> Identity:
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode("utf-8", "replace"),
                                   self._sign(body).encode()):
            raise Refused(401, "invalid session: log in again")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["exp"] < (time.time() if now is None else now):
            raise Refused(401, "session expired: log in again")
        return Identity(Role(claims["role"]), claims["actor"], "session", claims["csrf"])

    def _sign(self, body: str) -> str:
        return hmac.new(self.session_key, body.encode("utf-8", "replace"),
                        hashlib.sha256).hexdigest()


def same_origin(headers, host: str) -> bool:
    """Whether a browser's request comes from our own pages: its Fetch Metadata says so,
    or (an older browser) its Origin names this host."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = headers.get("origin")
    return origin is not None and urlsplit(origin).netloc == host
