"""CPU burners that report their own CPU time, and one measured run of a job the
way `hivemind.run_task` does it minus Celery (runtime, usage meter, outcome): the
usage tests compare the worker's total with the task's own figure."""

from __future__ import annotations

import uuid

from hivemind_celery.core.model import TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime.base import Job
from hivemind_celery.task.meter import UsageMeter
from hivemind_celery.task.outcomes import outcome_from_result
from tests.services_kit import PYTHON_IMAGE, make_zip

PAYLOAD = "sha256:" + "0" * 64
CPUS = 2.0  # every job's reservation

REPORT = (
    "import resource\n"
    "me = resource.getrusage(resource.RUSAGE_SELF)\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print('CPU', me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)\n"
)
BURN = (
    "import os, time\n"
    "def burn(seconds):\n"
    "    start = time.process_time()\n"
    "    while time.process_time() - start < seconds:\n"
    "        pass\n"
)
BURNERS = {
    "3 s": BURN + "burn(3.0)\n" + REPORT,
    "0.5 s": BURN + "burn(0.5)\n" + REPORT,
    # Three forked workers of 0.4 s each and 0.2 s in the parent.
    "forked workers": BURN
    + (
        "workers = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        burn(0.4)\n"
        "        os._exit(0)\n"
        "    workers.append(pid)\n"
        "burn(0.2)\n"
        "for pid in workers:\n"
        "    os.waitpid(pid, 0)\n"
    )
    + REPORT,
}
NOTHING = "pass\n"


def make_job(source: str, **spec: object) -> Job:
    data = make_zip({"main.py": source})
    manifest = workspace.inspect_zip(data)
    task_spec = TaskSpec(task_id=f"exact-{uuid.uuid4().hex[:10]}", payload=PAYLOAD, **{"memory_mb": 256, "cpus": CPUS, **spec})
    return Job(
        spec=task_spec,
        image=PYTHON_IMAGE,
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=120,
        setup_command=workspace.setup_command(manifest),
        pids=64,
    )


def measured_run(runtime, settings: Settings, redis_client, job: Job) -> TaskOutcome:  # type: ignore[no-untyped-def]
    """One run as `hivemind.run_task` does it, minus Celery: runtime, tracker, outcome."""
    tracker = UsageMeter(None, job.spec, redis_client, settings)
    try:
        result = runtime.run(job, on_start=tracker.on_start)
    finally:
        tracker.stop()
    outcome = tracker.complete(outcome_from_result(job.spec, result, settings.worker_id))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.log_tail
    return outcome


def reference(outcome: TaskOutcome) -> float:
    last = outcome.log_tail.strip().splitlines()[-1]
    assert last.startswith("CPU "), outcome.log_tail
    return float(last.split()[1])
