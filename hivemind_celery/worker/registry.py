"""The worker's side of the registry: register at start, heartbeat, leave at stop.

`RegistryStep` is a bootstep of the worker's main process around
site/heartbeat.py's `Heartbeat`; a clean stop (SIGTERM, SIGINT, `celery control
shutdown`) leaves the registry at once. `capabilities` is the `celery inspect
capabilities` command, which answers with this worker's registered capacity.

The registry lives in the same Redis as payloads (HIVEMIND_PAYLOAD_REDIS_URL,
default REDIS_URL), where the bridge reads it.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import redis
from celery import bootsteps

from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings
from hivemind_celery.site.disk_gate import DiskGate
from hivemind_celery.site.heartbeat import REGISTERED, Heartbeat, local_capacity
from hivemind_celery.site.registry import Registry
from hivemind_celery.usage import gpu

log = logging.getLogger(__name__)


class RegistryStep(bootsteps.StartStopStep):
    """Registers the worker in the site registry while it runs."""

    label = "HiveMind registry"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeat: Heartbeat | None = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        queues = list(parent.app.amqp.queues.consume_from or parent.app.amqp.queues)
        capacity = local_capacity(settings, parent.hostname, socket.gethostname(), queues)
        registry = Registry(payload_redis(settings), heartbeat_interval=settings.registry_heartbeat_interval)
        gate = DiskGate(
            registry,
            capacity,
            settings.monitor_disk_path,
            settings.health_min_disk_free_mb,
            consumers=consumers_switch(parent, queues),
        )
        try:
            self.heartbeat = Heartbeat(
                registry, capacity, settings.registry_heartbeat_interval, settings.registry_reconcile_interval, gate
            ).start()
        except redis.RedisError:
            # The worker can still run tasks; the bridge just does not see it.
            log.exception("could not register in the site registry", extra={"node_id": parent.hostname})

    def stop(self, parent: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def consumers_switch(parent: Any, queues: list[str]):  # type: ignore[no-untyped-def]
    """Start or stop this worker's consumers from any thread: a control message
    to itself, which the worker's own loop carries out."""

    def switch(on: bool) -> None:
        control = parent.app.control
        for queue in queues:
            if on:
                control.add_consumer(queue, destination=[parent.hostname], reply=False)
            else:
                control.cancel_consumer(queue, destination=[parent.hostname], reply=False)

    return switch


def capabilities(state: Any) -> dict[str, Any]:
    """`celery -A hivemind_celery inspect capabilities`: this worker's capacity
    (an inspect command; celery_app adds it)."""
    hostname = state.consumer.hostname
    registered = REGISTERED.get(hostname)
    if registered is None:
        queues = list(state.consumer.app.amqp.queues.consume_from or [])
        registered = local_capacity(get_settings(), hostname, socket.gethostname(), queues)
    return {**registered.as_dict(), "gpus_detail": [g.as_dict() for g in gpu.offered_gpus(get_settings().gpu_devices)]}
