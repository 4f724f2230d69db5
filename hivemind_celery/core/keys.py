"""Every Redis key the site uses, in one place, so no two parts invent the same
name for different things. All keys start with `hm:`; no part lists keys with
KEYS or SCAN on a hot path."""

from __future__ import annotations

PREFIX = "hm"


def payload(digest: str) -> str:
    """Bytes of a task or result zip; digest is the hex sha256."""
    return f"{PREFIX}:payload:{digest}"


def task_lock(task_id: str) -> str:
    """Held while a worker runs the task (idempotency)."""
    return f"{PREFIX}:task:{task_id}:lock"


def task_outcome(task_id: str) -> str:
    """The final TaskOutcome JSON, kept so a redelivered task returns it."""
    return f"{PREFIX}:task:{task_id}:outcome"


def task_attempts(task_id: str) -> str:
    """How many times a worker started this task (bounds redelivery)."""
    return f"{PREFIX}:task:{task_id}:attempts"


def task_checkpoint(task_id: str) -> str:
    """JSON pointer to the task's latest complete checkpoint (ref, time, progress)."""
    return f"{PREFIX}:task:{task_id}:checkpoint"


def task_checkpoint_blob(task_id: str, digest: str) -> str:
    """Bytes of one checkpoint zip of the task; digest is its hex sha256."""
    return f"{PREFIX}:task:{task_id}:checkpoint:{digest}"


def task_attempt_log(task_id: str) -> str:
    """List of the task's attempts (JSON), oldest first."""
    return f"{PREFIX}:task:{task_id}:attempt-log"


def worker_draining(worker_id: str) -> str:
    """Set while the worker stops gracefully: its tasks checkpoint and go back to the queue."""
    return f"{PREFIX}:worker:{worker_id}:draining"


def task_stop(task_id: str) -> str:
    """Set when someone asked the task to stop; the running task polls it."""
    return f"{PREFIX}:task:{task_id}:stop"


def task_output(task_id: str) -> str:
    """Redis stream of the task's output chunks (field `data`), capped."""
    return f"{PREFIX}:task:{task_id}:output"


def task_usage(task_id: str) -> str:
    """Latest usage sample JSON of a running task."""
    return f"{PREFIX}:task:{task_id}:usage"


def bridge_owed(node_id: str) -> str:
    """Hash of task ids the bridge accepted and still owes the Node Pool a result
    for (value: the accepted request as JSON)."""
    return f"{PREFIX}:bridge:{node_id}:owed"


def bridge_cursor(node_id: str) -> str:
    """Hash task id -> id of the last output stream entry sent to the Node Pool."""
    return f"{PREFIX}:bridge:{node_id}:cursor"


def bridge_intake_lock(node_id: str, task_id: str) -> str:
    """Held while the bridge takes in one task id (makes ExecuteTask idempotent)."""
    return f"{PREFIX}:bridge:{node_id}:intake:{task_id}"


# --- worker registry (registry.py): every read path is O(1) or O(log N) -------
def worker_totals(worker_id: str) -> str:
    """Hash of one worker's running totals: tasks:<status>, cpu_seconds, cpt_awarded."""
    return f"{PREFIX}:worker:{worker_id}:totals"


def worker_info(worker_id: str) -> str:
    """Hash of one live worker's capacity (cpus, memory, GPUs, queues, host)."""
    return f"{PREFIX}:worker:{worker_id}:info"


def workers_by_deadline() -> str:
    """Sorted set worker id -> heartbeat deadline (Redis server time, seconds)."""
    return f"{PREFIX}:workers:deadline"


def site_paused() -> str:
    """Hash worker id -> why it takes no tasks now (disk nearly full); read by the
    bridge to say why the site is full."""
    return f"{PREFIX}:site:paused"


def site_capacity() -> str:
    """Hash of totals over live workers (workers, cpus_milli, memory_mb, gpus, gpu_memory_mb)."""
    return f"{PREFIX}:site:capacity"


def site_queues() -> str:
    """Hash queue name -> number of live workers consuming it."""
    return f"{PREFIX}:site:queues"


def site_gpu_names() -> str:
    """Hash GPU model name -> number of such GPUs on live workers."""
    return f"{PREFIX}:site:gpu_names"


def allocation(task_id: str) -> str:
    """Hash of what one task holds (cpus_milli, memory_mb, gpus, gpu_memory_mb)."""
    return f"{PREFIX}:alloc:{task_id}"


def allocations_by_deadline() -> str:
    """Sorted set task id -> allocation deadline (Redis server time, seconds)."""
    return f"{PREFIX}:alloc:deadline"


def site_allocated() -> str:
    """Hash of totals over live allocations (tasks, cpus_milli, memory_mb, gpus, gpu_memory_mb)."""
    return f"{PREFIX}:site:allocated"


def gpu_leases(host: str) -> str:
    """Sorted set of one host's GPU leases: member "uuid|task id|MiB asked", score
    the lease's deadline (Redis server time, seconds); site/gpu_allocator.py."""
    return f"{PREFIX}:gpu:{host}:leases"


# --- rescue of a dead worker's tasks (rescue.py) ---------------------------------
def worker_deliveries(worker_id: str) -> str:
    """Hash task id -> broker delivery tag of the tasks one worker runs now."""
    return f"{PREFIX}:worker:{worker_id}:deliveries"


def workers_with_deliveries() -> str:
    """Set of worker ids that have a deliveries hash (so rescue never scans keys)."""
    return f"{PREFIX}:workers:with-deliveries"


def registry_reconcile_lock() -> str:
    """Held by the one worker that rebuilds the registry's totals this round."""
    return f"{PREFIX}:registry:reconcile"


# --- the contributor's console (observability/series.py, site/activity.py, observability/logs.py)
def task_series(task_id: str) -> str:
    """List of a task's usage samples over its life (JSON points, capped)."""
    return f"{PREFIX}:task:{task_id}:series"


def task_info(task_id: str) -> str:
    """JSON of what the console shows of a task (worker, cpus, memory, image)."""
    return f"{PREFIX}:task:{task_id}:info"


def host_series(worker_id: str) -> str:
    """List of one worker host's snapshots (CPU, memory, disk, network, GPUs), capped."""
    return f"{PREFIX}:host:{worker_id}:series"


def host_series_index() -> str:
    """Sorted set worker id -> time of its last host snapshot."""
    return f"{PREFIX}:host:series"


def site_running() -> str:
    """Sorted set task id -> start time of the tasks running on the site."""
    return f"{PREFIX}:site:running"


def site_history() -> str:
    """Sorted set task id -> end time of the tasks that ended lately (capped)."""
    return f"{PREFIX}:site:history"


def site_problems() -> str:
    """List of the site processes' recent warnings and errors (JSON, newest first, capped)."""
    return f"{PREFIX}:site:problems"


def site_earned() -> str:
    """Hash of CPT the site earned: `total` and `day:<YYYY-MM-DD>` (UTC)."""
    return f"{PREFIX}:site:earned"


def bridge_status() -> str:
    """Hash the bridge keeps of its standing with the Node Pool (node_id, pool, status, last_beat, error;
    with the tunnel: tunnel, tunnel_address, tunnel_network, tunnel_handshake_at)."""
    return f"{PREFIX}:bridge:status"


# --- the owner's preferences and the site's mode (site/prefs.py) ------------------
def site_prefs() -> str:
    """The owner's Preferences JSON (absent: the environment defaults)."""
    return f"{PREFIX}:site:prefs"


def site_prefs_changed() -> str:
    """Channel: a message each time the owner's preferences are saved (workers wake on it)."""
    return f"{PREFIX}:site:prefs:changed"


def site_modes() -> str:
    """Hash worker id -> the SiteMode JSON that worker last decided, with its time ("at")."""
    return f"{PREFIX}:site:modes"


def worker_mode(worker_id: str) -> str:
    """The SiteMode JSON one worker decided for its host; its running tasks poll it
    to freeze or thaw (expires when the worker stops deciding)."""
    return f"{PREFIX}:worker:{worker_id}:mode"
