"""Output floods through a real worker: gigabytes of stdout stay bounded in
Redis (the output stream), in the outcome's log tail and in the worker's
memory; binary output comes back as text without breaking anything."""

from __future__ import annotations

import io
import threading
import uuid
import zipfile

import psutil
import pytest

from hivemind_celery.core import keys
from hivemind_celery.core.model import TASK_NAME, TaskSpec, TaskStatus
from hivemind_celery.task.outcomes import celery_outcome
from hivemind_celery.task.streams import STREAM_MAX_BYTES
from tests.services_kit import make_zip

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

MiB = 1024 * 1024
FLOOD_MIB = 2048
TAIL = 64 * 1024  # the worker's default HIVEMIND_LOG_TAIL_BYTES


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker("cpu", concurrency=1)


def run(celery_app, store, files, **fields):
    spec = TaskSpec(task_id=f"f-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip(files)), **fields)
    return spec, celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue="cpu")


class PeakRss:
    """Samples the RSS of a process and all its children until stopped."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def now(self) -> int:
        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


FLOOD = f"""
import sys
line = (b"x" * 1023 + b"\\n") * 1024  # 1 MiB of 1 KiB lines
for _ in range({FLOOD_MIB}):
    sys.stdout.buffer.write(line)
sys.stdout.buffer.flush()
print("flood done", flush=True)
"""


def test_gigabytes_of_stdout_stay_bounded(worker, celery_app, store, redis_client) -> None:
    baseline = PeakRss(worker.proc.pid).now()
    with PeakRss(worker.proc.pid) as rss:
        spec, result = run(celery_app, store, {"main.py": FLOOD}, timeout=600)
        outcome = celery_outcome(result, 900)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    key = keys.task_output(spec.task_id)
    stream_bytes = redis_client.memory_usage(key, samples=0) or 0
    entries = redis_client.xlen(key)
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        task_logs = archive.getinfo("task_logs.txt").file_size
    print(
        f"flood {FLOOD_MIB} MiB: stream {stream_bytes / MiB:.1f} MiB in {entries} entries; "
        f"log tail {len(outcome.log_tail)} chars; task_logs.txt {task_logs} bytes; "
        f"worker RSS {baseline / MiB:.0f} MiB before, peak {rss.peak / MiB:.0f} MiB"
    )
    assert "flood done" in outcome.log_tail
    assert "earlier bytes dropped" in outcome.log_tail
    assert len(outcome.log_tail.encode()) <= TAIL + 200
    assert task_logs <= TAIL + 200
    # Redis keeps at most the stream cap (exact trimming by whole entries).
    assert stream_bytes <= STREAM_MAX_BYTES * 1.5, stream_bytes  # entries of 64 KiB plus Redis overhead
    # The worker holds only bounded buffers: no growth in proportion to the flood.
    assert rss.peak - baseline < 200 * MiB, (baseline, rss.peak)


BINARY = """
import os, sys
sys.stdout.buffer.write(b"\\x00\\xff\\xfe binary \\x1b[2J\\x1b]0;title\\x07 " + os.urandom(256 * 1024) + b"\\n")
sys.stderr.buffer.write(b"\\xc3\\x28 invalid utf-8 on stderr\\n")
print("text after binary", flush=True)
"""


def test_binary_output_comes_back_as_text(worker, celery_app, store) -> None:
    _, result = run(celery_app, store, {"main.py": BINARY})
    outcome = celery_outcome(result, 180)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.reason
    assert "text after binary" in outcome.log_tail
    assert "\ufffd" in outcome.log_tail  # undecodable bytes replaced, not crashing the outcome
    outcome.model_dump_json()  # serialisable for the result backend and the report
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        assert b"text after binary" in archive.read("task_logs.txt")
