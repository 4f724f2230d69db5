"""How the tunnel starts wireguard-go (vpn.link.start_bound): real processes, no tunnel.

The tunnel's wireguard-go must die with the bridge that started it, and it must start
in a process where gRPC is busy (the bridge's), which a preexec_fn could not promise:
one start in about a hundred died in the child before exec (grpc/grpc#43055)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc
import psutil
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vpn.link import start_bound

STARTS = 300


def test_starts_never_die_before_exec_while_grpc_is_busy() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    failed: list[str] = []
    try:
        for start in range(STARTS):
            if start % 10 == 0:  # keep gRPC's poller busy between the starts
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            with tempfile.TemporaryFile() as errors:
                code = start_bound(["true"], stderr=errors).wait(30)
                if code != 0:
                    errors.seek(0)
                    failed.append(f"exit {code}: {errors.read()[-200:]!r}")
    finally:
        channel.close()
        server.stop(None)
    assert failed == [], f"{len(failed)} of {STARTS} starts died: {failed[:3]}"


def test_the_program_ends_when_its_starter_is_killed() -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from vpn.link import start_bound\n"
            "child = start_bound(['sleep', '300'])\n"
            "print(child.pid, flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    try:
        sleeper = psutil.Process(pid)
        deadline = time.monotonic() + 10
        while sleeper.name() != "sleep" and time.monotonic() < deadline:  # the launcher has exec'd
            time.sleep(0.02)
        assert sleeper.name() == "sleep"
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        _gone, alive = psutil.wait_procs([sleeper], timeout=10)
        assert alive == [], "the program outlived the process that started it"
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
        if starter.poll() is None:
            starter.kill()


def test_a_missing_program_says_so_in_one_line() -> None:
    with tempfile.TemporaryFile() as errors:
        assert start_bound(["/nonexistent/wireguard-go"], stderr=errors).wait(30) == 127
        errors.seek(0)
        assert errors.read() == b"cannot run /nonexistent/wireguard-go: No such file or directory\n"
