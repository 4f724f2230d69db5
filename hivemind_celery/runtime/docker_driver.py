"""The Docker runtime: one job, one labelled volume, one hardened container
per step, all through the docker SDK.

Lifecycle: image check → [set-up container, which makes the workspace and
deps volumes as dockerd creates it: workspace and CA bundle copied in, its
proxy container started (setup_egress: its only way out), start, stream logs,
wait, proxy removed] → main container (without a set-up step, the workspace
volume is made and filled beside its create): start, on_start, stream logs,
wait with the timeout polling should_stop → on timeout or stop: SIGTERM,
stop_grace, SIGKILL → inspect (OOMKilled, ExitCode; beside the step's totals from its
cgroup parent and the log's catch-up) →
/workspace copied out, bounded → remove containers and volumes. Files are
copied through the volumes' host directories when the worker can see them,
else with put_archive/get_archive (docker_files.py, volume_io); how a step's
container ended and what that means for the outcome is docker_step.py.

`run` raises ImageUnavailable (a RuntimeRefused) when the image cannot be
used, and lets errors reaching dockerd at all propagate; everything the
daemon refuses about the task itself ends as a FAILED JobResult. A container
that disappears mid-run (removed by `kill` from another process) ends as
CANCELLED with stopped=True. started_at/finished_at span both steps: the
task's time includes installing its requirements.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from typing import Any

import docker
import requests
from docker.errors import APIError, ImageNotFound, NotFound

from hivemind_celery.core.model import TaskStatus, UsageSummary
from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime import docker_files, docker_step, reaper, step_usage
from hivemind_celery.runtime.base import (
    Job,
    JobResult,
    OnOutput,
    OnStart,
    ShouldStop,
    StopGrace,
    safe_stop_check,
)
from hivemind_celery.runtime.disk_watch import DiskWatch, start_watch
from hivemind_celery.runtime.docker_config import (
    DEPS_MOUNT,
    LABEL_TASK,
    WORKSPACE,
    container_kwargs,
    object_name,
    setup_proxied,
    volume_kwargs,
)
from hivemind_celery.runtime.docker_step import StepEnd
from hivemind_celery.runtime.follow import Follower, Waiter
from hivemind_celery.runtime.freeze import Freezer
from hivemind_celery.runtime.images import ensure_image, forget_image
from hivemind_celery.runtime.logtail import LogTail
from hivemind_celery.runtime.setup_egress import ProxyReport, finish_proxy, start_proxy
from hivemind_celery.usage import task_cgroup

log = logging.getLogger(__name__)

# How often a running container's wait loop asks Redis whether to stop or freeze (two
# round trips each): the step's exit ends the wait at once whatever this is. An owner's
# pause is decided as it is saved (the preferences step watches for saves), so it lands
# within about a second; a pool's stop too.
POLL_SECONDS = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class DockerRuntime:
    name = "docker"

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self.client = client or docker.from_env(timeout=math.ceil(settings.docker_timeout))
        # dockerd is reached on its socket, never through an HTTP proxy: this
        # spares every API call requests' scan of the environment for proxy
        # settings (~0.3 ms a call, a dozen calls a task).
        self.client.api.trust_env = False
        self._host_cpus: float | None = None
        self._cgroup_parents: bool | None = None  # decided on first use (see task_cgroup)
        self._task_cgroups: dict[str, list[str]] = {}  # task id -> cgroup parents to remove
        # What runs with defer_cleanup left: task id -> (containers, volumes).
        self._left: dict[str, tuple[list, list]] = {}
        self._should_freeze: ShouldStop | None = None  # the running job's (run() sets it)
        self._stop_grace: StopGrace | None = None  # likewise

    # --- Runtime protocol ---------------------------------------------------
    def kill(self, task_id: str) -> int:
        return reaper.kill_task(self.client, self.settings.worker_id, task_id)

    def reap(self, keep: set[str]) -> int:
        removed = reaper.reap(self.client, self.settings.worker_id, keep)
        worker = self.settings.worker_id
        kept = {task_cgroup.leaf_name(worker, task, role) for task in keep for role in ("setup", "main")}
        for cgroup in task_cgroup.leftover_docker_parents(task_cgroup.leaf_prefix(worker), kept):
            cgroup.remove()
        return removed

    def cleanup(self, task_id: str) -> None:
        containers, volumes = self._left.pop(task_id, ([], []))
        for container in containers:
            reaper.remove_container(container, task_id)
        for volume in volumes:
            reaper.remove_volume(volume, task_id)
        for parent in self._task_cgroups.pop(task_id, []):  # after the containers: they are its children
            cgroup = task_cgroup.locate(parent)
            if cgroup is not None:
                cgroup.remove()

    def run(
        self,
        job: Job,
        on_output: OnOutput | None = None,
        on_start: OnStart | None = None,
        should_stop: ShouldStop | None = None,
        defer_cleanup: bool = False,
        should_freeze: ShouldStop | None = None,
        stop_grace: StopGrace | None = None,
    ) -> JobResult:
        task_id = job.spec.task_id
        self._should_freeze = should_freeze
        self._stop_grace = stop_grace
        for earlier in list(self._left):  # a caller that never cleaned up: do it now
            self.cleanup(earlier)
        ensure_image(self.client, self.settings, job.image, task_id)
        # Leftovers of an earlier attempt of this task (its worker died; the caller
        # holds the task's lock, so no live run owns them) would clash with our
        # names and keep using the host: remove them whichever worker made them.
        # A first attempt has none, and is spared the two listings.
        if not job.first_attempt:
            orphans = reaper.kill_task_anywhere(self.client, task_id)
            if orphans:
                log.warning("removed %d leftover(s) of an earlier attempt", orphans, extra={"task_id": task_id})
        tail = LogTail(self.settings.log_tail_bytes, on_output, task_id)
        stop_check = safe_stop_check(should_stop, task_id)
        started_at = _now()
        containers: list = []
        volumes: list = []
        try:
            return self._run_steps(job, tail, on_start, stop_check, started_at, containers, volumes)
        except ImageNotFound as exc:  # removed between the check and create
            forget_image(job.image)
            return JobResult(
                TaskStatus.FAILED,
                None,
                started_at,
                _now(),
                tail.text(),
                reason=f"image {job.image!r} disappeared before the task started: {exc}",
            )
        except NotFound as exc:
            log.warning("task's container or volume vanished: %s", exc, extra={"task_id": task_id})
            return self._result(job, "main", StepEnd(vanished=True), None, started_at, tail)
        except APIError as exc:
            log.warning("docker refused the task: %s", exc, extra={"task_id": task_id})
            return JobResult(
                TaskStatus.FAILED,
                None,
                started_at,
                _now(),
                tail.text(),
                reason=f"docker refused the task: {exc.explanation or exc}" + docker_step.gpu_note(job, containers),
            )
        except requests.exceptions.ConnectionError as exc:
            # dockerd stopped or restarted under the task (it kills its containers).
            log.warning("lost dockerd mid-task: %s", exc, extra={"task_id": task_id})
            return JobResult(
                TaskStatus.FAILED,
                None,
                started_at,
                _now(),
                tail.text(),
                reason=f"the worker lost its connection to dockerd while the task ran (dockerd stopped or restarted): {exc}",
            )
        finally:
            self._left[task_id] = (containers, volumes)
            if not defer_cleanup:
                self.cleanup(task_id)

    # --- steps --------------------------------------------------------------
    def _run_steps(self, job, tail, on_start, stop_check, started_at, containers, volumes) -> JobResult:  # type: ignore[no-untyped-def]
        # Nothing is asked of dockerd here: a container's mount makes a volume that
        # does not exist yet (with its labels), and without a set-up step the
        # workspace is also made beside the main container's create (`_fill`).
        # Listed before either, so cleanup removes whatever they left.
        task_id = job.spec.task_id
        workspace = self._volume(task_id, "workspace")
        volumes.append(workspace)
        deps = None
        if job.setup_command:
            deps = self._volume(task_id, "deps")
            volumes.append(deps)
        with ExitStack() as watches:  # the disk watch stops with the run
            return self._run_in(job, workspace, deps, watches, tail, on_start, stop_check, started_at, containers)

    def _volume(self, task_id: str, role: str):  # type: ignore[no-untyped-def]
        """A task volume's model, before dockerd has made it (see `_run_steps`)."""
        return self.client.volumes.prepare_model({"Name": object_name(self.settings.worker_id, task_id, role)})

    def _fill(self, workspace, tar: bytes, task_id: str) -> bool:  # type: ignore[no-untyped-def]
        """Make the workspace volume and write `tar` into its directory; False when
        the Docker API has to copy it instead (docker_files.write_in_place)."""
        made = self.client.volumes.create(**volume_kwargs(self.settings, task_id, "workspace"))
        workspace.attrs["Mountpoint"] = made.attrs.get("Mountpoint")
        return docker_files.write_in_place(workspace, tar, self.settings, task_id)

    def _watch(self, container, volumes: list, task_id: str, watches: ExitStack) -> DiskWatch | None:  # type: ignore[no-untyped-def]
        """Learn the volumes' host directories from the created container; watch them."""
        sources = {m.get("Name"): m.get("Source") for m in container.attrs.get("Mounts") or []}
        for volume in volumes:
            volume.attrs["Mountpoint"] = sources.get(volume.name)
        settings = self.settings
        watch = start_watch(
            [v.attrs["Mountpoint"] for v in volumes],
            settings.workspace_max_mb,
            settings.workspace_max_files,
            settings.workspace_check_interval,
            task_id,
        )
        if watch is not None:
            watches.callback(watch.stop)
        return watch

    def _run_in(self, job, workspace, deps, watches, tail, on_start, stop_check, started_at, containers) -> JobResult:  # type: ignore[no-untyped-def]
        settings, task_id = self.settings, job.spec.task_id
        volumes = [workspace] if deps is None else [workspace, deps]
        measured: dict[str, UsageSummary | None] = {}
        if deps is not None:
            ca_bundle = docker_files.read_ca(settings.ca_bundle)
            setup = self._create(job, "setup", workspace.name, deps.name, ca_bundle is not None)
            containers.append(setup)
            watch = self._watch(setup, volumes, task_id, watches)
            docker_files.put(setup, WORKSPACE, workspace, job.workspace_tar, settings)
            docker_files.put(setup, DEPS_MOUNT, deps, docker_files.deps_tar(ca_bundle), settings)
            proxy = None
            if setup_proxied(job, settings):  # the set-up step's only way out (setup_egress)
                proxy = start_proxy(self.client, job, settings, deps.name)
                containers.append(proxy)
            tail.note("set-up: installing requirements.txt")
            end = self._run_step(job, setup, settings.setup_timeout, stop_check, tail, watch)
            report = finish_proxy(proxy, task_id) if proxy is not None else ProxyReport()
            measured["setup"] = end.usage
            if not end.ok:
                result = self._result(job, "setup", end, setup, started_at, tail, workspace, measured)
                if end.exit_code and not (end.over_disk or end.timed_out or end.stopped or end.vanished):
                    result.reason = docker_step.setup_reason(result.reason, tail, settings, report)
                return result
            tail.note("set-up done")
        if deps is not None and stop_check():  # asked to stop during the set-up step (the caller asked just before it)
            end = StepEnd(stopped=True)
            return self._result(job, "main", end, containers[-1] if containers else None, started_at, tail, workspace, measured)
        if deps is not None:  # the set-up step's container got the files
            main = self._create(job, "main", workspace.name, deps.name, False)
            containers.append(main)
        else:
            # The workspace volume is made and filled while dockerd creates the container
            # (which would make it too: whichever comes first, the other finds it).
            with ThreadPoolExecutor(1, thread_name_prefix=f"workspace-{task_id}") as pool:
                written = pool.submit(self._fill, workspace, job.workspace_tar, task_id)
                main = self._create(job, "main", workspace.name, None, False)
                containers.append(main)
            watch = self._watch(main, volumes, task_id, watches)
            if not written.result():
                main.put_archive(WORKSPACE, job.workspace_tar)
        reader = partial(docker_files.read_checkpoint, main, workspace, task_id, self.settings)
        announce = None
        if on_start is not None:
            # A GPU task is measured by its container's own cgroup, found by its PID.
            needs_pid = job.spec.wants_gpu
            announce = partial(docker_step.announce, on_start=on_start, task_id=task_id, reader=reader, needs_pid=needs_pid)
        end = self._run_step(job, main, job.timeout, stop_check, tail, watch, announce)
        measured["main"] = end.usage
        return self._result(job, "main", end, main, started_at, tail, workspace, measured)

    def _create(self, job: Job, role: str, workspace: str, deps: str | None, has_ca: bool):  # type: ignore[no-untyped-def]
        parent = None
        if self._use_cgroup_parents():
            parent = task_cgroup.docker_parent(self.settings.worker_id, job.spec.task_id, role)
            earlier = task_cgroup.locate(parent)  # an earlier attempt's: its totals would mix in
            if earlier is not None and not earlier.remove():
                log.warning(
                    "an earlier attempt's cgroup is still busy; this step's totals are sampled",
                    extra={"task_id": job.spec.task_id},
                )
                parent = None
            else:
                self._task_cgroups.setdefault(job.spec.task_id, []).append(parent)
        kwargs = container_kwargs(job, self.settings, role, workspace, deps, self._cpus(), has_ca, parent)
        return self.client.containers.create(**kwargs)

    def _use_cgroup_parents(self) -> bool:
        if self._cgroup_parents is None:
            driver = str(self.client.info().get("CgroupDriver") or "")
            self._cgroup_parents = task_cgroup.docker_parents_usable(driver)
            if not self._cgroup_parents:
                log.warning(
                    "task containers get no cgroup parent of their own (cgroup driver %r, or the "
                    "host's cgroups are not writable from here): usage totals are the last reading "
                    "before each container exits",
                    driver,
                )
        return self._cgroup_parents

    def _measure(self, job: Job, container, end: StepEnd) -> UsageSummary | None:  # type: ignore[no-untyped-def]
        """The step's totals from its cgroup parent, which outlives the container's own cgroup."""
        parent = (container.attrs.get("HostConfig") or {}).get("CgroupParent")
        cgroup = task_cgroup.locate(parent) if parent else None
        if cgroup is None:
            return None
        counters = task_cgroup.read_or_none(cgroup)
        if counters is None:
            return None
        return step_usage.from_counters(counters, end.wall_seconds, job.spec.cpus, job.spec.memory_mb * 1024 * 1024)

    def _cpus(self) -> float:
        if self._host_cpus is None:
            self._host_cpus = float(self.client.info().get("NCPU") or 1)
        return self._host_cpus

    def _run_step(
        self,
        job: Job,
        container,
        timeout: float,
        stop_check,
        tail: LogTail,  # type: ignore[no-untyped-def]
        watch: DiskWatch | None,
        announce: Callable[[Any], None] | None = None,
    ) -> StepEnd:
        began = time.monotonic()
        container.start()
        announcer = None
        if announce is not None:
            # Beside following and waiting, not before them: a short task can end
            # before an inspect for its PID returns, dockerd busy with its exit.
            announcer = threading.Thread(target=announce, args=(container,), name=f"announce-{container.name}", daemon=True)
            announcer.start()
        follower = Follower(container, tail)
        follower.start()
        waiter = Waiter(container)
        waiter.start()
        end = StepEnd()
        deadline = time.monotonic() + timeout
        freezer = Freezer(
            self._should_freeze,
            container.pause,
            container.unpause,
            self.settings.max_frozen_seconds,
            container.labels.get(LABEL_TASK, ""),
        )
        while not waiter.done.wait(POLL_SECONDS):
            if stop_check():
                end.stopped = True
                break
            if freezer.poll():
                end.frozen_too_long = True
                break
            if time.monotonic() >= deadline + freezer.frozen_seconds():  # frozen time does not count
                end.timed_out = True
                break
            if watch is not None and watch.exceeded:
                end.over_disk = watch.exceeded
                break
        freezer.release()  # a frozen container neither stops nor ends
        if end.over_disk:  # no grace: it would go on filling the disk
            self._kill(container)
            waiter.done.wait(self.settings.docker_timeout)
        elif end.stopped or end.timed_out or end.frozen_too_long:
            self._stop(container)
            waiter.done.wait(self.settings.docker_timeout)
        end.wall_seconds = time.monotonic() - began
        # The totals, then the log's last line, while the waiter reads how the container ended.
        end.usage = self._measure(job, container, end)
        follower.finish()
        docker_step.read_exit(container, end, waiter.ended_state(self.settings.docker_timeout))
        if announcer is not None:  # on_start has returned before the step's end is told
            announcer.join()
        return end

    def _kill(self, container) -> None:  # type: ignore[no-untyped-def]
        try:
            container.kill()
        except (NotFound, APIError):  # gone, or already exited
            pass

    def _stop(self, container) -> None:  # type: ignore[no-untyped-def]
        """SIGTERM, then SIGKILL after stop_grace (dockerd does both)."""
        try:
            grace = self._stop_grace() if self._stop_grace is not None else self.settings.stop_grace
            container.stop(timeout=math.ceil(grace))
        except NotFound:
            pass
        except APIError as exc:
            log.warning("stop failed, killing: %s", exc, extra={"task_id": container.labels.get(LABEL_TASK)})
            reaper.remove_container(container)

    # --- result -------------------------------------------------------------
    def _result(
        self,
        job: Job,
        role: str,
        end: StepEnd,
        container,
        started_at: datetime,  # type: ignore[no-untyped-def]
        tail: LogTail,
        workspace=None,
        measured: dict | None = None,
    ) -> JobResult:
        status, reason = docker_step.status(job, role, end, self.settings)
        copy = checkpoint = None
        if container is not None and not end.vanished:
            copy = docker_files.copy_out(container, workspace, job.spec.task_id, self.settings)
            if role == "main":
                checkpoint = docker_files.read_checkpoint(container, workspace, job.spec.task_id, self.settings)
        return JobResult(
            status=status,
            exit_code=end.exit_code,
            started_at=started_at,
            finished_at=_now(),
            log_tail=tail.text(),
            reason=reason,
            workspace_tar=copy.tar if copy else None,
            stopped=end.stopped or end.vanished or end.frozen_too_long,
            workspace_notes=copy.skipped if copy else [],
            step_usage={role: usage for role, usage in (measured or {}).items() if usage is not None},
            checkpoint=checkpoint,
        )
