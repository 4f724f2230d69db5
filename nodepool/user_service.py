"""UserService and NodeManagerService: logins, balances, transfers, node registration and heartbeats.

RegisterWorkerNode and ReportStatus carry no token field, so this pool reads
the token from the call's metadata (`authorization: Bearer <token>`) and
requires node_id to equal the token's user name. (The deployed pool checks
neither; sending the metadata to it is harmless.)
"""

from __future__ import annotations

import logging

import grpc

from nodepool import accounts, nodes
from nodepool.auth import AuthError
from nodepool.context import Pool, authenticate, bearer_token
from nodepool.errors import Refused
from proto import nodepool_pb2 as pb
from proto import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger("hivemind.nodepool.users")


class UserService(pb_grpc.UserServiceServicer):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.LoginResponse:
        try:
            identity, token = self._pool.tokens.login(request.username, request.password)
        except AuthError as exc:
            log.info("login refused", extra={"node_id": request.username[:64]})
            return pb.LoginResponse(success=False, message=str(exc))
        log.info("login", extra={"node_id": identity.username})
        return pb.LoginResponse(success=True, message="logged in", token=token)

    def RefreshToken(self, request: pb.RefreshTokenRequest, context: grpc.ServicerContext) -> pb.RefreshTokenResponse:
        try:
            token = self._pool.tokens.refresh(request.old_token)
        except AuthError as exc:
            return pb.RefreshTokenResponse(success=False, message=str(exc))
        return pb.RefreshTokenResponse(success=True, message="token refreshed", new_token=token)

    def GetBalance(self, request: pb.GetBalanceRequest, context: grpc.ServicerContext) -> pb.GetBalanceResponse:
        try:
            identity = authenticate(self._pool, request.token)
            if request.username and request.username != identity.username:
                raise Refused("you may only read your own balance")
            balance = accounts.balance_of(self._pool.store, identity.user_id)
        except (AuthError, Refused) as exc:
            return pb.GetBalanceResponse(success=False, message=str(exc))
        return pb.GetBalanceResponse(success=True, message="ok", balance=balance)

    def Transfer(self, request: pb.TransferRequest, context: grpc.ServicerContext) -> pb.TransferResponse:
        try:
            identity = authenticate(self._pool, request.token)
            left = accounts.transfer(self._pool.store, identity.user_id, request.receiver_username, request.amount)
        except (AuthError, Refused) as exc:
            return pb.TransferResponse(success=False, message=str(exc))
        log.info("transfer of %d CPT to %s", request.amount, request.receiver_username[:64], extra={"node_id": identity.username})
        return pb.TransferResponse(success=True, message=f"sent {request.amount} CPT; your balance is {left}")


class NodeManagerService(pb_grpc.NodeManagerServiceServicer):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def RegisterWorkerNode(self, request: pb.RegisterWorkerNodeRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        registration = nodes.Registration(
            node_id=request.node_id,
            hostname=request.hostname,
            port=request.port,
            cpu_cores=request.cpu_cores,
            memory_gb=request.memory_gb,
            cpu_score=request.cpu_score,
            gpu_score=request.gpu_score,
            gpu_memory_gb=request.gpu_memory_gb,
            location=request.location[:64],
            gpu_name=request.gpu_name[:128],
            docker_status=request.docker_status[:64],
        )
        try:
            identity = authenticate(self._pool, bearer_token(context))
            nodes.register(self._pool.store, identity, registration)
        except (AuthError, Refused) as exc:
            log.info("registration refused: %s", exc, extra={"node_id": request.node_id[:64]})
            return pb.StatusResponse(success=False, message=str(exc))
        log.info("node registered at %s", f"{request.hostname[:64]}:{request.port}", extra={"node_id": request.node_id})
        self._pool.dispatcher.wake()
        return pb.StatusResponse(success=True, message="registered")

    def ReportStatus(self, request: pb.RunningStatusRequest, context: grpc.ServicerContext) -> pb.RunningStatusResponse:
        report = nodes.StatusReport(
            node_id=request.node_id,
            status=request.status,
            cpu_usage=request.cpu_usage,
            memory_usage=request.memory_usage,
            gpu_usage=request.gpu_usage,
            gpu_memory_usage=request.gpu_memory_usage,
            docker_status=request.docker_status,
            running_tasks=request.running_tasks,
        )
        try:
            identity = authenticate(self._pool, bearer_token(context))
            nodes.report_status(self._pool.store, identity, report)
        except (AuthError, Refused) as exc:
            return pb.RunningStatusResponse(success=False, message=str(exc))
        if request.status == nodes.IDLE:
            self._pool.dispatcher.wake()
        return pb.RunningStatusResponse(success=True, message="ok")
