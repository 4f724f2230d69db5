"""docker-compose.yml: valid for the compose tool, and built the way the site needs it
(the services, the gpu profile, Flower's auth required, docker.sock only on the workers,
healthchecks, named volumes, every variable in .env.example). Booting it for real is
`make compose-smoke` (scripts/compose-smoke.sh): minutes, so not part of this suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.console.console_kit import console_children, start_held, stop_console
from tests.services_kit import ROOT, missing

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"redis", "nodepool", "bridge", "worker-cpu", "worker-gpu", "flower", "console"}
WORKERS = {"worker-cpu": "cpu", "worker-gpu": "gpu"}
REQUIRED = {
    "DOCKER_GID": "106",
    "HIVEMIND_USERNAME": "site1",
    "HIVEMIND_PASSWORD": "pw-for-the-test",
    "FLOWER_BASIC_AUTH": "admin:pw-for-the-test",
    "HIVEMIND_CONSOLE_PASSWORD": "pw-for-the-test",
}
SOCKET = "/var/run/docker.sock"
# Host paths a service may mount: only the workers, only these (see the compose file).
WORKER_HOST_MOUNTS = {
    f"{SOCKET}:{SOCKET}",
    "/sys/fs/cgroup:/sys/fs/cgroup:ro",
    "/var/lib/docker/volumes:/var/lib/docker/volumes:ro",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def compose_variables() -> dict[str, str]:
    """Every ${VAR...} the compose file reads -> the text after the name (default or error)."""
    return {m.group(1): m.group(2) for m in re.finditer(r"\$\{([A-Z][A-Z0-9_]*)([^}]*)\}", COMPOSE_FILE.read_text())}


def env_example_variables() -> set[str]:
    return {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z][A-Z0-9_]*=", line)}


def command_text(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


# -- the compose tool itself ------------------------------------------------


def compose_tool() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    missing("docker-compose is not installed (apt-get install docker-compose)")
    raise AssertionError("unreachable")


def run_config(env: dict[str, str], tmp_path, *extra: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED and not k.startswith("HIVEMIND_")}
    # An empty env file, so a developer's .env never decides the outcome.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [*compose_tool(), "--env-file", str(empty), "-f", str(COMPOSE_FILE), *extra, "config", "-q"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.docker
@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]], ids=["default", "gpu-profile"])
def test_the_compose_tool_accepts_the_file(profile, tmp_path):
    done = run_config(REQUIRED, tmp_path, *profile)
    assert done.returncode == 0, done.stderr


@pytest.mark.docker
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_the_compose_tool_refuses_to_start_without_a_required_variable(name, tmp_path):
    env = {k: v for k, v in REQUIRED.items() if k != name}
    done = run_config(env, tmp_path)
    assert done.returncode != 0
    assert name in done.stderr


# -- the file's structure ---------------------------------------------------


def test_the_site_services(services):
    assert set(services) == SERVICES


def test_workers_run_celery_on_their_queue(services):
    for name, queue in WORKERS.items():
        assert command_text(services[name]).startswith(f"celery -A hivemind_celery worker -Q {queue}")
    assert command_text(services["flower"]).startswith("celery -A hivemind_celery flower")


def test_only_the_gpu_worker_is_in_the_gpu_profile_and_reserves_nvidia_gpus(services):
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert [name for name, s in services.items() if "profiles" in s] == ["worker-gpu"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in services["worker-cpu"]


@pytest.mark.docker
def test_the_gpu_profile_passes_the_owners_choice_of_gpus(tmp_path):
    env = {**REQUIRED, "HIVEMIND_GPU_DEVICES": "1,GPU-3333dddd", "HIVEMIND_GPU_SHARE": "2"}
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED and not k.startswith("HIVEMIND_")}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run(
        [*compose_tool(), "--env-file", str(empty), "-f", str(COMPOSE_FILE), "--profile", "gpu", "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    worker_env = yaml.safe_load(done.stdout)["services"]["worker-gpu"]["environment"]
    assert (worker_env["HIVEMIND_GPU_DEVICES"], str(worker_env["HIVEMIND_GPU_SHARE"])) == ("1,GPU-3333dddd", "2")


def test_flower_requires_basic_auth_from_the_environment(services):
    assert compose_variables()["FLOWER_BASIC_AUTH"].startswith(":?")
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_the_console_requires_a_password_from_the_environment(services):
    console = services["console"]
    assert command_text(console).startswith("hivemind console --host 0.0.0.0")
    assert compose_variables()["HIVEMIND_CONSOLE_PASSWORD"].startswith(":?")
    assert console["environment"]["HIVEMIND_CONSOLE_PASSWORD"].startswith("${HIVEMIND_CONSOLE_PASSWORD:?")


@pytest.mark.redis
def test_the_console_health_check_sees_the_held_port_without_starting_the_console(services, redis_url, tmp_path):
    """The console's check run for real against `hivemind console --host 0.0.0.0` (as the
    container runs it) on a free port put in place of 5001: healthy while the activator holds
    the port, and it never connects (no console is started by it); unhealthy once stopped."""
    check = services["console"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and f"{5001:04X}" in check[1]
    assert "5001" in command_text(services["console"])
    console = start_held(redis_url, tmp_path, "--host", "0.0.0.0", HIVEMIND_CONSOLE_PASSWORD="pw-for-the-test")
    port = int(console.url.rsplit(":", 1)[1])
    script = check[1].replace(f":{5001:04X} ", f":{port:04X} ")

    def healthy() -> bool:
        return subprocess.run(["sh", "-c", script], timeout=10).returncode == 0

    try:
        assert healthy()
        assert console_children(console) == [], "the check connected: it started the console"
    finally:
        stop_console(console)
    assert not healthy()


def test_published_ports_are_bound_to_loopback(services):
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports, "the Node Pool and Flower are published"
    assert all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_docker_socket_and_host_paths_only_on_the_workers(services):
    for name, service in services.items():
        host_mounts = {v for v in service.get("volumes", []) if v.startswith("/")}
        if name in WORKERS:
            assert f"{SOCKET}:{SOCKET}" in host_mounts
            assert host_mounts <= WORKER_HOST_MOUNTS
            assert service["group_add"] == ["${DOCKER_GID:?" + compose_variables()["DOCKER_GID"][2:] + "}"]
        else:
            assert host_mounts == set(), f"{name} mounts host paths: {host_mounts}"


def test_every_service_has_a_healthcheck(services):
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_state_lives_in_named_volumes(compose, services):
    declared = set(compose["volumes"])
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith("/")}
    assert used == declared == {"redis-data", "nodepool-data", "flower-data", "console-data"}
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert any(v.startswith("nodepool-data:") for v in services["nodepool"]["volumes"])


def test_redis_keeps_an_append_only_file(services):
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_every_compose_variable_is_in_env_example_and_nothing_else():
    assert set(compose_variables()) == env_example_variables()


def test_a_variable_scan_finds_what_it_should():
    # The scan above must see both forms the file uses (with a default and required).
    found = compose_variables()
    assert found["HIVEMIND_SITE_IMAGE"] == ":-hivemind-site:latest"
    assert found["HIVEMIND_PASSWORD"].startswith(":?")


# -- the tunnel override (docker-compose.tunnel.yml, docs/tunnel.md) --------------

TUNNEL_FILE = ROOT / "docker-compose.tunnel.yml"


@pytest.mark.docker
def test_the_tunnel_override_is_accepted_and_needs_its_join_url(tmp_path):
    ok = run_config(
        {**REQUIRED, "HIVEMIND_TUNNEL_JOIN_URL": "https://pool.example/api/vpn/join"}, tmp_path, "-f", str(TUNNEL_FILE)
    )
    assert ok.returncode == 0, ok.stderr
    missing = run_config(REQUIRED, tmp_path, "-f", str(TUNNEL_FILE))
    assert missing.returncode != 0 and "HIVEMIND_TUNNEL_JOIN_URL" in missing.stderr


def test_only_the_bridge_gets_net_admin_and_the_tun_device_and_only_with_the_override(services):
    tunnel = yaml.safe_load(TUNNEL_FILE.read_text())["services"]
    assert set(tunnel) == {"bridge"}
    bridge = tunnel["bridge"]
    assert bridge["cap_add"] == ["NET_ADMIN"] and bridge["devices"] == ["/dev/net/tun:/dev/net/tun"]
    assert bridge["environment"]["HIVEMIND_TUNNEL"] == "1"
    for name, service in services.items():
        assert "cap_add" not in service and "devices" not in service, name
        assert "HIVEMIND_TUNNEL" not in (service.get("environment") or {}), name
