"""Worker-site configuration, read from the environment.

Every variable is listed in docs/configuration.md; a test compares that page
with the fields here, so a new field without documentation fails CI.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hivemind_celery.core.units import MiB


class Settings(BaseSettings):
    """One flat settings object; the env prefix is HIVEMIND_ except REDIS_URL."""

    model_config = SettingsConfigDict(env_prefix="HIVEMIND_", extra="ignore")

    # --- Redis: one URL for everything unless a role overrides it -----------
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "HIVEMIND_REDIS_URL"),
        description="Broker, result backend and payload store unless overridden.",
    )
    broker_url: str | None = Field(None, description="Celery broker URL (default: REDIS_URL).")
    result_backend: str | None = Field(None, description="Celery result backend (default: REDIS_URL).")
    payload_redis_url: str | None = Field(None, description="Payload store Redis (default: REDIS_URL).")

    # --- identity ------------------------------------------------------------
    worker_id: str = Field(
        default_factory=socket.gethostname,
        description="Name this worker labels its containers with; unique per site.",
    )

    # --- runtime -------------------------------------------------------------
    runtime: Literal["docker", "process"] = Field("docker", description="docker, or process (no isolation).")
    task_image: str = Field("hivemind-task-python:bookworm", description="Default image for tasks.")
    # NoDecode: read as a comma list, not JSON.
    allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Images a task may name (comma list); the default image is always allowed.",
    )
    allow_network: bool = Field(False, description="Operator policy: may tasks ask for network?")
    setup_network: bool = Field(True, description="Give the requirements.txt set-up step network (it needs PyPI).")
    image_pull_timeout: float = Field(300.0, gt=0, description="Seconds allowed to pull a missing image.")
    docker_timeout: float = Field(60.0, gt=0, description="Seconds for one Docker API call.")
    task_user: str = Field("1000:1000", description="uid:gid the task runs as inside its container.")
    tmpfs_size: str = Field("100m", description="Size of the /tmp tmpfs in each container.")
    pids_limit: int = Field(256, gt=0, description="Default pids limit per task.")
    workspace_max_mb: int = Field(
        8192, ge=0, description="Disk a task may use in /workspace and its installed requirements, in MiB (0: no cap)."
    )
    workspace_max_files: int = Field(200_000, ge=0, description="Files and directories a task may create there (0: no cap).")
    workspace_check_interval: float = Field(
        1.0, gt=0, description="Seconds between two measurements of a running task's workspace."
    )
    volume_io: Literal["auto", "api"] = Field(
        "auto",
        description="How task files go into and out of task volumes: auto (through the volume's directory "
        "on the host when the worker can see it, else the Docker archive API) or api (always the API).",
    )
    nofile_limit: int = Field(1024, gt=0, description="Open-file ulimit per task.")
    log_max_size: str = Field("10m", description="Docker json-file log cap per container.")
    stop_grace: float = Field(3.0, ge=0, description="Seconds between SIGTERM and SIGKILL on stop.")
    checkpoint_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds a task is told to wait between checkpoints (HIVEMIND_CHECKPOINT_INTERVAL in "
        "its environment); the worker saves its checkpoint directory when it changed, at most this often.",
    )
    checkpoint_max_bytes: int = Field(
        64 * MiB,
        gt=0,
        description="Largest checkpoint directory saved (file contents); a larger one is not saved and the task is told why.",
    )
    shutdown_grace: float = Field(
        20.0,
        ge=0,
        description="Seconds a running task gets between SIGTERM and SIGKILL when its worker stops "
        "(to write a last checkpoint); keep it below the service manager's stop timeout.",
    )
    nproc_limit: int = Field(
        4096, gt=0, description="Process ulimit (per uid, shared by all tasks); the per-task bound is the pids limit."
    )
    setup_timeout: float = Field(
        300.0, gt=0, description="Seconds allowed for the requirements.txt set-up step (within the hard limit's margin)."
    )
    ca_bundle: str = Field(
        "/etc/ssl/certs/ca-certificates.crt",
        description="Host CA bundle copied into the set-up container so pip trusts the host's CAs.",
    )
    setup_index_url: str = Field(
        "https://pypi.org/simple",
        description="The package index (PEP 503 simple API) the set-up step installs from; nothing in a task "
        "can choose another (pip runs --isolated, no configuration file, no PIP_* variable of the task's).",
    )
    # NoDecode: read as a comma list, not JSON.
    setup_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["files.pythonhosted.org"],
        description="Hosts (host or host:port, port 443 if none) besides the index's own that the set-up step "
        "may download from, where the index keeps its files (comma list; PyPI's are on files.pythonhosted.org).",
    )
    setup_allow_source_builds: bool = Field(
        False,
        description="Let the set-up step build packages published only as source. Off: wheels only "
        "(--only-binary=:all:), so installing runs no code of any package. On: a source build runs the "
        "package's own build code during the set-up step (see docs/operations.md).",
    )
    setup_egress: Literal["index", "open"] = Field(
        "index",
        description="Docker runtime: index (the set-up container has no network; a proxy container lets it "
        "reach only the index and HIVEMIND_SETUP_ALLOWED_HOSTS) or open (Docker's default bridge, as before).",
    )
    runtime_dir: str | None = Field(
        None, description="Process runtime: workspaces and pid files (default: <tmp>/hivemind-<worker_id>)."
    )

    # --- limits --------------------------------------------------------------
    default_timeout: float = Field(3600.0, gt=0, description="Task timeout when the spec names none.")
    max_timeout: float = Field(6 * 3600.0, gt=0, description="Longest timeout a task may ask for.")
    visibility_timeout: float = Field(
        12 * 3600.0,
        gt=0,
        description="Redis visibility timeout; must exceed the hard time limit on every worker.",
    )
    time_limit_margin: float = Field(
        600.0,
        ge=0,
        description="Seconds added to HIVEMIND_MAX_TIMEOUT and the pull timeout for Celery's hard time limit "
        "(set-up, copying and packing). Lower it with the visibility timeout for faster redelivery.",
    )
    task_lock_ttl: float = Field(
        60.0,
        gt=0,
        description="Seconds a task's run lock outlives a dead worker; a redelivered task waits at most this "
        "long before running again.",
    )
    max_cpus: float = Field(64.0, gt=0, description="Most CPU cores one task may reserve.")
    max_memory_mb: int = Field(256 * 1024, gt=0, description="Most memory one task may reserve (MiB).")
    payload_max_bytes: int = Field(100 * MiB, gt=0, description="Largest task or result zip stored.")
    payload_ttl: int = Field(7 * 24 * 3600, gt=0, description="Seconds a payload lives in Redis.")
    max_unpacked_bytes: int = Field(1024 * MiB, gt=0, description="Largest total size a zip may unpack to.")
    max_files: int = Field(10_000, gt=0, description="Most entries a task zip may hold.")
    max_compression_ratio: float = Field(200.0, gt=1, description="Refuse zip entries packed tighter than this.")
    max_attempts: int = Field(
        3, ge=1, description="Times a task may be started (redelivered after a lost worker) before it is given up."
    )
    log_tail_bytes: int = Field(64 * 1024, gt=0, description="How much of a task's output is kept.")
    result_max_bytes: int = Field(100 * MiB, gt=0, description="Largest workspace copied back as a result.")

    # --- measurement, signals and logging ------------------------------------
    sample_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between live usage samples (events, the console's charts, the pool's TaskUsage); "
        "the first comes 1 s after the start (sooner if this is shorter), so a task that ends within it is "
        "told by its outcome alone; the totals the reward uses are read exactly whatever this is.",
    )
    log_json: bool = Field(False, description="Log one JSON object per line.")
    log_level: str = Field("INFO", description="Log level for the worker, bridge and Node Pool.")
    metrics_port: int = Field(0, ge=0, description="Prometheus port on the worker (0: off).")

    # --- reward (CPT credit; defaults are the seed formula's) -----------------
    reward_base: float = Field(10.0, ge=0, description="CPT for one time unit at the standard multiplier.")
    reward_high_threshold: float = Field(80.0, ge=0, le=100, description="Utilization % above which the high multiplier applies.")
    reward_mid_threshold: float = Field(50.0, ge=0, le=100, description="Utilization % above which the mid multiplier applies.")
    reward_low_threshold: float = Field(
        20.0, ge=0, le=100, description="Utilization % above which the standard multiplier applies."
    )
    reward_high_multiplier: float = Field(1.5, ge=0, description="Reward multiplier above the high threshold.")
    reward_mid_multiplier: float = Field(1.2, ge=0, description="Reward multiplier above the mid threshold.")
    reward_standard_multiplier: float = Field(1.0, ge=0, description="Reward multiplier above the low threshold.")
    reward_low_multiplier: float = Field(0.8, ge=0, description="Reward multiplier at or below the low threshold.")
    reward_gpu_bonus_per_percent: float = Field(0.01, ge=0, description="CPT added per GPU utilization %.")
    reward_time_bonus_cap: float = Field(2.0, ge=0, description="Most time units one task is paid for.")
    reward_time_bonus_unit: float = Field(3600.0, gt=0, description="Seconds in one reward time unit.")
    reward_minimum: int = Field(1, ge=0, description="Least CPT a finished task earns.")

    # --- worker registry, host monitor and health ------------------------------
    registry_heartbeat_interval: float = Field(
        10.0, gt=0, description="Seconds between registry heartbeats (jittered); 3 missed beats = gone."
    )
    rescue_interval: float = Field(
        30.0,
        gt=0,
        description="Seconds between looks for dead workers whose unfinished tasks must go back on "
        "their queue (see docs/RELIABILITY.md).",
    )
    registry_reconcile_interval: float = Field(
        300.0, gt=0, description="Seconds between rebuilds of the registry's totals (one worker at a time)."
    )
    capacity_cpus: float = Field(0.0, ge=0, description="CPU cores this worker offers (0: all it may use).")
    capacity_memory_mb: int = Field(0, ge=0, description="Memory this worker offers in MiB (0: all of it).")
    monitor_disk_path: str = Field("/", description="Filesystem whose free space the monitor and health check watch.")
    health_min_disk_free_mb: int = Field(1024, ge=0, description="Health check fails below this much free disk (MiB).")
    health_min_memory_mb: int = Field(256, ge=0, description="Health check fails below this much available memory (MiB).")

    # --- GPUs: which this host shares, and how many tasks each may hold (site/gpu_allocator.py) --
    gpu_devices: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="GPU indices or UUIDs this host offers (comma list; empty: all NVML sees)."
    )
    gpu_share: int = Field(
        1,
        ge=1,
        le=64,
        description="Tasks one GPU may hold at once; above 1, GPU memory requests are checked "
        "against what the card's other tasks asked for.",
    )
    gpu_lease_ttl: float = Field(
        60.0,
        gt=0,
        description="Seconds a task's GPUs stay held after its worker last renewed them (a crashed "
        "worker's GPUs come back after this).",
    )
    gpu_wait: float = Field(600.0, ge=0, description="Seconds a GPU task waits for a free GPU on this host before it fails.")

    # --- the contributor's console (hivemind console) ---------------------------
    console_host: str = Field(
        "127.0.0.1", description="Address `hivemind console` listens on; off loopback it needs HIVEMIND_CONSOLE_PASSWORD."
    )
    console_port: int = Field(5001, gt=0, lt=65536, description="Port of `hivemind console`.")
    console_password: SecretStr | None = Field(
        None,
        description="Console login password; unset: one is generated at first start and kept in "
        "HIVEMIND_CONSOLE_STATE_DIR/password (mode 0600).",
    )
    console_state_dir: str = Field(
        "~/.hivemind/console", description="Where the console keeps its generated password and session signing key (mode 0600)."
    )
    console_idle_exit: float = Field(
        300.0,
        ge=0,
        description="Seconds with no request and no open connection after which the console's web process exits; "
        "a small activator keeps the port and starts it again at the next connection. 0: always on "
        "(as `hivemind console --always-on`).",
    )

    # --- the owner's preferences: defaults until someone sets them (core/prefs.py) --
    prefs_run_mode: Literal["always", "when_idle", "never"] = Field(
        "always", description="Run tasks always, only while the owner is not using the machine, or never."
    )
    prefs_suspend_above_cpu_percent: float | None = Field(
        None, gt=0, le=100, description="Suspend tasks while non-task CPU use is above this % (unset: never)."
    )
    prefs_hours: str = Field(
        "", description="Run only between these hours, HH:MM-HH:MM local time (may cross midnight; empty: any)."
    )
    prefs_cpu_share_percent: float = Field(100.0, ge=1, le=100, description="Share at most this % of the CPUs.")
    prefs_memory_share_percent: float = Field(100.0, ge=1, le=100, description="Share at most this % of the memory.")
    prefs_gpus: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="GPU indices or UUIDs to share (comma list; empty: all)."
    )
    prefs_keep_free_disk_gb: float = Field(0.0, ge=0, description="Keep at least this many GiB of disk free.")
    prefs_pause_on_battery: bool = Field(
        True, description="Pause while the machine runs on its battery (a machine without one never does)."
    )
    prefs_max_cpu_temperature_c: float | None = Field(
        None, gt=0, le=150, description="CPU tasks pause while the CPU is hotter than this, °C (unset: never)."
    )
    prefs_max_gpu_temperature_c: float | None = Field(
        None, gt=0, le=150, description="GPU tasks pause while a lent GPU is hotter than this, °C (unset: never)."
    )
    prefs_temperature_margin_c: float = Field(
        5.0, ge=0, le=50, description="After a heat pause, resume only this many °C below the limit."
    )
    prefs_resume_after_seconds: float = Field(
        60.0, ge=0, le=3600, description="After a battery or heat pause, resume once the cause has been clear this many seconds."
    )
    prefs_release_memory_after_minutes: float | None = Field(
        None,
        gt=0,
        description="A pause longer than this many minutes checkpoints the running tasks, stops them "
        "and frees their memory; they resume later (unset: they stay frozen in memory). Keep it below "
        "HIVEMIND_MAX_FROZEN_SECONDS, which stops a frozen task for good.",
    )
    prefs_check_interval: float = Field(
        1.0, gt=0, le=1.5, description="Seconds between two evaluations of the preferences on each worker."
    )
    max_frozen_seconds: float = Field(
        3600.0,
        gt=0,
        description="A task frozen by a pause longer than this is stopped (it also lengthens Celery's hard time limit).",
    )

    # --- bridge: this site's link to a HiveMind Node Pool (bridge/) -----------
    nodepool_address: str = Field("localhost:50051", description="host:port of the Node Pool's gRPC server.")
    username: str = Field("", description="The site's worker account on the Node Pool (its node id).")
    password: SecretStr = Field(SecretStr(""), description="Password of that account (never logged).")
    bridge_port: int = Field(50053, ge=0, lt=65536, description="Port the bridge serves WorkerNodeService on (0: any free port).")
    bridge_bind: str = Field("[::]", description="Address the bridge listens on ([::] falls back to 0.0.0.0).")
    advertise_host: str | None = Field(
        None,
        description="Hostname the bridge registers for the pool to dial; default: localhost for a "
        "local pool, else this host's address on the route to the pool. Never 127.0.0.1.",
    )
    bridge_allowed_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts/CIDRs allowed to call ExecuteTask/StopTaskExecution (comma list; * = any); "
        "default: the Node Pool host, resolved.",
    )
    bridge_secret: SecretStr | None = Field(None, description="When set, pool calls must carry it as metadata x-hivemind-secret.")
    heartbeat_interval: float = Field(
        10.0,
        gt=0,
        le=30,
        description="Seconds between ReportStatus calls (the deployed pool wants one every 30 s at most and "
        "fails a running task whose node is silent for 60 s); a task accepted or ended is reported at once.",
    )
    registration_interval: float = Field(30.0, gt=0, description="Seconds between RegisterWorkerNode calls.")
    relay_interval: float = Field(1.0, gt=0, description="Seconds between relay passes (output, usage, results).")
    cpu_score_per_core: int = Field(100, gt=0, description="Node Pool cpu_score worth one CPU core.")
    gpu_score_per_gpu: int = Field(100, gt=0, description="Node Pool gpu_score worth one GPU.")
    location: str = Field("", description="Location string sent with the registration.")
    nodepool_ca_file: str | None = Field(None, description="PEM CA bundle: when set, the bridge dials the Node Pool over TLS.")
    bridge_tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain): with bridge_tls_key_file, the bridge serves gRPC over TLS only."
    )
    bridge_tls_key_file: str | None = Field(None, description="PEM private key of bridge_tls_cert_file.")

    # --- the WireGuard tunnel to the pool, for a site behind a home router (vpn/, docs/tunnel.md) --
    tunnel: bool = Field(
        False,
        description="Reach the Node Pool through a WireGuard tunnel: join once, bring it up, register the "
        "tunnel address (off: the pool can reach this site directly).",
    )
    tunnel_join_mode: Literal["own", "deployed"] = Field(
        "own",
        description="own (this project's Node Pool: the key pair is made here, only the public key is "
        "sent, the join is authenticated by the site's pool login) or deployed (the deployed network's "
        "unauthenticated join, whose pool generates this site's private key).",
    )
    tunnel_join_url: str = Field(
        "", description="URL of the pool's POST /api/vpn/join (https, or http to a private or loopback address)."
    )
    tunnel_interface: str = Field("hmwg0", description="Name of the tunnel's network interface (1-15 characters).")
    tunnel_state_dir: str = Field(
        "~/.hivemind/tunnel", description="Where the tunnel config and keys are kept (mode 0600) and reused."
    )
    tunnel_client_name: str = Field(
        "",
        description="Name sent with the join (1-20 letters, digits, _ or -; default: from HIVEMIND_USERNAME or the worker id).",
    )
    tunnel_userspace: Literal["auto", "kernel", "userspace"] = Field(
        "auto", description="auto (kernel WireGuard when the kernel has it, else wireguard-go), kernel or userspace."
    )
    tunnel_handshake_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for the first handshake after bringing the tunnel up."
    )
    tunnel_max_handshake_age: float = Field(
        180.0, gt=0, description="A tunnel whose latest handshake is older than this is dead and brought back up."
    )
    tunnel_check_interval: float = Field(10.0, gt=0, description="Seconds between two checks of the tunnel.")
    tunnel_nodepool_address: str = Field(
        "",
        description="host:port of the Node Pool's gRPC server inside the tunnel (e.g. 10.88.0.1:50051): when "
        "set, the bridge talks to the pool through the tunnel once it is up (the join's login still goes to "
        "HIVEMIND_NODEPOOL_ADDRESS); empty: the bridge reaches the pool as without a tunnel.",
    )
    tunnel_metrics_port: int = Field(
        0,
        ge=0,
        lt=65536,
        description="Port on 127.0.0.1 where the bridge serves the tunnel's Prometheus metrics (hivemind_tunnel_*; 0: off).",
    )

    @field_validator(
        "allowed_images", "bridge_allowed_callers", "setup_allowed_hosts", "prefs_gpus", "gpu_devices", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("setup_index_url")
    @classmethod
    def _index_is_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError(f"HIVEMIND_SETUP_INDEX_URL must be an http(s) URL with a host and no credentials: {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _visibility_above_limit(self) -> Settings:
        if self.visibility_timeout <= self.hard_time_limit:
            raise ValueError(
                f"HIVEMIND_VISIBILITY_TIMEOUT ({self.visibility_timeout:.0f}s) must exceed the hard "
                f"time limit ({self.hard_time_limit:.0f}s = HIVEMIND_MAX_TIMEOUT + pull timeout + "
                "HIVEMIND_TIME_LIMIT_MARGIN + HIVEMIND_MAX_FROZEN_SECONDS); "
                "otherwise Redis redelivers tasks that are still running"
            )
        return self

    # --- derived ---------------------------------------------------------------
    @property
    def hard_time_limit(self) -> float:
        """Celery's hard limit: the longest task plus set-up, pull and packing time, plus
        the longest a pause may freeze it (frozen time does not count against its timeout)."""
        return self.max_timeout + self.image_pull_timeout + self.time_limit_margin + self.max_frozen_seconds

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def backend(self) -> str:
        return self.result_backend or self.redis_url

    @property
    def payload_redis(self) -> str:
        return self.payload_redis_url or self.redis_url

    def image_allowed(self, image: str) -> bool:
        return image == self.task_image or image in self.allowed_images


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
