"""CPT credit for one task, from measured duration and utilization.

The formula is the HiveMind worker README's `calculate_reward`, made a
configurable policy:

    utilization = mean(cpu %, memory %)
    multiplier  = 1.5 if utilization > 80, 1.2 if > 50, 1.0 if > 20, else 0.8
    gpu_bonus   = gpu % x 0.01
    time_bonus  = min(duration / 3600 s, 2.0)
    reward      = int(base x multiplier x time_bonus + gpu_bonus), at least 1

Percentages are of what the task *reserved* (its cores, its memory limit), so
utilization can never exceed 100 %: a task cannot earn more by claiming it
used more than it was given. `measured_percentages` turns a UsageSummary into
those percentages. All four inputs must cover one interval: the worker passes
the task's duration and the whole run's usage over it (usage_totals). Everything here is pure: no I/O, no clock, no environment,
except `RewardPolicy.from_settings`, which reads the site's settings.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hivemind_celery.core.model import UsageSummary

if TYPE_CHECKING:
    from hivemind_celery.core.settings import Settings


class RewardPolicy(BaseModel):
    """The parameters of the reward formula; defaults are the seed's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: float = Field(10.0, ge=0, description="CPT for one hour at the standard multiplier.")
    high_threshold: float = Field(80.0, ge=0, le=100, description="Utilization % above which `high_multiplier` applies.")
    mid_threshold: float = Field(50.0, ge=0, le=100, description="Utilization % above which `mid_multiplier` applies.")
    low_threshold: float = Field(20.0, ge=0, le=100, description="Utilization % above which `standard_multiplier` applies.")
    high_multiplier: float = Field(1.5, ge=0)
    mid_multiplier: float = Field(1.2, ge=0)
    standard_multiplier: float = Field(1.0, ge=0)
    low_multiplier: float = Field(0.8, ge=0, description="At or below `low_threshold`.")
    gpu_bonus_per_percent: float = Field(0.01, ge=0)
    time_bonus_cap: float = Field(2.0, ge=0, description="Most time units a task is paid for.")
    time_bonus_unit: float = Field(3600.0, gt=0, description="Seconds in one time unit.")
    minimum: int = Field(1, ge=0, description="Every finished task earns at least this.")

    @model_validator(mode="after")
    def _ordered(self) -> RewardPolicy:
        # Descending thresholds and ascending multipliers keep the reward
        # monotone: using more of what was reserved never pays less.
        if not self.high_threshold >= self.mid_threshold >= self.low_threshold:
            raise ValueError("reward thresholds must satisfy high >= mid >= low")
        if not self.high_multiplier >= self.mid_multiplier >= self.standard_multiplier >= self.low_multiplier:
            raise ValueError("reward multipliers must satisfy high >= mid >= standard >= low")
        return self

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RewardPolicy:
        """The site's policy from HIVEMIND_REWARD_* settings."""
        if settings is None:
            from hivemind_celery.core.settings import get_settings

            settings = get_settings()
        return cls(
            base=settings.reward_base,
            high_threshold=settings.reward_high_threshold,
            mid_threshold=settings.reward_mid_threshold,
            low_threshold=settings.reward_low_threshold,
            high_multiplier=settings.reward_high_multiplier,
            mid_multiplier=settings.reward_mid_multiplier,
            standard_multiplier=settings.reward_standard_multiplier,
            low_multiplier=settings.reward_low_multiplier,
            gpu_bonus_per_percent=settings.reward_gpu_bonus_per_percent,
            time_bonus_cap=settings.reward_time_bonus_cap,
            time_bonus_unit=settings.reward_time_bonus_unit,
            minimum=settings.reward_minimum,
        )

    def multiplier(self, utilization: float) -> float:
        if utilization > self.high_threshold:
            return self.high_multiplier
        if utilization > self.mid_threshold:
            return self.mid_multiplier
        if utilization > self.low_threshold:
            return self.standard_multiplier
        return self.low_multiplier

    @property
    def maximum(self) -> int:
        """The most one task can earn under this policy."""
        return max(self.minimum, int(self.base * self.high_multiplier * self.time_bonus_cap + 100.0 * self.gpu_bonus_per_percent))


DEFAULT_POLICY = RewardPolicy()


def _finite(value: float) -> float:
    """NaN and infinities (a broken measurement) count as nothing measured."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _percent(value: float) -> float:
    return min(100.0, max(0.0, _finite(value)))


def compute_reward(
    duration_s: float,
    cpu_percent: float,
    memory_percent: float,
    gpu_percent: float = 0.0,
    policy: RewardPolicy | None = None,
) -> int:
    """CPT earned by a task that ran `duration_s` seconds at these utilizations.

    Percentages are clamped to 0..100, a negative or non-finite duration counts
    as 0. `policy=None` uses the seed's parameters (`DEFAULT_POLICY`); a worker
    passes `RewardPolicy.from_settings()` to apply the site's configuration.
    """
    policy = policy or DEFAULT_POLICY
    duration = max(0.0, _finite(duration_s))
    utilization = (_percent(cpu_percent) + _percent(memory_percent)) / 2
    gpu_bonus = _percent(gpu_percent) * policy.gpu_bonus_per_percent
    time_bonus = min(duration / policy.time_bonus_unit, policy.time_bonus_cap)
    reward = int(policy.base * policy.multiplier(utilization) * time_bonus + gpu_bonus)
    return max(policy.minimum, reward)


def measured_percentages(
    usage: UsageSummary,
    cpus_reserved: float,
    memory_limit_bytes: int,
    wall_seconds: float,
) -> tuple[float, float]:
    """(cpu %, memory %) of what the task reserved, each capped at 100.

    cpu % = CPU seconds / (wall seconds x reserved cores) x 100;
    memory % = peak bytes / limit bytes x 100. A zero reservation or duration
    gives 0 % rather than a division error.
    """
    cpu_capacity = max(0.0, _finite(wall_seconds)) * max(0.0, _finite(cpus_reserved))
    cpu = _percent(usage.cpu_seconds / cpu_capacity * 100.0) if cpu_capacity > 0 else 0.0
    memory = _percent(usage.memory_peak_bytes / memory_limit_bytes * 100.0) if memory_limit_bytes > 0 else 0.0
    return cpu, memory


def reward_for_usage(
    usage: UsageSummary,
    duration_s: float,
    policy: RewardPolicy | None = None,
) -> int:
    """The reward from a UsageSummary whose percentages the sampler filled in
    (already relative to the reservation)."""
    return compute_reward(duration_s, usage.cpu_percent, usage.memory_percent, usage.gpu_percent, policy)
