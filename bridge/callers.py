"""Who may push work to the bridge: a server interceptor for the two RPCs the
Node Pool calls (ExecuteTask, StopTaskExecution). Health and reflection stay
open so probes work.

Checks, in order: the caller's address is in the allowlist, and, when a
shared secret is configured, the call carries it as `x-hivemind-secret`
metadata. A refused call ends PERMISSION_DENIED / UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import grpc

from bridge.config import BridgeConfig, caller_allowed

log = logging.getLogger(__name__)

GUARDED_PREFIX = "/nodepool.WorkerNodeService/"
SECRET_HEADER = "x-hivemind-secret"


class CallerGuard(grpc.ServerInterceptor):
    def __init__(self, config: BridgeConfig) -> None:
        self._config = config

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(GUARDED_PREFIX) or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            self.check(method, context)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        """Abort the call unless the caller is allowed (the peer address is
        only known inside the call, hence the check here, not before it)."""
        peer = context.peer()
        name = method.rpartition("/")[2]
        if not caller_allowed(peer, self._config.allowed_networks):
            log.warning(
                "refused %s from %s: address not allowed", name, peer, extra={"node_id": self._config.node_id, "peer": peer}
            )
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {peer} is not allowed (HIVEMIND_BRIDGE_ALLOWED_CALLERS)",
            )
        if self._config.secret is not None:
            given = dict(context.invocation_metadata()).get(SECRET_HEADER, "")
            expected = self._config.secret.encode()
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected):
                log.warning(
                    "refused %s from %s: missing or wrong %s",
                    name,
                    peer,
                    SECRET_HEADER,
                    extra={"node_id": self._config.node_id, "peer": peer},
                )
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong {SECRET_HEADER} metadata")
