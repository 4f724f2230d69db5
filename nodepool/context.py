"""What every service of the pool shares, and the authentication helpers they use."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from hivemind_celery.core import RewardPolicy
from nodepool.auth import AuthError, Identity, TokenAuthority
from nodepool.dispatcher import Dispatcher
from nodepool.settings import NodePoolSettings
from nodepool.store import Store


@dataclass
class Pool:
    settings: NodePoolSettings
    store: Store
    tokens: TokenAuthority
    dispatcher: Dispatcher
    policy: RewardPolicy


def bearer_token(context: grpc.ServicerContext) -> str:
    """The token of an `authorization: Bearer <token>` metadata entry, or ""."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def authenticate(pool: Pool, token: str) -> Identity:
    """Raises AuthError with a reason that is safe to send back."""
    return pool.tokens.check(token)


__all__ = ["AuthError", "Pool", "authenticate", "bearer_token"]
