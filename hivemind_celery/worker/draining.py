"""A worker stopped gracefully lets its tasks resume elsewhere (docs/checkpoints.md).

On Celery's warm shutdown (SIGTERM from systemd at a reboot, `docker compose
stop`) the main process marks this worker as draining in Redis; each running
task sees it (task/run.py), gets SIGTERM and HIVEMIND_SHUTDOWN_GRACE seconds to
write a last checkpoint, which is saved, and its message goes back to its
queue, neither failed nor acknowledged. A worker starting under the same id
clears the mark. celery_app connects both hooks.
"""

from __future__ import annotations

import logging

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import get_settings

log = logging.getLogger(__name__)

DRAINING_TTL = 24 * 3600  # a worker that never comes back must not mark its id forever


def mark_draining(sig: object = None, how: str = "", **_: object) -> None:
    """worker_shutting_down (in the main process's signal handler): a short Redis write."""
    settings = get_settings()
    try:
        payload_redis(settings).set(keys.worker_draining(settings.worker_id), how or "stop", ex=DRAINING_TTL)
        log.info("worker stopping (%s): running tasks checkpoint and go back to their queue", how or sig)
    except redis.RedisError as exc:
        log.warning("could not tell the running tasks to checkpoint and requeue: %s", exc)


def clear_draining(**_: object) -> None:
    """worker_init: this worker runs tasks again."""
    settings = get_settings()
    try:
        payload_redis(settings).delete(keys.worker_draining(settings.worker_id))
    except redis.RedisError as exc:
        log.warning("could not clear this worker's stopping mark: %s", exc)
