"""The bridge's account on the Node Pool: log in, keep the token fresh, and
make calls with it.

The token goes in the request's `token` field where the message has one (but
for the node-level TaskUsage, whose `token` field the deployed pool reads as
the node id), and on every call as `authorization: Bearer <token>` metadata,
because this project's Node Pool checks tokens on RegisterWorkerNode and
ReportStatus too (their messages have no token field). The deployed pool
checks neither.
The token is never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt

from hivemind_celery.core import HivemindError, Settings
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

CALL_TIMEOUT = 15.0
# A result zip may be as large as a task zip; leave room for the envelope.
MESSAGE_MARGIN = 1024 * 1024
ASSUMED_LIFETIME = 3600.0  # the deployed pool's default, for tokens without exp


class NodePoolError(HivemindError):
    """The Node Pool answered, but refused (success=false)."""


class LoginFailed(NodePoolError):
    pass


def open_channel(settings: Settings) -> grpc.Channel:
    limit = max(settings.payload_max_bytes, settings.result_max_bytes) + MESSAGE_MARGIN
    options = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        # Reconnect soon after a pool outage ends (gRPC's default backoff grows to 2 min).
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 10_000),
    ]
    if settings.nodepool_ca_file:
        with open(settings.nodepool_ca_file, "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        return grpc.secure_channel(settings.nodepool_address, credentials, options=options)
    return grpc.insecure_channel(settings.nodepool_address, options=options)


def token_expiry(token: str) -> float | None:
    """The JWT's exp, read without verifying: the signing secret is the pool's.
    Used only to schedule a refresh, never to trust anything."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


class Session:
    def __init__(self, settings: Settings, channel: grpc.Channel) -> None:
        self.node_id = settings.username
        self._password = settings.password
        self.users = pb_grpc.UserServiceStub(channel)
        self.nodes = pb_grpc.NodeManagerServiceStub(channel)
        self.workers = pb_grpc.WorkerNodeServiceStub(channel)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    # -- token ---------------------------------------------------------------
    def token(self) -> str:
        with self._lock:
            if self._token is None:
                self._login()
            elif time.time() >= self._refresh_at:
                self._refresh()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the token (the pool refused it); the next call logs in again."""
        with self._lock:
            self._token = None

    def _login(self) -> None:
        reply = self.users.Login(
            pb.LoginRequest(username=self.node_id, password=self._password.get_secret_value()),
            timeout=CALL_TIMEOUT,
        )
        if not reply.success or not reply.token:
            raise LoginFailed(f"Node Pool refused login as {self.node_id!r}: {reply.message or 'no token'}")
        self._set_token(reply.token)
        log.info("logged in to the Node Pool", extra={"node_id": self.node_id})

    def _refresh(self) -> None:
        try:
            reply = self.users.RefreshToken(pb.RefreshTokenRequest(old_token=self._token or ""), timeout=CALL_TIMEOUT)
            if reply.success and reply.new_token:
                self._set_token(reply.new_token)
                log.info("token refreshed", extra={"node_id": self.node_id})
                return
            log.info("token refresh refused (%s); logging in again", reply.message, extra={"node_id": self.node_id})
        except grpc.RpcError as exc:
            log.info("token refresh failed (%s); logging in again", exc.code(), extra={"node_id": self.node_id})
        self._login()

    def _set_token(self, token: str) -> None:
        now = time.time()
        expiry = token_expiry(token) or now + ASSUMED_LIFETIME
        # Refresh with a fifth of the lifetime to spare (at least 30 s, at most 5 min).
        spare = min(300.0, max(30.0, (expiry - now) / 5))
        self._token = token
        self._refresh_at = max(now, expiry - spare)

    # -- calls -----------------------------------------------------------------
    def call(
        self, method: Callable[..., Any], request: Any, timeout: float = CALL_TIMEOUT, token_field: str | None = None
    ) -> Any:
        """Call a Node Pool RPC with the token; success=false raises NodePoolError.
        An UNAUTHENTICATED answer drops the token so the next call logs in.
        `token_field` replaces what goes in the request's `token` field (the
        node-level TaskUsage carries the node id there); the metadata keeps the token."""
        token = self.token()
        if hasattr(request, "token"):
            request.token = token if token_field is None else token_field
        try:
            reply = method(request, timeout=timeout, metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self.invalidate()
            raise
        if hasattr(reply, "success") and not reply.success:
            if _looks_like_auth(reply.message):
                self.invalidate()
            raise NodePoolError(reply.message or "refused without a message")
        return reply


def _looks_like_auth(message: str) -> bool:
    text = message.lower()
    return "token" in text or "unauth" in text or "expired" in text
