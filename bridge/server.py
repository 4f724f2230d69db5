"""The bridge as one object: `Bridge(settings).start()` serves
WorkerNodeService (with health and reflection), logs in to the Node Pool,
heartbeats, and relays results; `.stop()` ends it all. Tests start it
in-process; `python -m bridge` runs it until a signal.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent import futures

import grpc
import redis
from celery import Celery
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bridge.callers import CallerGuard
from bridge.config import BridgeConfig
from bridge.heartbeat import Heartbeat
from bridge.outbox import Outbox
from bridge.parts import BridgeParts, SiteRegistry
from bridge.relay import Relay
from bridge.servicer import WorkerNodeServicer
from bridge.session import MESSAGE_MARGIN, Session, open_channel
from bridge.tunnel import LOOPBACK, BridgeTunnel, start_tunnel
from hivemind_celery.client import create_client
from hivemind_celery.core import Settings, get_settings, payload_redis
from hivemind_celery.payloads import PayloadStore
from hivemind_celery.site import Registry
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkerNodeService"].full_name
MAX_CONCURRENT_INTAKES = 8  # each may hold a task zip of up to the payload limit


def server_credentials(cert_file: str | None, key_file: str | None) -> grpc.ServerCredentials | None:
    """TLS credentials from HIVEMIND_BRIDGE_TLS_CERT_FILE/KEY_FILE, or None (plaintext)."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ValueError("set both HIVEMIND_BRIDGE_TLS_CERT_FILE and HIVEMIND_BRIDGE_TLS_KEY_FILE, or neither")
    with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
        return grpc.ssl_server_credentials([(key.read(), cert.read())])


class Bridge:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: SiteRegistry | None = None,
        celery: Celery | None = None,
        redis_client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.config = BridgeConfig.from_settings(self.settings)
        # Payloads, output streams, usage and stop flags share the payload Redis
        # with the workers; the outbox lives there too.
        self.redis = redis_client or payload_redis(self.settings)
        self.registry: SiteRegistry = registry if registry is not None else Registry(self.redis)
        self._own_celery = celery is None
        self.celery = celery or create_client(self.settings)
        self.payloads = PayloadStore(self.redis, self.settings)
        self.outbox = Outbox(self.redis, self.config.node_id)
        self.parts = BridgeParts(
            settings=self.settings,
            config=self.config,
            redis=self.redis,
            celery=self.celery,
            registry=self.registry,
            payloads=self.payloads,
            outbox=self.outbox,
        )
        self.port = 0
        self._server: grpc.Server | None = None
        self._channel: grpc.Channel | None = None
        self._health = health.HealthServicer()
        self.session: Session | None = None
        self.heartbeat: Heartbeat | None = None
        self.relay: Relay | None = None
        self._servicer: WorkerNodeServicer | None = None
        self._stopped = threading.Event()
        self.tunnel: BridgeTunnel | None = None  # HIVEMIND_TUNNEL: serving on a WireGuard tunnel

    def start(self) -> Bridge:
        if self.settings.tunnel:
            self.tunnel = start_tunnel(self)  # sets settings and config to the tunnel's address
            self.parts = dataclasses.replace(self.parts, settings=self.settings, config=self.config)
        self._server = self._serve()
        self._channel = open_channel(self.settings)
        self.session = Session(self.settings, self._channel)
        self.heartbeat = Heartbeat(self.parts, self.session, self.port)
        self.relay = Relay(self.parts, self.session)
        self.relay.on_freed = self.heartbeat.wake
        assert self._servicer is not None
        relay, heartbeat = self.relay, self.heartbeat

        def accepted() -> None:  # the pool hears of the room taken; the relay starts following the task
            heartbeat.wake()
            relay.wake()

        self._servicer.on_accepted = accepted
        self.relay.start()
        self.heartbeat.start()
        if self.tunnel is not None:
            self.tunnel.on_address_change = self._readdress
            self.tunnel.start()
        log.info(
            "bridge serving on port %d (%s) for Node Pool %s, advertised as %s",
            self.port,
            "TLS" if self.settings.bridge_tls_cert_file else "plaintext",
            self.settings.nodepool_address,
            self.config.advertise_host,
            extra={"node_id": self.config.node_id},
        )
        return self

    def _serve(self) -> grpc.Server:
        limit = self.settings.payload_max_bytes + MESSAGE_MARGIN
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_INTAKES + 4, thread_name_prefix="bridge-rpc"),
            interceptors=[CallerGuard(self.config)],
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            maximum_concurrent_rpcs=MAX_CONCURRENT_INTAKES * 4,
        )
        servicer = WorkerNodeServicer(self.parts)
        self._servicer = servicer
        pb_grpc.add_WorkerNodeServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.port = self._bind(server)
        server.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return server

    def _bind(self, server: grpc.Server) -> int:
        bind, port = self.settings.bridge_bind, self.settings.bridge_port
        credentials = server_credentials(self.settings.bridge_tls_cert_file, self.settings.bridge_tls_key_file)

        def add(address: str) -> int:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)

        try:
            bound = add(f"{bind}:{port}")
            if self.tunnel is not None:  # on the tunnel: its address, and loopback for the site itself
                add(f"{LOOPBACK}:{bound}")
            return bound
        except RuntimeError:
            if bind != "[::]":
                raise
            # No IPv6 on this host (common in containers): IPv4 only.
            log.info("cannot bind [::]; binding 0.0.0.0", extra={"node_id": self.config.node_id})
            return add(f"0.0.0.0:{port}")

    def stop(self, grace: float = 5.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
        for part in (self.heartbeat, self.relay):
            if part is not None:
                part.stop()
        if self.tunnel is not None:
            self.tunnel.stop()
        if self._channel is not None:
            self._channel.close()
        if self._own_celery:
            self.celery.close()
        log.info("bridge stopped", extra={"node_id": self.config.node_id})

    def _readdress(self, address: str) -> None:
        """The tunnel came back with another address: serve and register there."""
        assert self.tunnel is not None and self.heartbeat is not None
        self.settings = self.tunnel.bridge_settings(self.settings).model_copy(update={"bridge_port": self.port})
        self.config = BridgeConfig.from_settings(self.settings)
        self.parts = dataclasses.replace(self.parts, settings=self.settings, config=self.config)
        old = self._server
        self._server = self._serve()
        if old is not None:
            old.stop(5)
        assert self._servicer is not None
        self._servicer.on_accepted = self.heartbeat.wake
        self.heartbeat.readdress(self.config)
        log.info("bridge now serves on %s:%d", address, self.port, extra={"node_id": self.config.node_id})

    def wait(self) -> None:
        """Block until stop() (from a signal handler or another thread)."""
        self._stopped.wait()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
