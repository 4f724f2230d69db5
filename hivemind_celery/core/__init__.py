"""The bottom layer: the task model, settings, Redis key names, the reward, errors and units.
Plain data and pure functions (redis-py at most): no Celery, no Docker, so the bridge and
the Node Pool can share it.

What other packages may use is listed here (`keys` is the module of Redis key names:
`keys.task_outcome(task_id)`). Errors, keys and units are imported at once; the rest
(pydantic models and settings, the Redis clients) when first asked for, so a command
line that only needs `HivemindError` starts without pydantic and a Node Pool without
redis-py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.lazy import lazy_names
from hivemind_celery.core.units import GiB, KiB, MiB, as_text

if TYPE_CHECKING:
    from hivemind_celery.core.model import (
        TASK_ID_PATTERN,
        TASK_NAME,
        GpuUsed,
        NetworkPolicy,
        Queue,
        TaskOutcome,
        TaskSpec,
        TaskStatus,
        UsageSource,
        UsageSummary,
    )
    from hivemind_celery.core.prefs import RUNNING, Hours, Preferences, SiteMode, decide
    from hivemind_celery.core.redis_client import payload_redis, redis_from_url
    from hivemind_celery.core.reward import (
        DEFAULT_POLICY,
        RewardPolicy,
        compute_reward,
        measured_percentages,
        reward_for_usage,
    )
    from hivemind_celery.core.settings import Settings, get_settings

__all__ = [
    "DEFAULT_POLICY",
    "RUNNING",
    "TASK_ID_PATTERN",
    "TASK_NAME",
    "GiB",
    "GpuUsed",
    "HivemindError",
    "Hours",
    "KiB",
    "MiB",
    "NetworkPolicy",
    "Preferences",
    "Queue",
    "RewardPolicy",
    "Settings",
    "SiteMode",
    "TaskOutcome",
    "TaskSpec",
    "TaskStatus",
    "UsageSource",
    "UsageSummary",
    "as_text",
    "compute_reward",
    "decide",
    "get_settings",
    "keys",
    "measured_percentages",
    "payload_redis",
    "redis_from_url",
    "reward_for_usage",
]

_MODEL = "hivemind_celery.core.model"
_PREFS = "hivemind_celery.core.prefs"
_REWARD = "hivemind_celery.core.reward"
__getattr__ = lazy_names(
    __name__,
    {
        **dict.fromkeys(
            (
                "TASK_ID_PATTERN",
                "TASK_NAME",
                "GpuUsed",
                "NetworkPolicy",
                "Queue",
                "TaskOutcome",
                "TaskSpec",
                "TaskStatus",
                "UsageSource",
                "UsageSummary",
            ),
            _MODEL,
        ),
        **dict.fromkeys(("RUNNING", "Hours", "Preferences", "SiteMode", "decide"), _PREFS),
        **dict.fromkeys(("payload_redis", "redis_from_url"), "hivemind_celery.core.redis_client"),
        **dict.fromkeys(
            ("DEFAULT_POLICY", "RewardPolicy", "compute_reward", "measured_percentages", "reward_for_usage"), _REWARD
        ),
        **dict.fromkeys(("Settings", "get_settings"), "hivemind_celery.core.settings"),
    },
)
