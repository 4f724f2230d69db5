"""Balances and transfers through a real Node Pool: atomic, positive, no overdraft."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from nodepool import accounts
from nodepool.errors import Refused
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import Client, serving_pool


@pytest.fixture()
def pool(tmp_path) -> Iterator[RunningPool]:  # noqa: ANN001
    with serving_pool(tmp_path, {"alice": 100, "bob": 5}) as running:
        yield running


def balance(client: Client, token: str) -> int:
    reply = client.users.GetBalance(pb.GetBalanceRequest(token=token))
    assert reply.success, reply.message
    return reply.balance


def test_transfer_moves_the_amount(client: Client) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    reply = client.users.Transfer(pb.TransferRequest(token=alice, receiver_username="bob", amount=30))
    assert reply.success, reply.message
    assert (balance(client, alice), balance(client, bob)) == (70, 35)


@pytest.mark.parametrize(
    "receiver,amount,reason",
    [
        ("bob", 0, "between 1 and"),
        ("bob", -5, "between 1 and"),
        ("bob", 101, "insufficient balance: have 100"),
        ("bob", 2**62, "between 1 and"),
        ("nobody", 1, "no user 'nobody'"),
        ("alice", 1, "yourself"),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(client: Client, receiver: str, amount: int, reason: str) -> None:
    alice, bob = client.login("alice"), client.login("bob")
    reply = client.users.Transfer(pb.TransferRequest(token=alice, receiver_username=receiver, amount=amount))
    assert not reply.success
    assert reason in reply.message
    assert (balance(client, alice), balance(client, bob)) == (100, 5)


def test_concurrent_transfers_never_overdraw(pool: RunningPool, client: Client) -> None:
    # 40 threads each try to send 5 CPT from a balance of 100: exactly 20 may succeed.
    alice = client.login("alice")
    outcomes: list[bool] = []
    lock = threading.Lock()

    def send() -> None:
        reply = client.users.Transfer(pb.TransferRequest(token=alice, receiver_username="bob", amount=5))
        with lock:
            outcomes.append(reply.success)

    threads = [threading.Thread(target=send) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 20
    assert balance(client, alice) == 0
    assert balance(client, client.login("bob")) == 105
    rows = pool.pool.store.conn.execute("SELECT COUNT(*), SUM(amount) FROM transfers").fetchone()
    assert tuple(rows) == (20, 100)


def test_user_creation_validates(pool: RunningPool) -> None:
    store = pool.pool.store
    with pytest.raises(Refused, match="already exists"):
        accounts.create_user(store, "alice", "long enough password")
    with pytest.raises(Refused, match="not allowed"):
        accounts.create_user(store, "bad name; drop", "long enough password")
    with pytest.raises(Refused, match="too short"):
        accounts.create_user(store, "erin", "short")
    with pytest.raises(Refused, match="balance must be between"):
        accounts.create_user(store, "erin", "long enough password", balance=-1)
    assert accounts.user_id_of(store, "erin") is None
