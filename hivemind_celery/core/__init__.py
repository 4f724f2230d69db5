"""The bottom layer: the task model, settings, Redis key names, the reward, errors and units.
Plain data and pure functions (redis-py at most): no Celery, no Docker, so the bridge and
the Node Pool can share it."""

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.model import TaskOutcome, TaskStatus
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import Settings

__all__ = ["HivemindError", "Settings", "TaskOutcome", "TaskStatus", "payload_redis"]
