"""A refused ExecuteTask as the operator sees it, on the stand-in for the deployed
pool (tests/deployed_pool_double.py: the deployed pool cannot be installed here;
the double follows NODEPOOL-PROTOCOL.md). The deployed pool sends no secret and
tells the task's owner nothing: the task stays PENDING without a message and the
pool retries at later rounds. The bridge logs each refusal at WARNING with the
caller's address, which is where the operator finds it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from bridge.server import Bridge
from hivemind_celery.core.settings import Settings
from proto import nodepool_pb2 as pb
from tests.bridge_kit import add_worker
from tests.deployed_pool_double import DeployedPoolDouble
from tests.nodepool_kit import PASSWORD, Client, make_zip, wait_for

pytestmark = pytest.mark.redis

REFUSALS_DB = 55  # fixed, like the other bridge modules (see test_bridge_service.py)


@pytest.fixture(scope="module")
def redis_url(redis_base: str) -> str:
    return f"{redis_base}/{REFUSALS_DB}"


@pytest.fixture
def double() -> Iterator[DeployedPoolDouble]:
    pool = DeployedPoolDouble({"owner": PASSWORD, "site-r": PASSWORD}, round_s=0.3).start()
    yield pool
    pool.stop()


def start_bridge(redis_url: str, double: DeployedPoolDouble, **values: object) -> Bridge:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    add_worker(client, cpus=2, memory_mb=4096)
    settings = Settings(
        redis_url=redis_url,
        username="site-r",
        password=PASSWORD,
        nodepool_address=double.address,
        bridge_port=0,
        bridge_bind="127.0.0.1",
        heartbeat_interval=0.3,
        registration_interval=5.0,
        relay_interval=0.2,
        **values,
    )
    return Bridge(settings).start()


def upload(double: DeployedPoolDouble, task_id: str) -> None:
    client = Client(double.address.replace("localhost", "127.0.0.1"))
    try:
        reply = client.master.UploadTask(
            pb.UploadTaskRequest(
                task_id=task_id, task_zip=make_zip({"main.py": "print(1)\n"}), cpu_score=100, token=client.login("owner")
            )
        )
        assert reply.success, reply.message
    finally:
        client.close()


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"bridge_allowed_callers": "10.9.9.9"}, "address not allowed"),
        ({"bridge_secret": "a-secret-the-deployed-pool-never-sends"}, "missing or wrong x-hivemind-secret"),
    ],
)
def test_refusal_is_silent_on_the_pool_and_logged_by_the_bridge(
    redis_url: str, double: DeployedPoolDouble, caplog: pytest.LogCaptureFixture, values: dict, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.callers")
    bridge = start_bridge(redis_url, double, **values)
    try:
        wait_for(
            lambda: "site-r" in double.nodes and double.node("site-r").status == "Idle", what="the site Idle on the stand-in"
        )
        upload(double, "refused-1")
        wait_for(
            lambda: len([r for r in double.refusals if r[1] == "refused-1"]) >= 2,
            what="the stand-in retrying the refused task at a later round",
        )
        task = double.tasks["refused-1"]
        assert (task.status, task.message) == ("PENDING", "")  # nothing for the owner to see
        lines = [r for r in caplog.records if r.name == "bridge.callers" and reason in r.getMessage()]
        assert lines and all(r.levelname == "WARNING" for r in lines)
        assert "127.0.0.1" in lines[0].getMessage() and lines[0].peer.startswith("ipv")
        node = double.node("site-r")
        wait_for(lambda: node.available == node.total, what="each refused dispatch's reservation given back")
    finally:
        bridge.stop(grace=0)
