"""The site's WireGuard tunnel to a Node Pool, for a volunteer behind a home router.

One concept per module: `keys` (X25519 key pairs), `config` (the wg-quick-style
file, parsed, narrowed and emitted), `store` (config and keys kept 0600 in the
state directory), `link` (bringing the interface up and down without wg-quick),
`join` (asking a pool for a tunnel: our own, or the deployed network's).

A package of its own beside `hivemind_celery` because the bridge, the CLI and our
Node Pool (which may import only `hivemind_celery.core`) all need it; it imports
only `hivemind_celery.core` itself.
"""

from __future__ import annotations

from vpn.config import TunnelConfig, narrow_allowed_ips, parse_config
from vpn.errors import JoinError, TunnelConfigError, TunnelError, TunnelToolMissing
from vpn.keys import KeyPair, generate_key_pair, public_key_of, validate_key

__all__ = [
    "JoinError",
    "KeyPair",
    "TunnelConfig",
    "TunnelConfigError",
    "TunnelError",
    "TunnelToolMissing",
    "generate_key_pair",
    "narrow_allowed_ips",
    "parse_config",
    "public_key_of",
    "validate_key",
]
