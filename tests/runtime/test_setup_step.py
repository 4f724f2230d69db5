"""The set-up step's configuration as data, and its proxy and relay as real
programs on this machine: a real Unix socket, real HTTP servers on loopback,
real `python -I -c` processes, no Docker.

What the set-up step does inside real containers and a real worker is in
tests/hostile/test_setup_isolation.py; the process runtime's in
tests/runtime/test_setup_isolation_process.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from hivemind_celery.core.model import TaskSpec
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime import setup_proxy
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.docker_config import (
    LABEL_ROLE,
    PROXY_SOCKET,
    WORKSPACE,
    container_kwargs,
    proxy_kwargs,
)
from hivemind_celery.runtime.index_lookup import project_files
from hivemind_celery.runtime.setup_step import (
    allowed_endpoints,
    explain_failure,
    pip_options,
    setup_env,
)
from tests.services_kit import make_zip
from tests.setup_index_kit import Recorder

PROXY_SOURCE = Path(setup_proxy.__file__).read_text()


def job(env: dict[str, str] | None = None) -> Job:
    data = make_zip({"main.py": "", "requirements.txt": "hmwheel\n"})
    manifest = workspace.inspect_zip(data)
    spec = TaskSpec(task_id=f"t-{uuid.uuid4().hex[:8]}", payload="sha256:" + "0" * 64, env=env or {})
    return Job(
        spec=spec,
        image="img",
        command=["python3", "main.py"],
        workspace_tar=b"",
        timeout=10,
        setup_command=workspace.setup_command(manifest),
    )


# --- configuration as data ------------------------------------------------------------
def test_pip_runs_isolated_binary_only_from_the_operators_index() -> None:
    command = workspace.setup_command(workspace.inspect_zip(make_zip({"main.py": "", "requirements.txt": "six\n"})))
    assert command[:4] == ["python3", "-I", "-m", "pip"] and "--isolated" in command
    options = pip_options(Settings(), "/deps", None, None)
    assert options[:4] == ["--index-url", "https://pypi.org/simple", "--target", "/deps"]
    assert "--only-binary=:all:" in options and "--trusted-host" not in options
    relaxed = pip_options(
        Settings(setup_allow_source_builds=True, setup_index_url="http://10.0.0.5:8080/simple/"),
        "/deps",
        "/ca.pem",
        "http://127.0.0.1:3128",
    )
    assert "--only-binary=:all:" not in relaxed
    assert relaxed[relaxed.index("--index-url") + 1] == "http://10.0.0.5:8080/simple"
    assert relaxed[relaxed.index("--trusted-host") + 1] == "10.0.0.5"  # the operator chose plain HTTP
    assert relaxed[relaxed.index("--cert") + 1] == "/ca.pem"
    assert relaxed[relaxed.index("--proxy") + 1] == "http://127.0.0.1:3128"


def test_setup_env_keeps_home_and_config_out_of_the_workspace() -> None:
    env = setup_env("/opt/hivemind/home", "/opt/hivemind/tmp", "/ca", None)
    assert env["PIP_CONFIG_FILE"] == "/dev/null"  # pip then reads no configuration file at all
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "TMPDIR"):
        assert not env[name].startswith(WORKSPACE), name
    assert "HTTPS_PROXY" not in env and env["PIP_CERT"] == "/ca"


def test_docker_setup_container_has_no_network_and_none_of_the_tasks_variables() -> None:
    the_job = job({"PIP_INDEX_URL": "http://evil/simple", "PIP_TRUSTED_HOST": "evil", "HOME": "/workspace"})
    settings = Settings(worker_id="w")
    setup = container_kwargs(the_job, settings, "setup", "ws", "deps", 2, has_ca=True)
    assert setup["network_mode"] == "none"  # its way out is the proxy, through the relay on loopback
    env = setup["environment"]
    assert "PIP_INDEX_URL" not in env and "PIP_TRUSTED_HOST" not in env and env["HOME"] == "/opt/hivemind/home"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    command = setup["command"]
    assert command[:3] == ["python3", "-I", "-c"] and command[4:7] == ["relay", PROXY_SOCKET, "3128"]
    pip = command[command.index("--") + 1 :]
    assert pip[:4] == ["python3", "-I", "-m", "pip"] and "--only-binary=:all:" in pip and "--proxy" in pip
    opened = container_kwargs(the_job, Settings(worker_id="w", setup_egress="open"), "setup", "ws", "deps", 2)
    assert opened["network_mode"] == "bridge" and opened["command"][:4] == ["python3", "-I", "-m", "pip"]
    closed = container_kwargs(Job(**{**the_job.__dict__, "setup_network": False}), settings, "setup", "ws", "deps", 2)
    assert closed["network_mode"] == "none" and "--proxy" not in closed["command"]


def test_proxy_container_is_hardened_and_carries_the_tasks_labels() -> None:
    the_job = job()
    kwargs = proxy_kwargs(the_job, Settings(worker_id="w"), "deps-vol")
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["read_only"] is True and kwargs["user"] == "1000:1000" and kwargs["network_mode"] == "bridge"
    assert kwargs["labels"][LABEL_ROLE] == "proxy" and kwargs["labels"]["hivemind.task_id"] == the_job.spec.task_id
    config = json.loads(kwargs["command"][-1])
    assert config["allow"] == [["pypi.org", 443], ["files.pythonhosted.org", 443]]


def test_allowed_endpoints_and_index_url_checks() -> None:
    settings = Settings(setup_index_url="https://pkgs.example.org:8443/simple", setup_allowed_hosts="cdn.example.org,[::1]:9000")
    assert allowed_endpoints(settings) == [("pkgs.example.org", 8443), ("cdn.example.org", 443), ("::1", 9000)]
    for bad in ("ftp://pkgs.example.org/simple", "pkgs.example.org/simple", "https://user:token@pkgs/simple"):
        with pytest.raises(ValidationError, match="HIVEMIND_SETUP_INDEX_URL"):
            Settings(setup_index_url=bad)


def test_failure_reasons_name_what_was_refused() -> None:
    settings = Settings(setup_index_url="http://172.17.0.1:9999/simple")
    reason = explain_failure("ERROR: HTTP error 403 while getting ...", settings, ["10.1.2.3:80"])
    assert "10.1.2.3:80" in reason and "may reach only the package index http://172.17.0.1:9999/simple" in reason
    assert explain_failure("ERROR: something pip never says\n", settings) is None
    many = explain_failure("", settings, [f"h{n}.example:443" for n in range(40)])
    assert "h0.example:443" in many and "and 35 more" in many and "h9.example" not in many  # bounded


# --- the proxy and the relay, as real programs -------------------------------------------
@pytest.fixture
def servers():
    index = Recorder({"/simple/": b"INDEX PAGE"})
    elsewhere = Recorder({"/secret": b"SHOULD NOT BE SEEN"})
    yield index, elsewhere
    index.close()
    elsewhere.close()


@pytest.fixture
def proxy(tmp_path, servers):
    index, _ = servers
    sock = tmp_path / "sock"
    config = {"socket": str(sock), "allow": [["127.0.0.1", index.port]]}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", PROXY_SOURCE, "proxy", json.dumps(config)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "LISTENING"
    yield proc, sock
    proc.terminate()
    proc.wait(10)


def _ask(sock: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(sock))
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_proxy_forwards_only_to_the_index(proxy, servers) -> None:
    proc, sock = proxy
    index, elsewhere = servers
    ok = _ask(sock, f"GET http://127.0.0.1:{index.port}/simple/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.0 200") and ok.endswith(b"INDEX PAGE") and index.hits == ["/simple/"]
    tunnel = _ask(sock, f"CONNECT 127.0.0.1:{index.port} HTTP/1.1\r\n\r\nGET /simple/ HTTP/1.0\r\n\r\n".encode())
    assert tunnel.startswith(b"HTTP/1.1 200 Connection established") and tunnel.endswith(b"INDEX PAGE")
    for request in (
        f"GET http://127.0.0.1:{elsewhere.port}/secret HTTP/1.1\r\n\r\n",
        f"CONNECT 127.0.0.1:{elsewhere.port} HTTP/1.1\r\n\r\n",
        f"GET http://localhost:{index.port}/simple/ HTTP/1.1\r\n\r\n",
    ):  # another name for the same host
        assert _ask(sock, request.encode()).startswith(b"HTTP/1.1 403"), request
    assert _ask(sock, f"POST http://127.0.0.1:{index.port}/ HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 405")
    assert _ask(sock, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 4")
    assert elsewhere.hits == []
    proc.terminate()
    printed = proc.communicate(timeout=10)[0]
    assert f"DENIED 127.0.0.1:{elsewhere.port}" in printed and f"DENIED localhost:{index.port}" in printed


def test_relay_carries_a_child_to_the_proxy_and_returns_its_exit_code(proxy, servers) -> None:
    _, sock = proxy
    index, elsewhere = servers
    port = _free_port()
    child = (
        "import sys, urllib.request as u\n"
        f"o = u.build_opener(u.ProxyHandler({{'http': 'http://127.0.0.1:{port}'}}))\n"
        f"print(o.open('http://127.0.0.1:{index.port}/simple/', timeout=10).read().decode())\n"
        f"try: o.open('http://127.0.0.1:{elsewhere.port}/secret', timeout=10)\n"
        "except Exception as exc: print('REFUSED', exc)\n"
        "sys.exit(7)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", PROXY_SOURCE, "relay", str(sock), str(port), "--", sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    assert "INDEX PAGE" in done.stdout and "REFUSED HTTP Error 403" in done.stdout
    assert elsewhere.hits == []


def test_relay_without_a_proxy_gives_up_and_the_child_sees_it(tmp_path) -> None:
    port = _free_port()
    child = (
        "import urllib.request as u, sys\n"
        f"o = u.build_opener(u.ProxyHandler({{'http': 'http://127.0.0.1:{port}'}}))\n"
        "try: o.open('http://127.0.0.1:1/', timeout=30)\n"
        "except Exception as exc: print('FAILED', type(exc).__name__); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", PROXY_SOURCE, "relay", str(tmp_path / "none"), str(port), "--", sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and "FAILED" in done.stdout, (done.stdout, done.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- what the index holds, asked by the worker ------------------------------------------
def test_index_lookup_tells_wheels_sources_and_missing_projects_apart() -> None:
    from tests.setup_index_kit import LocalIndex

    index = LocalIndex("127.0.0.1")
    try:
        settings = Settings(setup_index_url=index.url("127.0.0.1"))
        assert project_files(settings, "HMWheel==1.0").wheels == ("hmwheel-1.0-py3-none-any.whl",)
        assert project_files(settings, "hmsdist").sources == ("hmsdist-1.0.tar.gz",)
        missing = project_files(settings, "hm-not-there")
        assert missing is not None and missing.wheels == missing.sources == ()
        assert "/simple/hmwheel/" in index.index.hits  # the canonical name, not the requirement's spelling
    finally:
        index.close()
    assert project_files(Settings(setup_index_url=f"http://127.0.0.1:{_free_port()}/simple"), "hmwheel") is None
