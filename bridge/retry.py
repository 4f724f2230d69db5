"""Backoff for the bridge's loops while the Node Pool or Redis is away: the
bridge never dies of an unreachable peer, it waits and tries again."""

from __future__ import annotations

import logging
import threading

import grpc
import redis
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from bridge.session import NodePoolError

log = logging.getLogger(__name__)

# What a pass may hit while a peer is down or refuses; anything else is a bug
# and is logged with its traceback by the loop that catches it.
TRANSIENT = (grpc.RpcError, NodePoolError, redis.RedisError, OSError)


def until_stopped(
    stop: threading.Event, what: str, node_id: str, max_wait: float = 30.0, wake: threading.Event | None = None
) -> Retrying:
    """Retry with exponential backoff (0.5 s doubling up to max_wait) until
    it works or `stop` is set; the waits end early when `stop` is set, and
    when `wake` is given, as soon as it is set (the owner must set it on stop too)."""

    def stopped(_: RetryCallState) -> bool:
        return stop.is_set()

    def sleep(seconds: float) -> None:
        if wake is None:
            stop.wait(seconds)
            return
        wake.wait(seconds)
        wake.clear()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        detail = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else exc
        log.warning(
            "%s failed (attempt %d): %s; retrying in %.1fs",
            what,
            state.attempt_number,
            detail,
            state.upcoming_sleep,
            extra={"node_id": node_id},
        )

    return Retrying(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential(multiplier=0.5, max=max_wait),
        stop=stopped,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
