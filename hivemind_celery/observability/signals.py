"""Custom Celery signals of a HiveMind worker.

Connect a receiver at import time in a module of your own and have the
worker import it: `celery -A hivemind_celery worker --include mymodule`
(Celery's own option; tests/usage_signal_receiver.py is such a module,
tests/task/test_usage_live.py runs it in a real worker)::

    from hivemind_celery.observability.signals import task_rewarded

    @task_rewarded.connect
    def book(sender, task_id, reward, usage, duration, **kwargs): ...

Where they fire: all four are sent by the code running the task, which with
the prefork pool is the *pool child process*, not the worker's main process.
A receiver therefore runs in the child: it sees what the child imported (every
module the app includes is imported before the pool forks, so receivers
connected at import time are there), and anything it records in memory stays
in that child. To get data to the main process or elsewhere, write it out
(Redis, a log, a metrics store). Receivers must be quick and must not raise:
errors are logged by Celery and do not affect the task (`send_robust`).

In every signal `sender` is the task name, `"hivemind.run_task"`.
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

resource_usage = Signal(
    name="hivemind.resource_usage",
    providing_args={"task_id", "sample"},
)
resource_usage.__doc__ = """One usage sample of a running task, every HIVEMIND_SAMPLE_INTERVAL seconds.

    task_id (str): the task.
    sample (dict): `UsageSample.as_dict()`: task_id, timestamp (unix s),
        elapsed_s, cpu_seconds, cpu_user_seconds, cpu_system_seconds (totals so
        far), cpu_percent (last interval, of the reserved cores, 0-100),
        memory_bytes, memory_peak_bytes, memory_percent (of the limit, 0-100),
        pids, oom_kills, gpu_percent, gpu_memory_bytes, source ("cgroup",
        "docker-stats" or "process").
"""

task_rewarded = Signal(
    name="hivemind.task_rewarded",
    providing_args={"task_id", "reward", "usage", "duration"},
)
task_rewarded.__doc__ = """A finished task's CPT credit was computed.

    task_id (str): the task.
    reward (int): CPT earned (`hivemind_celery.core.reward.compute_reward`).
    usage (dict): the final `UsageSummary` as JSON (model_dump(mode="json")).
    duration (float): seconds the main step ran.
"""

task_container_started = Signal(
    name="hivemind.task_container_started",
    providing_args={"task_id", "container_id"},
)
task_container_started.__doc__ = """The task's main step started.

    task_id (str): the task.
    container_id (str | None): the Docker container id; None on the process runtime.
"""

task_container_finished = Signal(
    name="hivemind.task_container_finished",
    providing_args={"task_id", "outcome"},
)
task_container_finished.__doc__ = """The task's run ended (any status), before its result is stored.

    task_id (str): the task.
    outcome (dict): the `TaskOutcome` as JSON, with usage and reward filled in.
"""

ALL_SIGNALS = (resource_usage, task_rewarded, task_container_started, task_container_finished)
