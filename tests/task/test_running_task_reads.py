"""What the console reads of a running task, written by the parts that write it,
in a real Redis: the latest usage sample (UsageKeyObserver -> Activity.usage) and
the end of the output (OutputStream -> output_tail)."""

from __future__ import annotations

import dataclasses

import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.activity import Activity
from hivemind_celery.task.observers import TaskRun, UsageKeyObserver
from hivemind_celery.task.streams import OutputStream, output_tail
from hivemind_celery.usage.sampler import UsageSample

pytestmark = [pytest.mark.redis]


def sample(task_id: str, cpu_percent: float) -> UsageSample:
    return UsageSample(
        task_id=task_id,
        timestamp=1.0,
        elapsed_s=2.0,
        cpu_seconds=3.5,
        cpu_user_seconds=3.0,
        cpu_system_seconds=0.5,
        cpu_percent=cpu_percent,
        memory_bytes=1 << 20,
        memory_peak_bytes=2 << 20,
        memory_percent=12.5,
        pids=3,
        oom_kills=0,
        gpu_percent=0.0,
        gpu_memory_bytes=0,
        source="cgroup",
    )


def test_the_latest_usage_sample_reads_back(redis_client, redis_url) -> None:
    task_id = "reads-usage"
    redis_client.delete(keys.task_usage(task_id))
    activity = Activity(redis_client)
    assert activity.usage(task_id) == {}, "not sampled yet"
    run = TaskRun(
        spec=TaskSpec(task_id=task_id, payload="sha256:" + "0" * 64), client=redis_client, settings=Settings(redis_url=redis_url)
    )
    UsageKeyObserver().on_sample(run, sample(task_id, 40.0))
    UsageKeyObserver().on_sample(run, sample(task_id, 60.0))
    assert activity.usage(task_id) == dataclasses.asdict(sample(task_id, 60.0))


@pytest.mark.parametrize("stored", [b"not json", b"[1, 2]"])
def test_a_damaged_usage_sample_reads_as_none(redis_client, stored: bytes) -> None:
    redis_client.set(keys.task_usage("reads-damaged"), stored)
    assert Activity(redis_client).usage("reads-damaged") == {}


def test_the_output_tail_is_the_end_of_the_newest_chunks(redis_client) -> None:
    task_id = "reads-output"
    redis_client.delete(keys.task_output(task_id))
    assert output_tail(redis_client, task_id) == ""
    stream = OutputStream(redis_client, task_id, flush_interval=3600, flush_bytes=8)
    for index in range(12):
        stream.write(f"line {index:02d}\n".encode())  # 8 bytes: each line is one entry
    stream.flush()
    whole = "".join(f"line {index:02d}\n" for index in range(12))
    assert output_tail(redis_client, task_id, entries=100) == whole
    assert output_tail(redis_client, task_id, entries=2) == "line 10\nline 11\n", "the last two entries, in order"
    assert output_tail(redis_client, task_id, max_bytes=5, entries=100) == "e 11\n"


def test_output_cut_inside_a_character_still_reads(redis_client) -> None:
    task_id = "reads-utf8"
    redis_client.delete(keys.task_output(task_id))
    stream = OutputStream(redis_client, task_id)
    stream.write("née\n".encode())
    stream.flush()
    assert output_tail(redis_client, task_id, max_bytes=3) == "\ufffde\n", "half an é is replaced, not an error"
