"""The requirements set-up step is no way out of the sandbox: real Celery
workers, real dockerd, and a package index served by this test (see
tests/setup_index_kit.py) as the operator's HIVEMIND_SETUP_INDEX_URL.

- pip configuration a task ships (each place pip looks for it, and PIP_* in
  the spec's env) and code it plants where Python would run it at start-up
  are ignored: the install comes from the operator's index;
- wheels only by default: a package published only as source fails the task
  with a reason naming it, and its build code never runs; with
  HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS it builds;
- egress: the set-up container has no network; its proxy lets pip reach only
  the index, so a wheel linked on another host is refused (and that host
  never hears from it), and build code that tries to get out cannot.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest

from hivemind_celery.core.model import TASK_NAME, TaskOutcome, TaskSpec, TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.task.outcomes import celery_outcome
from tests.services_kit import docker_leftovers, make_zip
from tests.setup_index_kit import DOCKER_HOST, LocalIndex

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

MARKER = "SDIST_BUILD_RAN.json"
PLANTED = "print('INJECTED CODE RAN')\n"  # in the set-up step it would run with pip; the main step is the task's own
SETUP_DONE = "[hivemind] set-up done"


@pytest.fixture(scope="module")
def index():
    served = LocalIndex(DOCKER_HOST)
    yield served
    served.close()


def _index_env(index: LocalIndex, **extra: str) -> dict[str, str]:
    return {"HIVEMIND_SETUP_INDEX_URL": index.url(), "HIVEMIND_SETUP_ALLOWED_HOSTS": "", **extra}


@pytest.fixture(scope="module")
def worker(start_worker, index):
    return start_worker("cpu", **_index_env(index))


@pytest.fixture(scope="module")
def source_worker(start_worker, index):
    # The second queue the app defines; nothing here needs a GPU.
    return start_worker("gpu", concurrency=1, **_index_env(index, HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS="true"))


def run(celery_app, store, files: dict[str, str], queue: str = "cpu", **spec_fields) -> TaskOutcome:
    spec = TaskSpec(task_id=f"s-{uuid.uuid4().hex[:10]}", payload=store.put(make_zip(files)), memory_mb=256, **spec_fields)
    result = celery_app.send_task(TASK_NAME, args=[spec.model_dump(mode="json")], task_id=spec.task_id, queue=queue)
    return celery_outcome(result, 240)


def result_files(store, outcome: TaskOutcome) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(store.get(outcome.result_ref))) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}


def hostile_config(index: LocalIndex) -> str:
    elsewhere = f"{DOCKER_HOST}:{index.elsewhere.port}"
    # extra-index-url and find-links: the set-up step's own options set no such thing to override them.
    return (
        f"[global]\nindex-url = http://{elsewhere}/simple\nextra-index-url = http://{elsewhere}/simple\n"
        f"find-links = http://{elsewhere}/files/\ntrusted-host = {DOCKER_HOST}\n"
        "no-binary = :all:\n[install]\nindex-url = http://127.0.0.1:9/simple\n"
    )


# Each place pip (or Python, before pip runs) would read something from: the
# task's files, then the spec's environment.
PLACES = {
    "xdg-config": lambda cfg: {".config/pip/pip.conf": cfg},
    "legacy-home-config": lambda cfg: {".pip/pip.conf": cfg},
    "workspace-root-config": lambda cfg: {"pip.conf": cfg, "pip.ini": cfg},
    "shadow-pip-package": lambda cfg: {"pip/__init__.py": "", "pip/__main__.py": PLANTED},
    "user-site-code": lambda cfg: {
        ".local/lib/python3.11/site-packages/usercustomize.py": PLANTED,
        ".local/lib/python3.11/site-packages/evil.pth": "import os; " + PLANTED,
    },
    "sitecustomize-in-workspace": lambda cfg: {"sitecustomize.py": PLANTED},
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_config_and_code_shipped_in_the_task_are_ignored(worker, celery_app, store, index, place: str) -> None:
    files = {"requirements.txt": "hmwheel\n", "main.py": "import hmwheel\n", **PLACES[place](hostile_config(index))}
    outcome = run(celery_app, store, files)
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, outcome.log_tail)
    assert f"Looking in indexes: {index.url()}" in outcome.log_tail and "HMWHEEL OK" in outcome.log_tail
    assert str(index.elsewhere.port) not in outcome.log_tail and "127.0.0.1:9" not in outcome.log_tail
    assert SETUP_DONE in outcome.log_tail
    assert "INJECTED CODE RAN" not in outcome.log_tail.split(SETUP_DONE)[0]
    assert index.elsewhere.hits == []


def test_pip_variables_in_the_spec_env_are_ignored(worker, celery_app, store, index) -> None:
    elsewhere = f"http://{DOCKER_HOST}:{index.elsewhere.port}/simple"
    env = {
        "PIP_INDEX_URL": elsewhere,
        "PIP_EXTRA_INDEX_URL": elsewhere,
        "PIP_TRUSTED_HOST": DOCKER_HOST,
        "PIP_CONFIG_FILE": "/workspace/pip.conf",
        "PIP_NO_BINARY": ":all:",
        "HOME": "/workspace",
        "PYTHONPATH": "/workspace",
        "PYTHONSTARTUP": "/workspace/sitecustomize.py",
    }
    files = {
        "requirements.txt": "hmwheel\n",
        "main.py": "import hmwheel\n",
        "pip.conf": hostile_config(index),
        "sitecustomize.py": PLANTED,
    }
    outcome = run(celery_app, store, files, env=env)
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, outcome.log_tail)
    assert f"Looking in indexes: {index.url()}" in outcome.log_tail
    assert str(index.elsewhere.port) not in outcome.log_tail
    assert "INJECTED CODE RAN" not in outcome.log_tail.split(SETUP_DONE)[0]
    # The main step does get the task's env (PYTHONPATH=/workspace runs sitecustomize there: its own code);
    # the set-up step did not, so pip read no configuration and found the operator's index.
    assert index.elsewhere.hits == []


def test_source_only_package_fails_with_a_reason_and_its_build_never_runs(
    worker, celery_app, store, index, docker_client
) -> None:
    outcome = run(celery_app, store, {"requirements.txt": "hmwheel\nhmsdist\n", "main.py": "print('MAIN RAN')\n"})
    assert outcome.status is TaskStatus.FAILED
    assert outcome.reason.startswith(
        "set-up step (pip install -r requirements.txt) failed: 'hmsdist' is published "
        f"only as source on the package index {index.url()} (hmsdist-1.0.tar.gz)"
    ), outcome.reason
    assert "HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS is off" in outcome.reason
    assert "MAIN RAN" not in outcome.log_tail
    assert MARKER not in result_files(store, outcome)
    assert "/files/hmsdist-1.0.tar.gz" not in index.index.hits  # pip never even downloaded it
    assert index.elsewhere.hits == []
    assert docker_leftovers(docker_client, f"hivemind.task_id={outcome.task_id}") == ([], [])  # proxy included


def test_a_missing_version_names_the_versions_there(worker, celery_app, store, index) -> None:
    outcome = run(celery_app, store, {"requirements.txt": "hmwheel==2.0\n", "main.py": ""})
    assert outcome.status is TaskStatus.FAILED
    assert "no version of 'hmwheel==2.0' on the package index" in outcome.reason, outcome.reason
    assert "(versions there: 1.0)" in outcome.reason


def test_a_wheel_linked_on_another_host_is_refused_by_the_set_up_proxy(worker, celery_app, store, index) -> None:
    """The index (allowed) links hmfar's wheel on another host: pip follows the
    link, the proxy refuses it, and the reason names the refused host."""
    outcome = run(celery_app, store, {"requirements.txt": "hmfar\n", "main.py": "import hmfar\n"})
    assert outcome.status is TaskStatus.FAILED
    far = f"{DOCKER_HOST}:{index.elsewhere.port}"
    assert outcome.reason.startswith(
        f"set-up step (pip install -r requirements.txt) failed: it tried to reach {far}, which this site does not allow"
    ), outcome.reason
    assert index.elsewhere.hits == []


def test_source_builds_when_the_operator_allows_them_and_their_code_still_cannot_get_out(
    source_worker, celery_app, store, index
) -> None:
    outcome = run(celery_app, store, {"requirements.txt": "hmsdist\n", "main.py": "import hmsdist\n"}, queue="gpu")
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.reason, outcome.log_tail)
    assert "HMSDIST OK" in outcome.log_tail
    probe = json.loads(result_files(store, outcome)[MARKER])  # the build ran, as the operator allowed
    assert probe["direct"].startswith("refused"), probe  # no network in the set-up container
    assert probe["proxy"].startswith("refused") and "403" in probe["proxy"], probe  # the proxy knows only the index
    assert index.elsewhere.hits == []


def test_the_proxy_works_when_files_go_through_the_docker_api(docker_client, index) -> None:
    """A compose or non-root worker cannot write the volumes' host directories
    and copies everything through the archive API (HIVEMIND_VOLUME_IO=api):
    the set-up proxy's socket directory gets there too."""
    from hivemind_celery.payloads import workspace
    from hivemind_celery.runtime.base import Job
    from hivemind_celery.runtime.docker_driver import DockerRuntime
    from tests.services_kit import PYTHON_IMAGE

    runtime = DockerRuntime(
        Settings(
            worker_id=f"test-setup-api-{uuid.uuid4().hex[:6]}",
            volume_io="api",
            setup_index_url=index.url(),
            setup_allowed_hosts=[],
            stop_grace=1,
        ),
        client=docker_client,
    )
    data = make_zip({"requirements.txt": "hmwheel\n", "main.py": "import hmwheel\n"})
    manifest = workspace.inspect_zip(data)
    spec = TaskSpec(task_id=f"s-{uuid.uuid4().hex[:10]}", payload="sha256:" + "0" * 64, memory_mb=256)
    job = Job(
        spec=spec,
        image=PYTHON_IMAGE,
        command=workspace.entry_command(manifest),
        workspace_tar=workspace.zip_to_tar(data, manifest),
        timeout=60,
        setup_command=workspace.setup_command(manifest),
    )
    try:
        result = runtime.run(job)
    finally:
        runtime.reap(set())
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    assert "HMWHEEL OK" in result.log_tail
