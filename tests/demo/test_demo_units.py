"""The demo's small parts without a site: which Docker daemon DOCKER_HOST names
and what the demo plans about it, and the live table on an 80-column terminal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from hivemind.demo import dockerd
from hivemind.demo.catalog import EXAMPLES, Finished, examples_dir, missing_examples
from hivemind.demo.report import Tracked, progress_table


def test_docker_host_follows_docker_host():
    assert dockerd.docker_host({}).default
    assert dockerd.docker_host({"DOCKER_HOST": "unix:///var/run/docker.sock"}).default
    if os.path.realpath("/var/run") == "/run":
        assert dockerd.docker_host({"DOCKER_HOST": "unix:///run/docker.sock"}).default
    other = dockerd.docker_host({"DOCKER_HOST": "unix:///tmp/x/docker.sock"})
    assert not other.default and other.socket == Path("/tmp/x/docker.sock")
    remote = dockerd.docker_host({"DOCKER_HOST": "tcp://127.0.0.1:1"})
    assert remote.socket is None and not remote.default
    # Two sockets, two daemons: their bridges and exec roots differ.
    assert other.key != dockerd.docker_host({"DOCKER_HOST": "unix:///tmp/y/docker.sock"}).key


def test_a_remote_daemon_that_does_not_answer_is_not_started():
    plan = dockerd.plan_docker(dockerd.docker_host({"DOCKER_HOST": "tcp://127.0.0.1:1"}), ask=False)
    assert plan.action == "none"
    assert "tcp://127.0.0.1:1" in plan.why and "unset DOCKER_HOST" in plan.fix


def test_no_dockerd_installed_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no dockerd
    plan = dockerd.plan_docker(dockerd.docker_host({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}), ask=False)
    assert plan.action == "none"
    assert "not installed" in plan.why and "apt-get install docker.io" in plan.fix


def test_a_socket_file_nobody_serves_is_refused(tmp_path):
    import socket

    path = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody listens: a daemon that died
    assert dockerd.socket_state(path) == "refused"
    assert dockerd.socket_state(tmp_path / "absent.sock") == "absent"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root the demo may start dockerd without asking")
def test_root_may_start_an_installed_dockerd(tmp_path):
    if dockerd.shutil.which("dockerd") is None:
        pytest.skip("dockerd is not installed here")
    plan = dockerd.plan_docker(dockerd.docker_host({"DOCKER_HOST": f"unix://{tmp_path}/d.sock"}), ask=False)
    assert plan.action == "start" and plan.as_root == ()


def test_free_subnet_avoids_addresses_in_use():
    import ipaddress

    import psutil

    chosen = ipaddress.ip_interface(dockerd.free_subnet(0)).network
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == dockerd.socket.AF_INET and addr.netmask:
                assert not chosen.overlaps(ipaddress.ip_interface(f"{addr.address}/{addr.netmask}").network)


def test_the_examples_are_package_data():
    folder = examples_dir()
    assert folder.parent.name == "demo" and folder.parent.parent.name == "hivemind"
    assert missing_examples([e.name for e in EXAMPLES]) is None
    assert "pip install --force-reinstall" in (missing_examples(["no_such_example"]) or "")


def rendered(rows: list[Tracked], width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(progress_table(rows))
    return console.export_text().splitlines()


def test_live_table_fills_every_column_in_80_columns():
    rows = [Tracked(example) for example in EXAMPLES]
    now = time.monotonic()
    running, done, waiting, failed, skipped = rows
    running.submitted_at, running.pool_status = now - 12, "RUNNING"
    running.last_line = "round 3 of 6: 148933 primes below 2000000, a long line that will not fit in 80 columns"
    done.submitted_at, done.pool_status, done.last_line = now - 30, "COMPLETED", "imported tabulate"
    done.finished = Finished("succeeded", 0, 7.4, 1.2, 1 << 20, 3, "")
    waiting.submitted_at, waiting.pool_status = now - 3, "PENDING"
    failed.submitted_at, failed.error = now - 40, "ended FAILED without a result zip"
    skipped.skipped = "no GPU on this machine"
    lines = rendered(rows)
    assert all(len(line) <= 80 for line in lines)
    by_name = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")
    }
    assert by_name["cpu_task"][1:3] == ["RUNNING", "12s"]
    assert by_name["cpu_task"][3].startswith("round 3 of 6") and by_name["cpu_task"][3].endswith("…")
    # A finished task shows its measured duration and keeps its last output line.
    assert by_name["requirements_task"][1:] == ["succeeded", "7s", "imported tabulate"]
    assert by_name["failing_task"][1:3] == ["PENDING", "3s"]
    assert by_name["slow_task"][1:] == ["error", "-", "ended FAILED without a result zip"]
    assert by_name["gpu_task"][1:] == ["skipped", "-", "no GPU on this machine"]
    assert all(cells[2] for cells in by_name.values()), "the time column has an empty cell"
