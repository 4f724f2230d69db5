"""Driving a paused or stepped-aside task from a test: submit it, find its running
container, read its cgroup freezer state, wait for a condition."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from hivemind_celery.core.model import TASK_NAME, TaskSpec
from hivemind_celery.payloads.store import PayloadStore
from tests.services_kit import make_zip


def wait_for(check, what: str, limit: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def submit(celery_app, store: PayloadStore, files: dict, timeout: float):
    spec = TaskSpec(task_id=f"p-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip(files)), timeout=timeout)
    return spec, celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")


def running_container(docker_client, task_id: str):
    def find():
        found = docker_client.containers.list(filters={"label": f"hivemind.task_id={task_id}", "status": "running"})
        return found[0] if found else None

    return wait_for(find, f"the container of {task_id} running", limit=120)


def freezer_state(container) -> str:
    """The cgroup v1 freezer state of the container, read on the host."""
    container.reload()
    parent = (container.attrs["HostConfig"].get("CgroupParent") or "/docker").strip("/")
    return (Path("/sys/fs/cgroup/freezer") / parent / container.id / "freezer.state").read_text().strip()
