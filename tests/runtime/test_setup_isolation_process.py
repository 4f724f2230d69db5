"""The process runtime's set-up step gets the same isolation as the Docker
runtime's: pip on this machine (the PATH's python3, as a worker would run it)
against a package index served by the test on loopback (tests/setup_index_kit.py)
as the operator's HIVEMIND_SETUP_INDEX_URL.

It has no egress restriction (the process runtime isolates nothing; see
docs/operations.md), so what is checked is what the runtime controls: no pip
configuration or start-up code from the task, wheels only unless allowed.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from hivemind_celery.core.model import TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import workspace
from hivemind_celery.runtime.base import Job
from hivemind_celery.runtime.process import ProcessRuntime
from tests.services_kit import make_zip
from tests.setup_index_kit import LocalIndex

LOOPBACK = "127.0.0.1"
MARKER = "SDIST_BUILD_RAN.json"
PLANTED = "print('INJECTED CODE RAN')\n"
SETUP_DONE = "[hivemind] set-up done"


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def index(markers):
    served = LocalIndex(LOOPBACK, marker_dir=str(markers))
    yield served
    served.close()


def runtime(tmp_path: Path, index: LocalIndex, **changes: object) -> ProcessRuntime:
    return ProcessRuntime(
        Settings(
            worker_id=f"test-setup-{uuid.uuid4().hex[:6]}",
            runtime="process",
            runtime_dir=str(tmp_path / "rt"),
            stop_grace=1,
            setup_index_url=index.url(LOOPBACK),
            setup_allowed_hosts=[],
            **changes,
        )
    )


def make_job(files: dict[str, str], env: dict[str, str] | None = None) -> Job:
    data = make_zip(files)
    manifest = workspace.inspect_zip(data)
    spec = TaskSpec(task_id=f"t-{uuid.uuid4().hex[:10]}", payload="sha256:" + "0" * 64, memory_mb=1024, cpus=1.0, env=env or {})
    return Job(
        spec=spec,
        image="unused",
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=120,
        setup_command=workspace.setup_command(manifest),
    )


def names_in(workspace_tar: bytes | None) -> set[str]:
    assert workspace_tar is not None
    with tarfile.open(fileobj=io.BytesIO(workspace_tar)) as tar:
        return {m.name for m in tar.getmembers()}


def hostile_config(index: LocalIndex) -> str:
    # extra-index-url and find-links: the set-up step's own options set no such thing to override them.
    elsewhere = f"http://{LOOPBACK}:{index.elsewhere.port}"
    return (
        f"[global]\nindex-url = {elsewhere}/simple\nextra-index-url = {elsewhere}/simple\n"
        f"find-links = {elsewhere}/files/\nno-binary = :all:\n"
    )


PLACES = {
    "xdg-config": lambda cfg: {".config/pip/pip.conf": cfg},
    "legacy-home-config": lambda cfg: {".pip/pip.conf": cfg},
    "workspace-root-config": lambda cfg: {"pip.conf": cfg},
    "shadow-pip-package": lambda cfg: {"pip/__init__.py": "", "pip/__main__.py": PLANTED},
    "user-site-code": lambda cfg: {
        ".local/lib/python3.11/site-packages/usercustomize.py": PLANTED,
        ".local/lib/python3.11/site-packages/evil.pth": "import os; " + PLANTED,
    },
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_config_and_code_shipped_in_the_task_are_ignored(tmp_path, index, place: str) -> None:
    files = {"requirements.txt": "hmwheel\n", "main.py": "import hmwheel\n", **PLACES[place](hostile_config(index))}
    result = runtime(tmp_path, index).run(make_job(files))
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    assert f"Looking in indexes: {index.url(LOOPBACK)}" in result.log_tail and "HMWHEEL OK" in result.log_tail
    setup_log = result.log_tail.split(SETUP_DONE)[0]
    assert str(index.elsewhere.port) not in setup_log and "INJECTED CODE RAN" not in setup_log
    assert index.elsewhere.hits == []


def test_pip_variables_in_the_spec_env_are_ignored(tmp_path, index) -> None:
    elsewhere = f"http://{LOOPBACK}:{index.elsewhere.port}/simple"
    env = {
        "PIP_INDEX_URL": elsewhere,
        "PIP_EXTRA_INDEX_URL": elsewhere,
        "PIP_TRUSTED_HOST": LOOPBACK,
        "PIP_CONFIG_FILE": "pip.conf",
        "PIP_NO_BINARY": ":all:",
    }
    files = {"requirements.txt": "hmwheel\n", "main.py": "import hmwheel\n", "pip.conf": hostile_config(index)}
    result = runtime(tmp_path, index).run(make_job(files, env))
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    assert f"Looking in indexes: {index.url(LOOPBACK)}" in result.log_tail
    assert index.elsewhere.hits == []


def test_source_only_package_fails_with_a_reason_and_its_build_never_runs(tmp_path, index, markers) -> None:
    result = runtime(tmp_path, index).run(make_job({"requirements.txt": "hmsdist\n", "main.py": "print('MAIN RAN')\n"}))
    assert result.status is TaskStatus.FAILED
    assert result.reason.startswith(
        "set-up step (pip install -r requirements.txt) failed: 'hmsdist' is published only as source"
    ), result.reason
    assert "HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS is off" in result.reason
    assert "MAIN RAN" not in result.log_tail
    assert not (markers / MARKER).exists()
    assert MARKER not in names_in(result.workspace_tar)


def test_source_builds_when_the_operator_allows_them(tmp_path, index, markers) -> None:
    rt = runtime(tmp_path, index, setup_allow_source_builds=True)
    result = rt.run(make_job({"requirements.txt": "hmsdist\n", "main.py": "import hmsdist\n"}))
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    assert "HMSDIST OK" in result.log_tail
    probe = json.loads((markers / MARKER).read_text())  # the build code ran, as the operator allowed
    assert "direct" in probe  # and, this runtime restricting no egress, it could try the network
    (markers / MARKER).unlink()


def test_a_package_the_index_does_not_have_is_named_as_missing(tmp_path, index) -> None:
    result = runtime(tmp_path, index).run(make_job({"requirements.txt": "hm-not-there>=1\n", "main.py": ""}))
    assert result.status is TaskStatus.FAILED
    assert result.reason == (
        "set-up step (pip install -r requirements.txt) failed: 'hm-not-there>=1' is not on the "
        f"package index {index.url(LOOPBACK)}"
    ), result.reason
