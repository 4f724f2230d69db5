"""Node Pool configuration, read from HIVEMIND_NODEPOOL_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hivemind_celery.core import MiB


class NodePoolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIVEMIND_NODEPOOL_", extra="ignore")

    host: str = Field("[::]", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    db: Path = Field(Path(".hivemind/nodepool.db"), description="SQLite database file.")
    secret: SecretStr | None = Field(
        None,
        description="HS256 key for user tokens; when unset one is generated once and kept in the database.",
    )
    token_lifetime_s: float = Field(3600.0, gt=0, description="Seconds a login token is valid.")
    max_task_bytes: int = Field(100 * MiB, gt=0, description="Largest task zip UploadTask accepts.")
    max_result_bytes: int = Field(100 * MiB, gt=0, description="Largest result zip TaskResultUpload accepts.")
    output_keep_bytes: int = Field(
        64 * 1024, gt=0, description="How much of a task's latest output is kept (the deployed pool keeps 10 KB)."
    )
    dispatch_interval_s: float = Field(2.0, gt=0, description="Seconds between dispatch rounds.")
    node_fresh_s: float = Field(180.0, gt=0, description="A node is dispatched to only if heard from this recently.")
    silent_fail_s: float = Field(60.0, gt=0, description="A RUNNING task fails when its node is silent this long.")
    busy_silent_fail_s: float = Field(120.0, gt=0, description="The same while the node's status contains Running or Executing.")
    node_backoff_s: float = Field(
        30.0,
        ge=0,
        description="A node that refused a task gets none for this long or until it next reports "
        "Idle; one that could not be reached, for this long.",
    )
    execute_deadline_base_s: float = Field(30.0, gt=0, description="ExecuteTask deadline before the size allowance.")
    execute_deadline_max_s: float = Field(120.0, gt=0, description="Longest ExecuteTask deadline.")
    execute_bytes_per_s: float = Field(
        1.0 * MiB, gt=0, description="Upload speed assumed for the size-based part of the ExecuteTask deadline."
    )
    stop_deadline_s: float = Field(50.0, gt=0, description="StopTaskExecution deadline.")
    worker_secret: SecretStr | None = Field(
        None,
        description="When set, sent to workers as gRPC metadata `x-hivemind-secret` on ExecuteTask and StopTaskExecution.",
    )
    refuse_loopback_hosts: bool = Field(
        False,
        description="Refuse to dispatch to nodes registered as 127.0.0.1 or empty, like the deployed pool "
        "(off: this pool is also run on one machine).",
    )
    max_workers: int = Field(16, gt=0, description="Threads serving gRPC calls.")
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain): with tls_key_file, the pool serves gRPC over TLS only."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    worker_ca_file: Path | None = Field(
        None, description="PEM CA bundle: when set, the pool dials workers (bridges) over TLS, trusting these CAs."
    )

    # --- the WireGuard hub, for sites behind a home router (nodepool/vpn_hub.py, docs/tunnel.md) --
    vpn: bool = Field(False, description="Run the WireGuard hub and serve POST /api/vpn/join (needs CAP_NET_ADMIN).")
    vpn_network: str = Field("10.88.0.0/24", description="The VPN network; the pool is its first address.")
    vpn_interface: str = Field("hmpool0", description="Name of the hub's WireGuard interface.")
    vpn_listen_port: int = Field(51820, gt=0, le=65535, description="UDP port the hub listens on.")
    vpn_endpoint: str = Field("", description="host:port of that UDP port as the sites reach it (required with vpn).")
    vpn_userspace: Literal["auto", "kernel", "userspace"] = Field(
        "auto", description="auto (kernel WireGuard when the kernel has it, else wireguard-go), kernel or userspace."
    )
    vpn_api_host: str = Field("0.0.0.0", description="Address the join API (HTTP) listens on.")
    vpn_api_port: int = Field(8088, ge=0, le=65535, description="Port of the join API (0: any free port).")
    vpn_sweep_s: float = Field(10.0, gt=0, description="Seconds between sweeps dropping peers of removed accounts.")

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: the largest zip plus room for the other fields."""
        return max(self.max_task_bytes, self.max_result_bytes) + MiB
