"""Plain unit tests of the bridge's pure parts: configuration, the capacity
mapping, request translation, token expiry and usage samples."""

from __future__ import annotations

import ipaddress
import math
import time

import jwt
import pytest

from bridge import capacity
from bridge.config import (
    BridgeConfig,
    ConfigError,
    advertise_host,
    allowed_networks,
    caller_allowed,
    peer_ip,
)
from bridge.intake import IntakeRefused, check_task_id, check_zip, resources, task_spec
from bridge.relay import usage_sample
from bridge.session import token_expiry
from hivemind_celery.core.settings import Settings
from hivemind_celery.site.registry import SiteCapacity
from tests.services_kit import make_zip


def settings(**values: object) -> Settings:
    base: dict[str, object] = {"username": "site-a", "password": "pw"}
    base.update(values)
    return Settings(**base)


# -- configuration ------------------------------------------------------------
def test_advertise_host_refuses_what_the_pool_refuses() -> None:
    for bad in ("127.0.0.1", "", "0.0.0.0"):
        with pytest.raises(ConfigError, match="HIVEMIND_ADVERTISE_HOST"):
            advertise_host(bad, "pool.example")


def test_advertise_host_defaults_to_localhost_for_a_local_pool() -> None:
    assert advertise_host(None, "localhost") == "localhost"
    assert advertise_host(None, "127.0.0.1") == "localhost"
    assert advertise_host(" worker.example ", "127.0.0.1") == "worker.example"


def test_advertise_host_guess_for_a_remote_pool_is_never_loopback() -> None:
    guess = advertise_host(None, "192.0.2.10")  # TEST-NET: the UDP probe sends nothing
    assert guess not in ("", "127.0.0.1", "localhost")


def test_config_needs_the_account() -> None:
    with pytest.raises(ConfigError, match="HIVEMIND_USERNAME"):
        BridgeConfig.from_settings(settings(username=""))
    with pytest.raises(ConfigError, match="HIVEMIND_PASSWORD"):
        BridgeConfig.from_settings(settings(password=""))
    with pytest.raises(ConfigError, match="HIVEMIND_NODEPOOL_ADDRESS"):
        BridgeConfig.from_settings(settings(nodepool_address="no-port"))


def test_password_is_not_in_the_settings_repr() -> None:
    text = repr(settings(password="hunter2-secret")) + str(settings(password="hunter2-secret").password)
    assert "hunter2-secret" not in text


def test_allowlist_defaults_to_the_pool_host() -> None:
    nets = allowed_networks([], "localhost")
    assert nets is not None
    assert caller_allowed("ipv4:127.0.0.1:40000", nets)
    assert caller_allowed("ipv6:[::1]:40000", nets)
    assert caller_allowed("ipv6:%5B::1%5D:40000", nets)  # gRPC's percent-encoded form
    assert not caller_allowed("ipv4:10.1.2.3:40000", nets)
    remote = allowed_networks([], "192.0.2.10")
    assert remote == (ipaddress.ip_network("192.0.2.10/32"),)
    assert not caller_allowed("ipv4:127.0.0.1:1", remote)


def test_allowlist_cidrs_star_and_odd_peers() -> None:
    nets = allowed_networks(["10.0.0.0/8", "2001:db8::/32"], "pool")
    assert nets is not None
    assert caller_allowed("ipv4:10.200.0.1:5", nets)
    assert caller_allowed("ipv6:[2001:db8::7]:5", nets)
    assert caller_allowed("ipv6:[::ffff:10.0.0.9]:5", nets)  # v4-mapped
    assert not caller_allowed("ipv4:11.0.0.1:5", nets)
    assert not caller_allowed("unix:/tmp/sock", nets)
    assert peer_ip("garbage") is None
    assert allowed_networks(["*"], "pool") is None
    assert caller_allowed("unix:/tmp/sock", None)
    with pytest.raises(ConfigError, match="cannot resolve"):
        allowed_networks(["no-such-host.invalid"], "pool")


# -- capacity -----------------------------------------------------------------
def Cap(**values: object) -> SiteCapacity:  # noqa: N802 - reads like the type it makes
    """A registry SiteCapacity: one 8-core, 16 GiB worker, nothing allocated."""
    base: dict[str, object] = dict(
        workers=1,
        cpus_total=8.0,
        cpus_free=8.0,
        memory_mb_total=16384,
        memory_mb_free=16384,
        gpus_total=0,
        gpus_free=0,
        gpu_memory_mb_total=0,
        gpu_memory_mb_free=0,
        allocations=0,
        gpu_names=[],
        queues=["cpu"],
        gpu_models={},
        queue_workers={"cpu": 1},
    )
    base.update(values)
    return SiteCapacity(**base)  # type: ignore[arg-type]


def test_status_is_exactly_idle_only_while_another_task_fits() -> None:
    assert capacity.node_status(Cap(), 0) == "Idle"
    assert capacity.node_status(Cap(cpus_free=0.5), 2) == "Running (2 tasks)"
    assert capacity.node_status(Cap(memory_mb_free=100), 0) == "Full"
    assert capacity.node_status(Cap(workers=0, cpus_free=0, memory_mb_free=0), 0) == "No workers"
    # A busy status must never contain "Idle": the pool matches it exactly, but be safe.
    for status in ("Running (2 tasks)", "Full", "No workers"):
        assert "Idle" not in status


def test_registration_carries_the_totals_whatever_is_allocated() -> None:
    """The deployed pool clamps its own available_* to every registration: the figures
    must be the site's totals, the same while tasks run as when it is empty."""
    busy = Cap(
        cpus_free=2.5,
        memory_mb_free=3000,
        gpus_total=2,
        gpus_free=1,
        gpu_memory_mb_total=49152,
        gpu_memory_mb_free=24576,
        gpu_models={"NVIDIA A10": 1, "NVIDIA H100": 2},
    )
    ad = capacity.advertised(busy, cpu_score_per_core=100, gpu_score_per_gpu=50)
    assert (ad.cpu_cores, ad.cpu_score, ad.memory_gb) == (8, 800, 16)
    assert (ad.gpu_score, ad.gpu_memory_gb, ad.gpu_name) == (100, 48, "NVIDIA H100")
    idle = Cap(
        gpus_total=2,
        gpus_free=2,
        gpu_memory_mb_total=49152,
        gpu_memory_mb_free=49152,
        gpu_models={"NVIDIA A10": 1, "NVIDIA H100": 2},
    )
    assert capacity.advertised(idle, 100, 50) == ad


def test_registered_figures_never_shrink() -> None:
    two = capacity.advertised(Cap(cpus_total=2.0, cpus_free=2.0), 100, 100)
    none_live = capacity.advertised(Cap(workers=0, cpus_total=0, cpus_free=0, memory_mb_total=0, memory_mb_free=0), 100, 100)
    assert capacity.never_less(None, none_live) == none_live
    assert capacity.never_less(two, none_live) == two
    grown = capacity.advertised(Cap(cpus_total=6.0, cpus_free=6.0, gpus_total=1, gpu_models={"A10": 1}), 100, 100)
    assert capacity.never_less(two, grown) == grown


def test_refusal_reasons_say_what_is_true() -> None:
    assert capacity.shortfall(Cap(), 1, 512, 1, 4096).startswith("no GPU on this site")
    assert capacity.shortfall(Cap(), 16, 512, 0, 0) == "larger than this site: CPUs 16 (this site has 8 in all)"
    full = capacity.shortfall(Cap(cpus_free=0.5), 1, 512, 0, 0)
    assert full.startswith("site full: 1 CPUs, 512 MiB not free") and "free: 0.5 CPUs" in full
    assert "no live worker" in capacity.shortfall(Cap(workers=0, cpus_total=0, memory_mb_total=0), 1, 512, 0, 0)
    gpu_full = capacity.shortfall(Cap(gpus_total=1, gpus_free=0, gpu_memory_mb_total=8192), 1, 512, 1, 0)
    assert gpu_full.startswith("site full") and "0 GPUs" in gpu_full


def test_site_usage_percentages() -> None:
    usage = capacity.site_usage(Cap(cpus_free=2.0, memory_mb_free=4096))
    assert usage.cpu == pytest.approx(75.0)
    assert usage.memory == pytest.approx(75.0)
    assert capacity.site_usage(Cap(workers=0, cpus_total=0, memory_mb_total=0)).cpu == 0.0


# -- intake -------------------------------------------------------------------
def test_resources_mapping() -> None:
    s = settings()
    res = resources(250.0, 0.0, 2, 0, s)
    assert (res.cpus, res.memory_mb, res.gpus, res.gpu_memory_mb, res.wants_gpu) == (2.5, 2048, 0, 0, False)
    small = resources(0.0, 0.0, 0, 0, s)
    assert (small.cpus, small.memory_mb) == (1.0, 512)
    gpu = resources(100.0, 150.0, 4, 8, s)
    assert (gpu.gpus, gpu.gpu_memory_mb, gpu.wants_gpu) == (2, 8192, True)
    memory_only = resources(0.0, 0.0, 0, 4, s)
    assert memory_only.gpus == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((-1.0, 0.0, 0, 0), "cpu_usage must not be negative"),
        ((0.0, -5.0, 0, 0), "gpu_usage must not be negative"),
        ((0.0, 0.0, -2, 0), "memory_gb must not be negative"),
        ((0.0, 0.0, 0, -1), "gpu_memory_gb must not be negative"),
        ((math.nan, 0.0, 0, 0), "cpu_usage must be a finite number"),
        ((math.inf, 0.0, 0, 0), "cpu_usage must be a finite number"),
        ((100_000.0, 0.0, 0, 0), "at most 64 per task"),
        ((0.0, 0.0, 100_000, 0), "memory_gb 100000 is above"),
        ((0.0, 1e9, 0, 0), "GPUs; at most 64"),
    ],
)
def test_bad_resources_are_refused_with_the_field_named(args: tuple, needle: str) -> None:
    with pytest.raises(IntakeRefused, match=needle):
        resources(*args, settings())


def test_task_id_checks() -> None:
    assert check_task_id("task-1.a_b") == "task-1.a_b"
    for bad in ("", "../etc", "a b", "-x", "x" * 200, "a;rm -rf /", "tâche"):
        with pytest.raises(IntakeRefused, match="invalid task id"):
            check_task_id(bad)


def test_zip_checks() -> None:
    s = settings(payload_max_bytes=4096)
    check_zip(make_zip({"main.py": "print(1)"}), s)
    with pytest.raises(IntakeRefused, match="empty"):
        check_zip(b"", s)
    with pytest.raises(IntakeRefused, match="above this site's limit of 4096"):
        check_zip(b"x" * 5000, s)
    with pytest.raises(IntakeRefused, match="bad task zip"):
        check_zip(b"this is not a zip", s)
    with pytest.raises(IntakeRefused, match="bad task zip: .*entry point"):
        check_zip(make_zip({"data.txt": "no code"}), s)
    with pytest.raises(IntakeRefused, match="bad task zip"):
        check_zip(make_zip({"../evil.py": "x"}), s)


def test_task_spec_routes_by_gpu() -> None:
    ref = "sha256:" + "0" * 64
    assert task_spec("t1", ref, resources(0, 0, 0, 0, settings())).queue.value == "cpu"
    assert task_spec("t2", ref, resources(0, 100, 0, 0, settings())).queue.value == "gpu"
    assert task_spec("t3", ref, resources(0, 0, 0, 1, settings())).queue.value == "gpu"


# -- session and relay helpers ---------------------------------------------------------
def test_token_expiry_reads_exp_without_the_secret() -> None:
    exp = int(time.time()) + 600
    token = jwt.encode({"sub": "1", "exp": exp}, "a-secret-we-do-not-know-0123456789abcdef", algorithm="HS256")
    assert token_expiry(token) == exp
    assert token_expiry(jwt.encode({"sub": "1"}, "k" * 32, algorithm="HS256")) is None
    assert token_expiry("not-a-jwt") is None


def test_usage_sample_parsing() -> None:
    assert usage_sample(b'{"cpu_percent": 55.5, "memory_percent": 10, "gpu_percent": 0}') == {
        "cpu_usage": 55.5,
        "memory_usage": 10.0,
        "gpu_usage": 0.0,
        "gpu_memory_usage": 0.0,
    }
    with_gpu = usage_sample(b'{"gpu_percent": 80, "gpu_memory_bytes": 1073741824}', gpu_memory_mb=4096)
    assert with_gpu is not None
    assert (with_gpu["gpu_usage"], with_gpu["gpu_memory_usage"]) == (80.0, 25.0)
    assert usage_sample(b"not json") is None
    assert usage_sample(b"[1, 2]") is None
    assert usage_sample(b'{"cpu_percent": "high"}') == {
        "cpu_usage": 0.0,
        "memory_usage": 0.0,
        "gpu_usage": 0.0,
        "gpu_memory_usage": 0.0,
    }
