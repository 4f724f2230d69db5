"""Finding and removing a worker's task containers and volumes by label.

Works from any process (the Celery main process, a CLI, a test) because it
only asks dockerd: what carries `hivemind.worker=<worker>` (and
`hivemind.task_id=<id>`) is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import docker
import requests
from docker.errors import APIError, NotFound
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from hivemind_celery.runtime.docker_config import LABEL_TASK, label_filters

log = logging.getLogger(__name__)


def _in_use(exc: BaseException) -> bool:
    return isinstance(exc, APIError) and exc.status_code == 409


def remove_container(container, task_id: str = "") -> bool:  # type: ignore[no-untyped-def]
    """Kill and remove; True if this call removed it."""
    try:
        container.remove(force=True)
        return True
    except NotFound:
        return False
    except APIError as exc:
        if exc.status_code == 409:  # removal already in progress elsewhere
            return False
        log.warning("could not remove container %s: %s", container.name, exc, extra={"task_id": task_id})
        return False
    except requests.exceptions.ConnectionError as exc:  # dockerd away: the periodic reaper retries
        log.warning("could not remove container %s: %s", container.name, exc, extra={"task_id": task_id})
        return False


# A volume stays "in use" for a moment after its container went.
@retry(retry=retry_if_exception(_in_use), stop=stop_after_delay(5), wait=wait_fixed(0.1), reraise=True)
def _remove_volume_retrying(volume) -> None:  # type: ignore[no-untyped-def]
    volume.remove(force=True)


def remove_volume(volume, task_id: str = "") -> bool:  # type: ignore[no-untyped-def]
    try:
        _remove_volume_retrying(volume)
        return True
    except NotFound:
        return False
    except APIError as exc:
        log.warning("could not remove volume %s: %s", volume.name, exc, extra={"task_id": task_id})
        return False
    except requests.exceptions.ConnectionError as exc:  # dockerd away: the periodic reaper retries
        log.warning("could not remove volume %s: %s", volume.name, exc, extra={"task_id": task_id})
        return False


def _remove_all(client: docker.DockerClient, filters: dict, keep: Iterable[str] = ()) -> int:
    keep = set(keep)
    removed = 0
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        task_id = container.labels.get(LABEL_TASK, "")
        if task_id in keep:
            continue
        if remove_container(container, task_id):
            removed += 1
            log.info("removed container %s", container.name, extra={"task_id": task_id})
    for volume in client.volumes.list(filters=filters):
        task_id = (volume.attrs.get("Labels") or {}).get(LABEL_TASK, "")
        if task_id in keep:
            continue
        if remove_volume(volume, task_id):
            removed += 1
            log.info("removed volume %s", volume.name, extra={"task_id": task_id})
    return removed


def kill_task(client: docker.DockerClient, worker_id: str, task_id: str) -> int:
    """Kill and remove every container and volume of one task; returns how many went."""
    return _remove_all(client, label_filters(worker_id, task_id))


def kill_task_anywhere(client: docker.DockerClient, task_id: str) -> int:
    """Kill and remove a task's containers and volumes whichever worker made them.

    Only for the run that holds the task's lock: any other container of that
    task belongs to a run whose worker died (SIGKILL, lost host) and whose
    container kept running, orphaned, when the message was redelivered."""
    return _remove_all(client, {"label": [f"{LABEL_TASK}={task_id}"]})


def reap(client: docker.DockerClient, worker_id: str, keep: set[str]) -> int:
    """Remove this worker's containers and volumes whose task is not in keep."""
    return _remove_all(client, label_filters(worker_id), keep)
