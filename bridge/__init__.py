"""The bridge: the one part of a worker site that speaks to a HiveMind Node
Pool. It takes tasks the pool pushes (ExecuteTask), turns them into Celery
tasks on the cpu/gpu queues, tells the pool when the site can take more, and
relays output, usage and results back. See docs/bridge.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.server import Bridge

__all__ = ["Bridge"]


def __getattr__(name: str) -> Any:
    if name == "Bridge":
        from bridge.server import Bridge

        return Bridge
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
