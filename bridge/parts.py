"""What the bridge's parts share, and what the bridge needs of the site.

`BridgeParts` is made once by `Bridge` and handed to the servicer, the relay and
the heartbeat, instead of each taking the same collaborators one by one.
`SiteRegistry` and `SiteCapacityView` are the typed seams to the worker site: the
bridge needs this much of `hivemind_celery.site.Registry` and of the
`SiteCapacity` it returns, and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis
from celery import Celery

from bridge.config import BridgeConfig
from bridge.outbox import Outbox
from hivemind_celery.core import Settings
from hivemind_celery.payloads import PayloadStore


class SiteCapacityView(Protocol):
    """The site's totals over its live workers, and what allocations leave free."""

    @property
    def workers(self) -> int: ...
    @property
    def cpus_total(self) -> float: ...
    @property
    def cpus_free(self) -> float: ...
    @property
    def memory_mb_total(self) -> int: ...
    @property
    def memory_mb_free(self) -> int: ...
    @property
    def gpus_total(self) -> int: ...
    @property
    def gpus_free(self) -> int: ...
    @property
    def gpu_memory_mb_total(self) -> int: ...
    @property
    def gpu_memory_mb_free(self) -> int: ...
    @property
    def gpu_models(self) -> dict[str, int]: ...  # GPU model -> how many such GPUs


class SiteRegistry(Protocol):
    """The site registry as the bridge uses it: the capacity to advertise, and a
    task's room reserved at intake and released once it has ended."""

    def capacity(self) -> SiteCapacityView: ...

    def allocate(
        self,
        task_id: str,
        cpus: float,
        memory_mb: int,
        gpus: int = 0,
        gpu_memory_mb: int = 0,
        ttl: float = 3600.0,
        require_fit: bool = False,
    ) -> bool: ...

    def release(self, task_id: str) -> bool: ...


@dataclass(frozen=True)
class BridgeParts:
    """The collaborators the servicer, the relay and the heartbeat share. Payloads,
    output streams, usage, stop flags and the outbox share the payload Redis with
    the workers (`redis`); `celery` is a Celery client (hivemind_celery.client)."""

    settings: Settings
    config: BridgeConfig
    redis: redis.Redis
    celery: Celery
    registry: SiteRegistry
    payloads: PayloadStore
    outbox: Outbox

    @property
    def node_id(self) -> str:
        return self.config.node_id
