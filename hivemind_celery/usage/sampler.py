"""Per-task resource usage while a task runs, and its totals at the end.

A `UsageSampler` thread reads cumulative counters from a source: the
container's cgroup (exact CPU seconds and the kernel's memory peak), Docker's
stats API where the cgroup files are not visible (a worker in a container of
its own; runtime/docker_stats.py), or psutil over the process tree (the process runtime). Every
`interval` it hands a `UsageSample` to a callback; `stop()` returns the
`UsageSummary` for the outcome and the reward.

Docker removes a container's cgroup the moment its main process exits, so no
read can be taken after the end. The sampler therefore reads the (cheap)
counters every `read_interval` (a fraction of a second) and publishes only
every `interval`; the totals miss at most the last `read_interval` of CPU time.
A source that outlives the processes (a cgroup of the step's own, which the
Docker runtime gives each step) is read only to publish and once at the end.
A runtime that keeps the cgroup alive after the main step (an exec-style
runtime) can call `finish()` before removing it for an exact last read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import psutil

from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.model import UsageSource as Source
from hivemind_celery.core.model import UsageSummary
from hivemind_celery.core.reward import measured_percentages
from hivemind_celery.usage import gpu
from hivemind_celery.usage.cgroup import CgroupGone, CgroupReader

log = logging.getLogger(__name__)

# Counter reads are microseconds on cgroups: read often so that little of a
# task's CPU time falls after the last read before its cgroup disappears.
DEFAULT_READ_INTERVAL = 0.25
# The first sample waits this long (or `interval`, if shorter): a task that ends
# sooner is told whole by its outcome, and publishing (a dozen Redis writes, a
# Celery event) beside its end would only delay that outcome.
FIRST_PUBLISH_AFTER = 1.0


class SourceGone(HivemindError):
    """What was measured has ended; no further reads are possible."""


@dataclass(frozen=True)
class Reading:
    """Cumulative counters from one source at one moment."""

    cpu_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    memory_bytes: int
    memory_peak_bytes: int  # the source's own peak; 0 where it keeps none
    pids: int
    oom_kills: int = 0
    gpu_percent: float = 0.0
    gpu_memory_bytes: int = 0


class UsageSource(Protocol):
    name: Source
    cheap: bool  # a read takes microseconds (local files): safe on the task's start path
    outlives: bool  # its counters stay readable after the measured processes end

    def read(self) -> Reading:
        """Raise SourceGone once the measured thing has ended."""
        ...


@dataclass(frozen=True)
class UsageSample:
    """One published sample: the payload of events, signals and the Redis key."""

    task_id: str
    timestamp: float  # unix seconds
    elapsed_s: float  # since sampling started
    cpu_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    cpu_percent: float  # over the last interval, of the reserved cores (0-100)
    memory_bytes: int
    memory_peak_bytes: int
    memory_percent: float  # current over the limit (0-100)
    pids: int
    oom_kills: int
    gpu_percent: float
    gpu_memory_bytes: int
    source: Source

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CgroupSource:
    """`outlives`: the reader reads a cgroup of the step's own (usage/task_cgroup.py),
    whose totals stay after its processes exit, not the container's, which
    Docker removes with them."""

    name: Source = "cgroup"

    def __init__(self, reader: CgroupReader, with_gpu: bool = False, outlives: bool = False) -> None:
        self.reader = reader
        self.with_gpu = with_gpu
        self.cheap = not with_gpu  # NVML's first call initialises the driver
        self.outlives = outlives

    def read(self) -> Reading:
        try:
            counters = self.reader.read()
            gpu_percent, gpu_memory = 0.0, 0
            if self.with_gpu:
                gpu_percent, gpu_memory = gpu.process_usage(set(self.reader.pids_in_cgroup()))
        except CgroupGone as exc:
            raise SourceGone(str(exc)) from exc
        return Reading(
            cpu_seconds=counters.cpu_seconds,
            cpu_user_seconds=counters.cpu_user_seconds,
            cpu_system_seconds=counters.cpu_system_seconds,
            memory_bytes=counters.memory_bytes,
            memory_peak_bytes=counters.memory_peak_bytes or 0,
            pids=counters.pids or 0,
            oom_kills=counters.oom_kills,
            gpu_percent=gpu_percent,
            gpu_memory_bytes=gpu_memory,
        )


class ProcessSource:
    """psutil over a process and its descendants (the process runtime).

    CPU time of descendants that already exited counts once their parent
    waited for them (the kernel's children times)."""

    name: Source = "process"
    cheap = True
    outlives = False

    def __init__(self, pid: int) -> None:
        try:
            self.process = psutil.Process(pid)
        except psutil.Error as exc:
            raise SourceGone(f"process {pid}: {exc}") from exc

    def read(self) -> Reading:
        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.Error as exc:
            raise SourceGone(str(exc)) from exc
        user = system = 0.0
        rss = 0
        alive = 0
        for proc in tree:
            try:
                times = proc.cpu_times()
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # exited between listing and reading
            user += times.user + times.children_user
            system += times.system + times.children_system
            alive += 1
        if not alive:
            raise SourceGone(f"process {self.process.pid} has ended")
        return Reading(user + system, user, system, rss, 0, alive)


class UsageSampler:
    """Samples one task's usage on a thread; `stop()` gives the totals.

    `start()` returns at once: it takes only the first read of a cheap source
    (so even a task that ends immediately is measured); opening a slow source
    (`open_source`, called when `source` is None) and every publication,
    the first included, happen on the sampler's thread.
    """

    def __init__(
        self,
        source: UsageSource | None,
        task_id: str,
        cpus_reserved: float,
        memory_limit_bytes: int,
        interval: float = 2.0,
        on_sample: Callable[[UsageSample], None] | None = None,
        read_interval: float = DEFAULT_READ_INTERVAL,
        open_source: Callable[[], UsageSource | None] | None = None,
    ) -> None:
        self.source = source
        self.open_source = open_source if source is None else None
        self.task_id = task_id
        self.cpus_reserved = cpus_reserved
        self.memory_limit_bytes = memory_limit_bytes
        self.interval = interval
        self.read_interval = min(read_interval, interval)
        self.on_sample = on_sample
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last: Reading | None = None
        self._last_at = self._started
        self._published: tuple[float, float] | None = None  # (monotonic time, cpu seconds)
        self._peak_memory = 0
        self._peak_pids = 0
        self._peak_gpu_memory = 0
        self._gpu_percent_sum = 0.0
        self._reads = 0
        self._published_count = 0
        self._gone = source is None and open_source is None

    @property
    def source_name(self) -> Source:
        return self.source.name if self.source is not None else "none"

    def start(self) -> UsageSampler:
        self._started = time.monotonic()
        self._published = None
        if self.source is not None and getattr(self.source, "cheap", False):
            self._read()
        self._thread = threading.Thread(target=self._run, name=f"usage-{self.task_id}", daemon=True)
        self._thread.start()
        return self

    def _open(self) -> None:
        """Open the slow source, on the sampler's thread."""
        opener, self.open_source = self.open_source, None
        if opener is None:
            return
        try:
            source = opener()
        except Exception:  # noqa: BLE001 - without a source the task runs unmeasured
            log.exception("opening the usage source failed", extra={"task_id": self.task_id})
            source = None
        with self._lock:
            self.source, self._gone = source, source is None

    def _run(self) -> None:
        self._open()
        if self._reads == 0:
            self._read()
        next_publish = self._started + min(self.interval, FIRST_PUBLISH_AFTER)
        while True:
            between = self._reads_between()
            pause = max(0.0, next_publish - time.monotonic())
            if self._done.wait(min(pause, self.read_interval) if between else pause):
                return  # stop() joins us, so nothing is published after it returns
            publishing = time.monotonic() >= next_publish
            if not (publishing or between):
                continue  # woke a little early: nothing is due yet
            if not self._read() or self._emptied():
                return
            if publishing:
                next_publish = max(next_publish + self.interval, time.monotonic())
                self._publish()

    def _reads_between(self) -> bool:
        """Between publications, reads only bound what is lost when a container's
        cgroup vanishes with its processes; a cgroup that outlives them is read
        exactly at the end (`stop`), so it is read only to publish."""
        with self._lock:
            source = self.source
        return source is not None and source.name == "cgroup" and not getattr(source, "outlives", False)

    def _read(self) -> bool:
        """One read into the totals; False once the source is gone."""
        with self._lock:
            if self._gone or self.source is None:
                return False
            try:
                reading = self.source.read()
            except SourceGone:
                self._gone = True
                return False
            except Exception:  # noqa: BLE001 - a bad read must not end the task
                log.exception("usage read failed", extra={"task_id": self.task_id})
                return True
            self._last, self._last_at = reading, time.monotonic()
            self._reads += 1
            self._peak_memory = max(self._peak_memory, reading.memory_peak_bytes, reading.memory_bytes)
            self._peak_pids = max(self._peak_pids, reading.pids)
            self._peak_gpu_memory = max(self._peak_gpu_memory, reading.gpu_memory_bytes)
            self._gpu_percent_sum += reading.gpu_percent
            return True

    def _emptied(self) -> bool:
        """Every process of the task has exited: a cgroup parent outlives them,
        and its readings are no longer live usage (the last read still counts)."""
        with self._lock:
            return self._last is not None and self._last.pids == 0 and self._peak_pids > 0

    def _publish(self) -> None:
        sample = self.latest()
        if sample is None:
            return
        self._published_count += 1
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception:  # noqa: BLE001 - a broken receiver must not stop sampling
                log.exception("usage callback failed", extra={"task_id": self.task_id})

    def latest(self) -> UsageSample | None:
        """The most recent reading as a sample (None before the first)."""
        with self._lock:
            reading, at = self._last, self._last_at
            if reading is None:
                return None
            previous = self._published
            self._published = (at, reading.cpu_seconds)
        cpu_percent = 0.0
        if previous is not None and at > previous[0] and self.cpus_reserved > 0:
            busy = reading.cpu_seconds - previous[1]
            cpu_percent = min(100.0, max(0.0, busy / ((at - previous[0]) * self.cpus_reserved) * 100.0))
        memory_percent = 0.0
        if self.memory_limit_bytes > 0:
            memory_percent = min(100.0, reading.memory_bytes / self.memory_limit_bytes * 100.0)
        return UsageSample(
            task_id=self.task_id,
            timestamp=time.time(),
            elapsed_s=at - self._started,
            cpu_seconds=reading.cpu_seconds,
            cpu_user_seconds=reading.cpu_user_seconds,
            cpu_system_seconds=reading.cpu_system_seconds,
            cpu_percent=cpu_percent,
            memory_bytes=reading.memory_bytes,
            memory_peak_bytes=max(self._peak_memory, reading.memory_bytes),
            memory_percent=memory_percent,
            pids=reading.pids,
            oom_kills=reading.oom_kills,
            gpu_percent=reading.gpu_percent,
            gpu_memory_bytes=reading.gpu_memory_bytes,
            source=self.source_name,
        )

    def finish(self) -> None:
        """Take a last read now, while the measured thing still exists."""
        self._read()

    def stop(self) -> UsageSummary:
        """Stop sampling and return the totals. The first call reads once more;
        a later one returns the same totals (the measured thing has ended)."""
        first = not self._done.is_set()
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.interval * 2))
        if first:
            self._read()
        return self.summary()

    def summary(self) -> UsageSummary:
        with self._lock:
            last = self._last
            if last is None:
                return UsageSummary(source=self.source_name)
            summary = UsageSummary(
                cpu_seconds=last.cpu_seconds,
                cpu_user_seconds=last.cpu_user_seconds,
                cpu_system_seconds=last.cpu_system_seconds,
                memory_peak_bytes=self._peak_memory,
                pids_peak=self._peak_pids,
                oom_kills=last.oom_kills,
                gpu_percent=min(100.0, self._gpu_percent_sum / self._reads),
                gpu_memory_peak_bytes=self._peak_gpu_memory,
                samples=self._reads,
                source=self.source_name,
                wall_seconds=self._last_at - self._started,
            )
            wall = self._last_at - self._started
        cpu_percent, memory_percent = measured_percentages(summary, self.cpus_reserved, self.memory_limit_bytes, wall)
        return summary.model_copy(update={"cpu_percent": cpu_percent, "memory_percent": memory_percent})
