"""The CPT reward: the seed formula by hand, and its properties by hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hivemind_celery.core.model import UsageSummary
from hivemind_celery.core.reward import (
    DEFAULT_POLICY,
    RewardPolicy,
    compute_reward,
    measured_percentages,
    reward_for_usage,
)
from hivemind_celery.core.settings import Settings

# Any float at all, including NaN, infinities and out-of-range values.
any_float = st.floats(allow_nan=True, allow_infinity=True)
percent = st.floats(min_value=-50, max_value=150, allow_nan=False)
duration = st.floats(min_value=-100, max_value=30_000, allow_nan=False)

SEED_MAXIMUM = int(10 * 1.5 * 2.0 + 100 * 0.01)  # = 31


@pytest.mark.parametrize(
    ("duration_s", "cpu", "mem", "gpu", "expected"),
    [
        # util (90+90)/2 = 90 > 80 -> x1.5; time min(3600/3600, 2) = 1; int(10*1.5*1 + 0) = 15
        (3600, 90, 90, 0, 15),
        # util (60+50)/2 = 55 > 50 -> x1.2; time 1800/3600 = 0.5; int(10*1.2*0.5) = 6
        (1800, 60, 50, 0, 6),
        # util (10+20)/2 = 15 <= 20 -> x0.8; time min(4, 2) = 2; int(10*0.8*2) = 16
        (14400, 10, 20, 0, 16),
        # util 100 -> x1.5; time 60/3600 = 0.0167; int(10*1.5*0.0167) = int(0.25) = 0 -> minimum 1
        (60, 100, 100, 0, 1),
        # util 30 > 20 -> x1.0; time 1; gpu 75*0.01 = 0.75; int(10 + 0.75) = 10
        (3600, 30, 30, 75, 10),
        # util 30 -> x1.0; time 1.5; gpu 100*0.01 = 1; int(10*1.0*1.5 + 1) = int(16.0) = 16
        (5400, 30, 30, 100, 16),
        # everything at its cap: int(10*1.5*2 + 100*0.01) = 31
        (7200, 100, 100, 100, 31),
        # util exactly 80 is not > 80 -> x1.2; int(10*1.2*1) = 12
        (3600, 80, 80, 0, 12),
        # util exactly 20 is not > 20 -> x0.8; int(10*0.8*1) = 8
        (3600, 20, 20, 0, 8),
    ],
)
def test_seed_formula_by_hand(duration_s: float, cpu: float, mem: float, gpu: float, expected: int) -> None:
    assert compute_reward(duration_s, cpu, mem, gpu) == expected


@pytest.mark.parametrize(
    ("duration_s", "cpu", "mem", "gpu", "expected"),
    [
        # cpu 250 -> 100, mem -5 -> 0: util 50 is not > 50 -> x1.0; int(10*1*1) = 10
        (3600, 250, -5, 0, 10),
        # NaN cpu counts as 0: util (0+100)/2 = 50 -> x1.0 -> 10
        (3600, math.nan, 100, 0, 10),
        # gpu 500 -> 100: int(10*1.5*1 + 1) = 16
        (3600, 100, 100, 500, 16),
        # negative, NaN and infinite durations count as 0 -> minimum 1
        (-100, 100, 100, 0, 1),
        (math.nan, 100, 100, 0, 1),
        (-math.inf, 100, 100, 0, 1),
        # +inf is not a finite measurement either -> 0 -> minimum 1
        (math.inf, 100, 100, 0, 1),
    ],
)
def test_inputs_are_clamped(duration_s: float, cpu: float, mem: float, gpu: float, expected: int) -> None:
    assert compute_reward(duration_s, cpu, mem, gpu) == expected


@given(any_float, any_float, any_float, any_float)
def test_reward_is_bounded(duration_s: float, cpu: float, mem: float, gpu: float) -> None:
    reward = compute_reward(duration_s, cpu, mem, gpu)
    assert isinstance(reward, int)
    assert 1 <= reward <= SEED_MAXIMUM
    assert DEFAULT_POLICY.maximum == SEED_MAXIMUM


@given(duration, duration, percent, percent, percent)
def test_monotone_in_duration(a: float, b: float, cpu: float, mem: float, gpu: float) -> None:
    short, long = sorted((a, b))
    assert compute_reward(short, cpu, mem, gpu) <= compute_reward(long, cpu, mem, gpu)


@given(duration, percent, percent, percent, percent)
def test_monotone_in_cpu(d: float, a: float, b: float, mem: float, gpu: float) -> None:
    low, high = sorted((a, b))
    assert compute_reward(d, low, mem, gpu) <= compute_reward(d, high, mem, gpu)


@given(duration, percent, percent, percent, percent)
def test_monotone_in_memory(d: float, cpu: float, a: float, b: float, gpu: float) -> None:
    low, high = sorted((a, b))
    assert compute_reward(d, cpu, low, gpu) <= compute_reward(d, cpu, high, gpu)


@given(duration, percent, percent, percent, percent)
def test_monotone_in_gpu(d: float, cpu: float, mem: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert compute_reward(d, cpu, mem, low) <= compute_reward(d, cpu, mem, high)


def test_custom_policy() -> None:
    policy = RewardPolicy(base=100, time_bonus_unit=60, time_bonus_cap=10, minimum=0)
    # util 100 -> x1.5; time min(120/60, 10) = 2; int(100*1.5*2) = 300
    assert compute_reward(120, 100, 100, policy=policy) == 300
    # nothing ran: int(0) = 0 and the minimum is 0
    assert compute_reward(0, 0, 0, policy=policy) == 0
    assert policy.maximum == int(100 * 1.5 * 10 + 1)


def test_policy_rejects_non_monotone_parameters() -> None:
    with pytest.raises(ValidationError, match="thresholds"):
        RewardPolicy(high_threshold=40, mid_threshold=50)
    with pytest.raises(ValidationError, match="multipliers"):
        RewardPolicy(low_multiplier=2.0)
    with pytest.raises(ValidationError, match="time_bonus_unit"):
        RewardPolicy(time_bonus_unit=0)


def test_policy_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVEMIND_REWARD_BASE", "20")
    monkeypatch.setenv("HIVEMIND_REWARD_TIME_BONUS_CAP", "3")
    policy = RewardPolicy.from_settings(Settings())
    assert policy.base == 20 and policy.time_bonus_cap == 3
    # util 100 -> x1.5; time min(4h/1h, 3) = 3; int(20*1.5*3) = 90
    assert compute_reward(4 * 3600, 100, 100, policy=policy) == 90


@pytest.mark.parametrize(
    ("cpu_seconds", "wall", "cpus", "peak", "limit", "expected"),
    [
        # 1.5 s of CPU over 10 s on 1 core = 15 %; 80 MiB of 100 MiB = 80 %
        (1.5, 10, 1, 80 << 20, 100 << 20, (15.0, 80.0)),
        # 3 s over 6 s on half a core = 3 / 3 = 100 %
        (3.0, 6, 0.5, 0, 100, (100.0, 0.0)),
        # more CPU than reserved (a burst) and a peak over the limit are capped at 100
        (10.0, 1, 1, 300, 100, (100.0, 100.0)),
        # nothing reserved or no time: 0, not a division error
        (5.0, 0, 1, 10, 0, (0.0, 0.0)),
        (5.0, 10, 0, 10, 100, (0.0, 10.0)),
    ],
)
def test_measured_percentages(
    cpu_seconds: float, wall: float, cpus: float, peak: int, limit: int, expected: tuple[float, float]
) -> None:
    usage = UsageSummary(cpu_seconds=cpu_seconds, memory_peak_bytes=peak)
    cpu, mem = measured_percentages(usage, cpus, limit, wall)
    assert cpu == pytest.approx(expected[0])
    assert mem == pytest.approx(expected[1])


def test_reward_for_usage() -> None:
    usage = UsageSummary(cpu_percent=90, memory_percent=70, gpu_percent=50)
    # util 80 is not > 80 -> x1.2; time 1; gpu 0.5; int(12 + 0.5) = 12
    assert reward_for_usage(usage, 3600) == 12
