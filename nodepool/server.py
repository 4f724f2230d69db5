"""Assemble the pool (store, tokens, dispatcher, services) and serve it over gRPC."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hivemind_celery.core import RewardPolicy
from nodepool.auth import TokenAuthority, token_secret
from nodepool.context import Pool
from nodepool.dispatcher import Dispatcher
from nodepool.settings import NodePoolSettings
from nodepool.store import Store
from nodepool.task_service import MasterNodeService, WorkerNodeService
from nodepool.user_service import NodeManagerService, UserService
from nodepool.vpn_api import JoinServer
from nodepool.vpn_hub import VpnHub
from nodepool.worker_client import WorkerClient
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger("hivemind.nodepool")


@dataclass
class RunningPool:
    pool: Pool
    server: grpc.Server
    port: int
    hub: VpnHub | None = None
    join_api: JoinServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        if self.join_api is not None:
            self.join_api.stop()
        self.server.stop(grace).wait()
        self.pool.dispatcher.stop()
        if self.hub is not None:
            self.hub.stop()
        self.pool.store.close()


def build_pool(settings: NodePoolSettings, policy: RewardPolicy | None = None) -> Pool:
    store = Store(settings.db)
    configured = settings.secret.get_secret_value() if settings.secret else None
    tokens = TokenAuthority(store, token_secret(store, configured), settings.token_lifetime_s)
    dispatcher = Dispatcher(store, settings, WorkerClient(settings))
    return Pool(settings, store, tokens, dispatcher, policy or RewardPolicy.from_settings())


def server_credentials(settings: NodePoolSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from tls_cert_file/tls_key_file, or None (plaintext)."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("set both HIVEMIND_NODEPOOL_TLS_CERT_FILE and HIVEMIND_NODEPOOL_TLS_KEY_FILE, or neither")
    return grpc.ssl_server_credentials([(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())])


def start(settings: NodePoolSettings, policy: RewardPolicy | None = None) -> RunningPool:
    """Start serving in background threads; the caller stops it with `.stop()`."""
    pool = build_pool(settings, policy)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.max_workers), options=options)
    pb_grpc.add_UserServiceServicer_to_server(UserService(pool), server)
    pb_grpc.add_NodeManagerServiceServicer_to_server(NodeManagerService(pool), server)
    pb_grpc.add_MasterNodeServiceServicer_to_server(MasterNodeService(pool), server)
    pb_grpc.add_WorkerNodeServiceServicer_to_server(WorkerNodeService(pool), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = server_credentials(settings)
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        pool.store.close()
        raise RuntimeError(f"cannot bind the Node Pool to {settings.host}:{settings.port}")
    try:
        hub, join_api = start_vpn(pool) if settings.vpn else (None, None)
    except BaseException:
        pool.store.close()
        raise
    server.start()
    pool.dispatcher.start()
    log.info(
        "Node Pool serving on %s:%d (%s), database %s", settings.host, port, "TLS" if credentials else "plaintext", settings.db
    )
    return RunningPool(pool, server, port, hub, join_api)


def start_vpn(pool: Pool) -> tuple[VpnHub, JoinServer]:
    """The WireGuard hub and its join API; nodes with a peer are dialled at their tunnel address."""
    hub = VpnHub(pool.store, pool.settings).start()
    try:
        join_api = JoinServer(hub, pool.tokens, pool.settings.vpn_api_host, pool.settings.vpn_api_port).start()
    except BaseException:
        hub.stop()
        raise
    pool.dispatcher.address_of = hub.address_of
    return hub, join_api


def serve(settings: NodePoolSettings | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    running = start(settings or NodePoolSettings())
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    log.info("Node Pool stopping")
    running.stop()
