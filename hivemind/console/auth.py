"""The console's login: one password, a signed session cookie, a CSRF token.

The password is HIVEMIND_CONSOLE_PASSWORD, else one generated at first start
and kept (mode 0600) in HIVEMIND_CONSOLE_STATE_DIR/password, so the owner can
read it again; the session signing key lives beside it, so a restart keeps
people logged in. Every change (a POST) carries the session's CSRF token as a
form field or the X-CSRF-Token header, compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from hivemind_celery.core import HivemindError, Settings

PASSWORD_FILE = "password"
KEY_FILE = "session-key"


class ConsoleConfigError(HivemindError, ValueError):
    """The console cannot start as configured; the message says why."""


@dataclass(frozen=True)
class Credentials:
    password: str
    session_key: str
    generated: bool  # the password was made now (print it once)
    password_file: Path | None


def _read_or_create(path: Path, make: str) -> tuple[str, bool]:
    """The file's text, or `make` written to it 0600 (created atomically)."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another console made it meanwhile
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make, True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(settings: Settings, host: str) -> Credentials:
    """The password and signing key; refuses a listener off loopback without an
    explicit password (a generated one would sit on a disk the network cannot see)."""
    state = Path(os.path.expanduser(settings.console_state_dir))
    given = settings.console_password.get_secret_value() if settings.console_password else ""
    if not is_loopback(host) and not given:
        raise ConsoleConfigError(
            f"the console listens on {host}, off loopback: set HIVEMIND_CONSOLE_PASSWORD first "
            "(a generated password is only for a console on 127.0.0.1)"
        )
    key, _ = _read_or_create(state / KEY_FILE, secrets.token_urlsafe(32))
    if given:
        return Credentials(given, key, False, None)
    password, made = _read_or_create(state / PASSWORD_FILE, secrets.token_urlsafe(12))
    if not password:
        raise ConsoleConfigError(f"{state / PASSWORD_FILE} is empty: delete it to have a new password made")
    return Credentials(password, key, made, state / PASSWORD_FILE)


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())
