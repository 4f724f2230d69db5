"""The dispatcher: a thread that every few seconds fails tasks of silent nodes and
pushes PENDING tasks to Idle nodes whose capacity covers them.

Matching: status exactly `Idle`, heard from within `node_fresh_s`, not backing
off (after a refused task until its next Idle report or `node_backoff_s`, after
an unreachable one for `node_backoff_s`), capacity (the registered totals less
the tasks the node holds until their results and the calls in flight, see
nodes.py) covers memory_gb, cpu_score, gpu_score and gpu_memory_gb; a GPU task
(gpu_score or gpu_memory_gb > 0) only goes to a node with GPU capacity; a
named gpu_name must appear in the node's GPU name (case-insensitive) unless it
is empty or `Any`. The ExecuteTask call runs on a small thread pool so one slow
node does not hold up the others; a task in flight stays PENDING and is
skipped by later rounds until its call ends.

Rounds run every `dispatch_interval_s`, and at once when `wake()` is called: on
an upload, a registration, or a node reporting Idle, so a task does not wait
out the interval when there is a node for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from nodepool import nodes, tasks
from nodepool.nodes import Node
from nodepool.settings import NodePoolSettings
from nodepool.store import Store
from nodepool.tasks import Request
from nodepool.worker_client import WorkerClient
from proto import nodepool_pb2 as pb

log = logging.getLogger("hivemind.nodepool.dispatch")

Capacity = list[int]  # [memory_gb, cpu_score, gpu_score, gpu_memory_gb]


def _needs(request: Request) -> Capacity:
    return [request.memory_gb, request.cpu_score, request.gpu_score, request.gpu_memory_gb]


def gpu_name_matches(wanted: str, offered: str) -> bool:
    wanted = wanted.strip().lower()
    return wanted in ("", "any") or wanted in offered.lower()


def fits(request: Request, node: Node, left: Capacity) -> bool:
    if request.wants_gpu and not node.has_gpu:
        return False
    needs = _needs(request)
    if any(need > have for need, have in zip(needs, left)):
        return False
    return gpu_name_matches(request.gpu_name, node.gpu_name)


class Dispatcher:
    def __init__(self, store: Store, settings: NodePoolSettings, client: WorkerClient) -> None:
        self._store = store
        self._settings = settings
        self._client = client
        # Where a node is dialled; the VPN hub replaces it with the node's tunnel address.
        self.address_of: Callable[[Node], str] = lambda node: node.address
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="nodepool-execute")
        self._started_at = time.time()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nodepool-dispatcher", daemon=True)

    def start(self) -> None:
        nodes.clear_in_flight(self._store)
        self._thread.start()

    def wake(self) -> None:
        """Run a round now rather than at the end of the interval."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._calls.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._settings.dispatch_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.run_once()
            except Exception:  # a bad round must not end dispatching
                log.exception("dispatch round failed")

    def run_once(self) -> int:
        """One round; returns how many tasks were sent out."""
        s = self._settings
        now = time.time()
        for task_id, node_id in tasks.fail_silent(
            self._store, now, s.silent_fail_s, s.busy_silent_fail_s, heard_since=self._started_at
        ):
            log.warning("task failed: node silent", extra={"task_id": task_id, "node_id": node_id})
        candidates = nodes.dispatchable(self._store, s.node_fresh_s, s.refuse_loopback_hosts, now)
        if not candidates:
            return 0
        left = {n.node_id: [n.memory_gb, n.cpu_score, n.gpu_score, n.gpu_memory_gb] for n in candidates}
        sent = 0
        for task_id, request, _size in tasks.pending(self._store):
            with self._lock:
                if task_id in self._in_flight:
                    continue
            node = next((n for n in candidates if fits(request, n, left[n.node_id])), None)
            if node is None:
                continue
            # The list was read before the in-flight check: a call that ended since
            # then has left the set, and its task may be RUNNING now. Sending it
            # again would make the node's "already accepted" look like a task
            # stopped during dispatch, and the pool would stop the real run.
            if not tasks.is_pending(self._store, task_id):
                continue
            needs = _needs(request)
            left[node.node_id] = [have - need for have, need in zip(left[node.node_id], needs)]
            nodes.reserve(self._store, node.node_id, *needs)
            with self._lock:
                self._in_flight.add(task_id)
            self._calls.submit(self._send, task_id, request, node)
            sent += 1
        return sent

    def _send(self, task_id: str, request: Request, node: Node) -> None:
        extra = {"task_id": task_id, "node_id": node.node_id}
        try:
            call = pb.ExecuteTaskRequest(
                task_id=task_id,
                task_zip=tasks.task_zip(self._store, task_id),
                # The protocol's ExecuteTask carries the CPU/GPU request as floats: the scores asked for.
                cpu_usage=float(request.cpu_score),
                gpu_usage=float(request.gpu_score),
                memory_gb=request.memory_gb,
                gpu_memory_gb=request.gpu_memory_gb,
            )
            answered = True  # the node said no (rather than could not be reached)
            try:
                reply = self._client.execute(self.address_of(node), call)
                accepted, reason = reply.success, reply.message
            except grpc.RpcError as exc:
                accepted, reason = False, f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                answered = False
            if accepted:
                running = tasks.mark_running(self._store, task_id, node.node_id, f"running on {node.node_id}")
                # The call is over: a RUNNING task now holds its room through the tasks table.
                nodes.reserve(self._store, node.node_id, *(-need for need in _needs(request)))
                if running:
                    log.info("task dispatched", extra=extra)
                elif tasks.stop_was_requested(self._store, task_id):
                    # Stopped while the call was on its way: tell the node to drop it.
                    log.info("task stopped during dispatch; stopping it on the node", extra=extra)
                    self.stop_on_node(node, task_id)
                else:
                    log.warning("task left PENDING during dispatch without a stop; left as it is", extra=extra)
                return
            tasks.note_dispatch_failure(self._store, task_id, node.node_id, reason)
            nodes.reserve(self._store, node.node_id, *(-need for need in _needs(request)))  # give it back
            nodes.back_off(self._store, node.node_id, self._settings.node_backoff_s, until_idle_report=answered)
            log.warning("node did not take task: %s", reason[:200], extra=extra)
        except Exception:
            log.exception("dispatch of task failed", extra=extra)
        finally:
            with self._lock:
                self._in_flight.discard(task_id)

    def stop_on_node(self, node: Node, task_id: str) -> tuple[bool, str]:
        """Ask the node to stop a task; (accepted, the node's message or the error)."""
        try:
            reply = self._client.stop(self.address_of(node), task_id)
        except grpc.RpcError as exc:
            return False, f"could not reach node {node.node_id}: {exc.code().name}"  # type: ignore[attr-defined]
        return reply.success, reply.message
