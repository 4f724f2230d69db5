"""The task's files in and out of its volume, both ways the Docker runtime
has (the volume's directory on the host, or the archive API), against the
real dockerd; and clean-up deferred until the caller has the result.

The tests run as root on the dockerd host, so `auto` goes through the
volume's directory here; the first test checks that it really does, by
counting archive API calls on the client (a spy that forwards every call).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import tempfile
import traceback

import docker
import pytest

from hivemind_celery.core.model import TaskStatus
from hivemind_celery.runtime.archive import AccessDenied, copy_dir
from hivemind_celery.runtime.docker_config import object_name
from hivemind_celery.runtime.docker_driver import DockerRuntime
from tests.runtime.docker_kit import WORKER, leftovers, make_job, settings, tar_files

# What a stranger's task leaves in /workspace for the worker to copy out.
HOSTILE_LEFTOVERS = """
echo mine > mine.txt
ln mine.txt z-hard.txt
ln -s /etc/hostname host-link
ln -s / root-link
mkfifo pipe
echo locked > locked.txt; chmod 000 locked.txt
d=deep; i=0; while [ $i -lt 70 ]; do d=$d/d; i=$((i+1)); done; mkdir -p $d; echo bottom > $d/bottom.txt
mkdir out; echo 42 > out/answer.txt
"""


class ArchiveCallCounter:
    """Wraps a client's put_archive/get_archive, counting calls (they still run)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.puts = self.gets = 0
        api = client.api
        put, get = api.put_archive, api.get_archive

        def counted_put(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.puts += 1
            return put(*args, **kwargs)

        def counted_get(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.gets += 1
            return get(*args, **kwargs)

        api.put_archive, api.get_archive = counted_put, counted_get


@pytest.fixture(params=["auto", "api"])
def counted_runtime(request, docker_client):  # type: ignore[no-untyped-def]
    client = docker.from_env()
    counter = ArchiveCallCounter(client)
    rt = DockerRuntime(settings(volume_io=request.param), client=client)
    yield rt, counter, request.param
    rt.reap(set())
    client.close()


@pytest.mark.docker
def test_files_go_in_and_out_the_chosen_way(counted_runtime, docker_client) -> None:
    rt, counter, mode = counted_runtime
    job = make_job({"run.sh": "cat given.txt; echo made > made.txt", "given.txt": "given\n"})
    result = rt.run(job)
    assert result.status is TaskStatus.SUCCEEDED, result.reason
    assert "given" in result.log_tail
    assert tar_files(result.workspace_tar) == {
        "run.sh": b"cat given.txt; echo made > made.txt",
        "given.txt": b"given\n",
        "made.txt": b"made\n",
    }
    # Through the API: the workspace in, then out, and the checkpoint directory out on its
    # own (it has its own cap, HIVEMIND_CHECKPOINT_MAX_BYTES; docs/checkpoints.md).
    assert (counter.puts, counter.gets) == ((0, 0) if mode == "auto" else (1, 2))
    assert leftovers(docker_client, job.spec.task_id) == ([], [])


@pytest.mark.docker
def test_set_up_step_files_go_in_the_chosen_way(counted_runtime) -> None:
    """Two volumes, two containers: the workspace and the deps directories."""
    rt, counter, mode = counted_runtime
    job = dataclasses.replace(
        make_job({"run.sh": "ls -ld /opt/hivemind/deps; echo ran > ran.txt"}),
        setup_command=["sh", "-c", "touch /opt/hivemind/deps/installed && test -w /workspace"],
    )
    result = rt.run(job)
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    assert "ran.txt" in tar_files(result.workspace_tar)
    assert (counter.puts, counter.gets) == ((0, 0) if mode == "auto" else (2, 2))  # + the checkpoint read


@pytest.mark.docker
def test_what_a_task_leaves_comes_back_filtered_either_way(counted_runtime) -> None:
    rt, _, mode = counted_runtime
    result = rt.run(make_job({"run.sh": HOSTILE_LEFTOVERS}))
    assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
    files = tar_files(result.workspace_tar)
    assert files["mine.txt"] == b"mine\n" and files["out/answer.txt"] == b"42\n"
    assert files["locked.txt"] == b"locked\n"  # dockerd and a root worker both read it
    assert not any(name.endswith("bottom.txt") for name in files)  # too deep: left out
    for name in ("host-link", "root-link", "pipe"):
        assert name not in files
        assert any(note.startswith(f"{name!r}:") for note in result.workspace_notes), result.workspace_notes
    # The host's own files were never read through the links.
    with open("/etc/hostname", "rb") as host:
        assert host.read() not in files.values()
    # A hard link inside comes back as a plain file in place (the API sends a
    # link entry, which is left out): either way nothing outside is reached.
    assert files.get("z-hard.txt", b"mine\n") == b"mine\n"
    if mode == "auto":
        assert files["z-hard.txt"] == b"mine\n"


@pytest.mark.docker
def test_deferred_cleanup_keeps_the_run_until_asked(docker_client) -> None:
    rt = DockerRuntime(settings(), client=docker_client)
    try:
        first = make_job({"run.sh": "echo one"})
        assert rt.run(first, defer_cleanup=True).status is TaskStatus.SUCCEEDED
        containers, volumes = leftovers(docker_client, first.spec.task_id)
        assert len(containers) == 1 and len(volumes) == 1
        rt.cleanup(first.spec.task_id)
        assert leftovers(docker_client, first.spec.task_id) == ([], [])
        rt.cleanup(first.spec.task_id)  # twice is harmless

        # A caller that never cleans up: the next run removes what the last one left.
        second, third = make_job({"run.sh": "echo two"}), make_job({"run.sh": "echo three"})
        rt.run(second, defer_cleanup=True)
        assert leftovers(docker_client, second.spec.task_id) != ([], [])
        rt.run(third)
        assert leftovers(docker_client, second.spec.task_id) == ([], [])
        assert leftovers(docker_client, third.spec.task_id) == ([], [])
    finally:
        rt.reap(set())


def _as_user(uid: int, groups: list[int], work, volumes_like_compose: bool = False) -> dict:  # type: ignore[no-untyped-def]
    """Run `work()` in a forked child with another uid (the tests run as root;
    site workers in compose and under systemd do not) and return its dict.

    volumes_like_compose: in the child's own mount namespace, Docker's volumes
    directory is at its usual path under a parent anyone may traverse, as the
    compose file's bind mount gives the worker container (on this host
    /var/lib/docker is root-only)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            if volumes_like_compose:
                _compose_like_volumes()
            os.setgroups(groups)
            os.setgid(groups[0])
            os.setuid(uid)
            with os.fdopen(write_end, "w") as out:
                json.dump(work(), out)
            status = 0
        except BaseException:  # noqa: BLE001 - shown in the test's output, then the child ends
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as got:
        text = got.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and text, f"child failed (status {status})"
    return json.loads(text)


def _compose_like_volumes() -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    clone_newns, ms_bind, ms_rec, ms_private = 0x00020000, 4096, 16384, 1 << 18
    volumes, stage = b"/var/lib/docker/volumes", tempfile.mkdtemp().encode()
    check(libc.unshare(clone_newns), "unshare")
    check(libc.mount(b"none", b"/", None, ms_rec | ms_private, None), "make / private")
    check(libc.mount(volumes, stage, None, ms_bind, None), "bind volumes aside")
    check(libc.mount(b"tmpfs", b"/var/lib/docker", b"tmpfs", 0, b"mode=0755"), "tmpfs over the data root")
    os.mkdir(volumes)
    check(libc.mount(stage, volumes, None, ms_bind, None), "bind volumes back")


@pytest.mark.docker
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_a_non_root_worker_copies_in_through_the_api_and_out_in_place_or_through_the_api() -> None:
    """A worker without root cannot give files to the task user, so it copies
    in with put_archive; it reads the workspace in place, and when the task
    left something it may not read (a file of mode 0600) it takes the whole
    copy from get_archive instead of leaving the file out."""
    docker_gid = os.stat("/var/run/docker.sock").st_gid
    # Made here: the child may not read the interpreter's lazily imported modules.
    jobs = {
        "readable": make_job({"run.sh": "echo open > open.txt"}),
        "private": make_job({"run.sh": "echo open > open.txt; echo mine > private.txt; chmod 600 private.txt"}),
    }

    def work() -> dict:
        client = docker.from_env()
        counter = ArchiveCallCounter(client)
        rt = DockerRuntime(settings(volume_io="auto"), client=client)
        outcomes = {}
        for name, job in jobs.items():
            before = (counter.puts, counter.gets)
            result = rt.run(job)
            outcomes[name] = {
                "status": result.status.value,
                "files": sorted(tar_files(result.workspace_tar)),
                "puts": counter.puts - before[0],
                "gets": counter.gets - before[1],
            }
        return outcomes

    got = _as_user(65534, [65534, docker_gid], work, volumes_like_compose=True)
    assert got["readable"] == {"status": "succeeded", "files": ["open.txt", "run.sh"], "puts": 1, "gets": 0}
    assert got["private"] == {"status": "succeeded", "files": ["open.txt", "private.txt", "run.sh"], "puts": 1, "gets": 1}


def test_copy_dir_says_when_it_may_not_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user")
    root = tempfile.mkdtemp(prefix="hm-denied-")  # /tmp itself: tmp_path's parents are 0700
    try:
        os.chmod(root, 0o755)
        with open(os.path.join(root, "open.txt"), "w") as handle:
            handle.write("open")
        secret = os.path.join(root, "secret.txt")
        with open(secret, "w") as handle:
            handle.write("secret")
        os.chmod(secret, 0o600)

        def work() -> dict:
            noted = copy_dir(root, 1 << 20)
            try:
                copy_dir(root, 1 << 20, denied_is_error=True)
                raised = ""
            except AccessDenied as exc:
                raised = str(exc)
            return {"files": sorted(tar_files(noted.tar)), "skipped": noted.skipped, "raised": raised}

        got = _as_user(65534, [65534], work)
        assert got["files"] == ["open.txt"]
        assert got["skipped"] == ["'secret.txt': could not be opened: Permission denied"]
        assert got["raised"] == "'secret.txt' could not be opened: Permission denied"
    finally:
        shutil.rmtree(root)


@pytest.mark.docker
def test_a_volume_left_with_a_planted_link_is_never_written_through(docker_client, tmp_path) -> None:
    """A workspace volume of the same name that already holds files (an
    unlabelled leftover the orphan check cannot attribute) is not written in
    place: a link planted where a job file goes would lead a root worker onto
    the host. The copy goes through the API, inside the container, instead."""
    client = docker.from_env()
    counter = ArchiveCallCounter(client)
    rt = DockerRuntime(settings(volume_io="auto"), client=client)
    job = make_job({"run.sh": "echo ran"})
    target = tmp_path / "host-file"
    target.write_text("untouched")
    planted = docker_client.volumes.create(name=object_name(WORKER, job.spec.task_id, "workspace"))
    try:
        os.symlink(target, os.path.join(planted.attrs["Mountpoint"], "run.sh"))
        result = rt.run(job)
        assert result.status is TaskStatus.SUCCEEDED, (result.reason, result.log_tail)
        assert "ran" in result.log_tail
        assert target.read_text() == "untouched"
        assert counter.puts == 1
    finally:
        rt.reap(set())  # the run removed the volume it used, the planted one
        with contextlib.suppress(docker.errors.NotFound):
            planted.remove(force=True)
        client.close()
