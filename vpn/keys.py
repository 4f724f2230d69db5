"""WireGuard key pairs: X25519, base64 of the 32 raw bytes, as `wg genkey` writes them.

Made with `cryptography` so a site can make its pair without the wg tool, and the
private key never has to pass through a command line."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from vpn.errors import TunnelConfigError

_RAW = serialization.Encoding.Raw


@dataclass(frozen=True)
class KeyPair:
    private_key: str
    public_key: str

    def __repr__(self) -> str:  # never show the private key in a log or traceback
        return f"KeyPair(public_key={self.public_key!r})"


def validate_key(text: str, what: str = "key") -> str:
    """`text` if it is a WireGuard key (base64 of 32 bytes), else TunnelConfigError naming `what`.
    The key itself is never put in the message (it may be a private key)."""
    value = text.strip() if isinstance(text, str) else ""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or len(value) != 44:
        raise TunnelConfigError(f"{what} is not a WireGuard key (base64 of 32 bytes, 44 characters)")
    return value


def public_key_of(private_key: str) -> str:
    raw = base64.b64decode(validate_key(private_key, "private key"))
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(public.public_bytes(_RAW, serialization.PublicFormat.Raw)).decode()


def generate_key_pair() -> KeyPair:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    private_b64 = base64.b64encode(raw).decode()
    return KeyPair(private_b64, public_key_of(private_b64))
