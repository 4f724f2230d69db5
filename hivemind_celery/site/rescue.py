"""Bringing back the tasks of a worker that died holding them.

Tasks are acknowledged late, so a worker killed mid-task (SIGKILL, lost host)
leaves their messages unacknowledged; Redis would hand them out again only
after the visibility timeout, which must outlast the longest task (hours).
Each worker therefore records the broker delivery tag of every task it runs
(`record` / `forget`, as the worker receives and finishes it), and every live worker looks, on a
timer, for recorded workers the registry counts as gone: it puts their
messages back at the head of their queue with kombu's own `restore_by_tag`,
so a live worker reruns them within about a minute. The rerun is safe: the
task guard lets it run only once the dead run's lock has expired, and it
removes the dead run's containers first.

Only a worker registered in the registry records its tasks: one that could not
register would otherwise look dead and have its running tasks handed out.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.units import as_text
from hivemind_celery.site.registry import Registry

log = logging.getLogger(__name__)

# Record a delivery only for a live worker (its registry deadline, in the
# Redis server's clock as the registry keeps it, not yet passed): one round
# trip, on the path every message takes before it reaches a pool process.
_RECORD = """
local clock = redis.call('TIME')
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) <= tonumber(clock[1]) + tonumber(clock[2]) / 1000000 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""


def record(registry: Registry, worker_id: str, task_id: str, delivery_tag: str) -> bool:
    """Note that `worker_id` runs `task_id` from this delivery; False if the
    worker is not live in the registry (then nothing is recorded)."""
    names = [keys.workers_by_deadline(), keys.workers_with_deliveries(), keys.worker_deliveries(worker_id)]
    return bool(registry.client.register_script(_RECORD)(keys=names, args=[worker_id, task_id, delivery_tag]))


def forget(client: redis.Redis, worker_id: str, task_id: str) -> None:
    client.hdel(keys.worker_deliveries(worker_id), task_id)


def forget_all_but(client: redis.Redis, worker_id: str, held: set[str]) -> None:
    key = keys.worker_deliveries(worker_id)
    stale = [task_id for task_id in map(as_text, client.hkeys(key)) if task_id not in held]
    if stale:
        client.hdel(key, *stale)


def dead_workers(registry: Registry, me: str) -> list[str]:
    """Workers with recorded deliveries that the registry counts as gone."""
    members = registry.client.smembers(keys.workers_with_deliveries())
    names = sorted(as_text(m) for m in members)
    return [name for name in names if name != me and not registry.is_live(name)]


def rescue(registry: Registry, connection: Any, me: str) -> int:
    """Put the messages of dead workers' tasks back on their queues; returns
    how many. `connection` is a kombu connection to the broker."""
    return sum(_hand_back(registry, connection, worker) for worker in dead_workers(registry, me))


def rescue_own(registry: Registry, connection: Any, me: str) -> int:
    """At start, before any task runs: what this worker's previous run left."""
    return _hand_back(registry, connection, me)


def _hand_back(registry: Registry, connection: Any, worker: str) -> int:
    key = keys.worker_deliveries(worker)
    deliveries = registry.client.hgetall(key)
    qos = connection.default_channel.qos
    for task_id, tag in deliveries.items():
        # A tag already acknowledged or restored is simply not found.
        qos.restore_by_tag(as_text(tag), leftmost=True)
        log.warning("handed the task of a dead worker back to its queue", extra={"task_id": as_text(task_id), "node_id": worker})
    pipe = registry.client.pipeline()
    pipe.delete(key)
    pipe.srem(keys.workers_with_deliveries(), worker)
    pipe.execute()
    return len(deliveries)
