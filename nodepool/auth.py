"""Passwords (scrypt with a per-user salt) and login tokens (JWT, HS256).

A token carries the user id (`uid`), the username (`sub`), an expiry (`exp`)
and a mark of the account (`acct`, from its salted password hash, so a token
dies with the account or a password change); it is checked on every RPC.
Messages never echo a token or password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from hivemind_celery.core import HivemindError
from nodepool.store import Store

ALGORITHM = "HS256"
_SECRET_META_KEY = "token_secret"
# scrypt cost: 16 MiB and ~50 ms per check on a small machine; slows guessing.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class AuthError(HivemindError):
    """A login or token that is refused; the message says why, without secrets."""


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A fixed hash to check against when the user does not exist, so a wrong
# username costs as much time as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def token_secret(store: Store, configured: str | None) -> str:
    """The configured secret, or the one generated on first start and kept in the database."""
    if configured:
        return configured
    return store.set_meta_once(_SECRET_META_KEY, secrets.token_urlsafe(48))


class TokenAuthority:
    """Issues and checks tokens for the users in `store`."""

    def __init__(self, store: Store, secret: str, lifetime_s: float) -> None:
        if len(secret) < 32:
            # RFC 7518: an HS256 key must be at least as long as the hash (32 bytes).
            raise ValueError("HIVEMIND_NODEPOOL_SECRET must be at least 32 characters")
        self._store = store
        self._secret = secret
        self._lifetime_s = lifetime_s

    def login(self, username: str, password: str) -> tuple[Identity, str]:
        row = self._store.conn.execute("SELECT id, username, password_hash FROM users WHERE username = ?", (username,)).fetchone()
        stored = row["password_hash"] if row is not None else _DUMMY_HASH
        if not verify_password(password, stored) or row is None:
            raise AuthError("invalid username or password")
        identity = Identity(row["id"], row["username"])
        return identity, self.issue(identity)

    def _account_mark(self, user_id: int) -> str | None:
        """Changes whenever the account is recreated or its password changes (the
        stored hash has a fresh salt each time), so such tokens stop working
        even where SQLite reuses a deleted user's id."""
        row = self._store.conn.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
        if row is None:
            return None
        return hmac.new(self._secret.encode(), row["password_hash"].encode(), hashlib.sha256).hexdigest()[:16]

    def issue(self, identity: Identity, lifetime_s: float | None = None) -> str:
        now = time.time()
        lifetime = self._lifetime_s if lifetime_s is None else lifetime_s
        claims = {
            "sub": identity.username,
            "uid": identity.user_id,
            "iat": int(now),
            "exp": int(now + lifetime),
            "acct": self._account_mark(identity.user_id),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def check(self, token: str) -> Identity:
        """The identity a valid, unexpired token names; AuthError otherwise."""
        if not token:
            raise AuthError("missing token: log in first")
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "uid", "acct"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired: refresh it or log in again") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from None
        if not isinstance(claims["uid"], int) or not isinstance(claims["sub"], str):
            raise AuthError("invalid token (malformed claims)")
        # The user must still exist with the same name (deleted or renamed users lose their tokens).
        row = self._store.conn.execute("SELECT username FROM users WHERE id = ?", (claims["uid"],)).fetchone()
        if row is None or row["username"] != claims["sub"]:
            raise AuthError("invalid token (unknown user)")
        mark = self._account_mark(claims["uid"])
        if mark is None or not hmac.compare_digest(str(claims["acct"]), mark):
            raise AuthError("invalid token (account changed since it was issued)")
        return Identity(claims["uid"], claims["sub"])

    def refresh(self, old_token: str) -> str:
        """A fresh token for a still-valid one (an expired token must log in again)."""
        return self.issue(self.check(old_token))
