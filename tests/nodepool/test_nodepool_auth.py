"""Logins and tokens on a real Node Pool over loopback gRPC: every RPC family refuses a
missing, expired, forged or unsigned token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import jwt
import pytest

from nodepool.auth import hash_password, verify_password
from nodepool.server import RunningPool
from proto import nodepool_pb2 as pb
from tests.nodepool_kit import (
    PASSWORD,
    TEST_SECRET,
    Client,
    add_user,
    make_zip,
    result_zip,
    serving_pool,
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPool]:
    with serving_pool(tmp_path_factory.mktemp("auth"), {"alice": 50, "bob": 0}) as running:
        yield running


def _claims(pool: RunningPool, username: str, exp_offset: float) -> dict:
    row = pool.pool.store.conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    now = int(time.time())
    return {
        "sub": username,
        "uid": row["id"],
        "iat": now,
        "exp": now + int(exp_offset),
        "acct": pool.pool.tokens._account_mark(row["id"]),
    }


def bad_tokens(pool: RunningPool) -> dict[str, str]:
    return {
        "missing": "",
        "garbage": "not-a-token",
        "expired": jwt.encode(_claims(pool, "alice", -60), TEST_SECRET, algorithm="HS256"),
        "forged": jwt.encode(_claims(pool, "alice", 600), "some-other-secret-of-an-attacker-0123456789", algorithm="HS256"),
        "unsigned": jwt.encode(_claims(pool, "alice", 600), None, algorithm="none"),
    }


def test_login_gives_a_working_token(client: Client) -> None:
    token = client.login("alice")
    reply = client.users.GetBalance(pb.GetBalanceRequest(username="alice", token=token))
    assert reply.success, reply.message
    assert reply.balance == 50


@pytest.mark.parametrize("username,password", [("alice", "wrong password"), ("nobody", PASSWORD), ("", "")])
def test_bad_login_refused_with_one_message(client: Client, username: str, password: str) -> None:
    reply = client.users.Login(pb.LoginRequest(username=username, password=password))
    assert not reply.success
    assert reply.token == ""
    assert reply.message == "invalid username or password"


def test_passwords_are_stored_salted_and_hashed(pool: RunningPool) -> None:
    rows = pool.pool.store.conn.execute("SELECT password_hash FROM users").fetchall()
    hashes = [r[0] for r in rows]
    assert all(PASSWORD not in h for h in hashes)
    assert len(set(hashes)) == len(hashes)  # same password, different salts
    assert verify_password(PASSWORD, hashes[0]) and not verify_password("other", hashes[0])
    assert not verify_password(PASSWORD, "plain-text")
    assert hash_password("x") != hash_password("x")


def test_refresh_gives_a_new_working_token(client: Client) -> None:
    reply = client.users.RefreshToken(pb.RefreshTokenRequest(old_token=client.login("alice")))
    assert reply.success, reply.message
    assert client.users.GetBalance(pb.GetBalanceRequest(token=reply.new_token)).balance == 50


@pytest.mark.parametrize("kind", ["missing", "garbage", "expired", "forged", "unsigned"])
def test_refresh_refuses_bad_tokens(pool: RunningPool, client: Client, kind: str) -> None:
    reply = client.users.RefreshToken(pb.RefreshTokenRequest(old_token=bad_tokens(pool)[kind]))
    assert not reply.success
    assert reply.new_token == ""


def test_token_of_a_deleted_user_is_refused(pool: RunningPool, client: Client) -> None:
    add_user(pool, "carol")
    token = client.login("carol")
    with pool.pool.store.transaction() as conn:
        conn.execute("DELETE FROM users WHERE username = 'carol'")
    reply = client.users.GetBalance(pb.GetBalanceRequest(token=token))
    assert not reply.success and "unknown user" in reply.message


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


# Every RPC the pool serves, called with a given token: returns (success, message).
RPCS: dict[str, Callable[[Client, str], tuple[bool, str]]] = {
    "Transfer": lambda c, t: _pair(c.users.Transfer(pb.TransferRequest(token=t, receiver_username="bob", amount=1))),
    "GetBalance": lambda c, t: _pair(c.users.GetBalance(pb.GetBalanceRequest(token=t))),
    "RegisterWorkerNode": lambda c, t: _pair(
        c.nodes.RegisterWorkerNode(
            pb.RegisterWorkerNodeRequest(node_id="alice", hostname="localhost", port=50053), metadata=_bearer(t)
        )
    ),
    "ReportStatus": lambda c, t: _pair(
        c.nodes.ReportStatus(pb.RunningStatusRequest(node_id="alice", status="Idle"), metadata=_bearer(t))
    ),
    "UploadTask": lambda c, t: _pair(
        c.master.UploadTask(pb.UploadTaskRequest(task_id="auth-probe", task_zip=make_zip(), token=t))
    ),
    "GetTaskResult": lambda c, t: _pair(c.master.GetTaskResult(pb.GetTaskResultRequest(task_id="x", token=t))),
    "StopTask": lambda c, t: _pair(c.master.StopTask(pb.StopTaskRequest(task_id="x", token=t))),
    "GetAllUserTasks": lambda c, t: _aborts(lambda: c.master.GetAllUserTasks(pb.GetAllUserTasksRequest(token=t))),
    "GetTasklog": lambda c, t: _aborts(lambda: c.master.GetTasklog(pb.TasklogRequest(task_id="x", token=t))),
    "TaskOutputUpload": lambda c, t: _pair(
        c.worker.TaskOutputUpload(pb.TaskOutputUploadRequest(task_id="x", output="o", token=t))
    ),
    "TaskOutput": lambda c, t: _pair(c.worker.TaskOutput(pb.TaskOutputRequest(task_id="x", output="o", token=t))),
    "TaskUsage": lambda c, t: _pair(c.worker.TaskUsage(pb.TaskUsageRequest(task_id="0", cpu_usage=5, token=t))),
    "TaskResultUpload": lambda c, t: _pair(
        c.worker.TaskResultUpload(pb.TaskResultUploadRequest(task_id="x", result_zip=result_zip(), token=t))
    ),
}


def _pair(reply) -> tuple[bool, str]:  # noqa: ANN001 - any reply with success/message
    return reply.success, reply.message


def _aborts(call: Callable[[], object]) -> tuple[bool, str]:
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc.code()
        return False, exc.details() or ""
    return True, ""


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize("kind", ["missing", "garbage", "expired", "forged", "unsigned"])
def test_every_rpc_refuses_a_bad_token(pool: RunningPool, client: Client, rpc: str, kind: str) -> None:
    success, message = RPCS[rpc](client, bad_tokens(pool)[kind])
    assert not success
    expected = {"missing": "missing token", "expired": "expired"}.get(kind, "invalid token")
    assert expected in message
    # Nothing was changed by the refused call.
    assert pool.pool.store.conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0
    assert pool.pool.store.conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == 0


def test_node_rpcs_work_with_a_valid_bearer_token(client: Client) -> None:
    token = client.login("bob")
    reply = client.nodes.RegisterWorkerNode(
        pb.RegisterWorkerNodeRequest(node_id="bob", hostname="localhost", port=50053), metadata=_bearer(token)
    )
    assert reply.success, reply.message
    reply = client.nodes.ReportStatus(pb.RunningStatusRequest(node_id="bob", status="Idle"), metadata=_bearer(token))
    assert reply.success, reply.message


def test_node_id_must_be_the_token_user(pool: RunningPool, client: Client) -> None:
    token = client.login("alice")
    reply = client.nodes.RegisterWorkerNode(
        pb.RegisterWorkerNodeRequest(node_id="mallory", hostname="localhost", port=50053), metadata=_bearer(token)
    )
    assert not reply.success and "must equal the logged-in user name" in reply.message
    reply = client.nodes.ReportStatus(pb.RunningStatusRequest(node_id="bob", status="Idle"), metadata=_bearer(token))
    assert not reply.success and "must equal" in reply.message
    assert pool.pool.store.conn.execute("SELECT COUNT(*) FROM nodes WHERE node_id = 'mallory'").fetchone()[0] == 0


def test_balance_of_another_user_is_refused(client: Client) -> None:
    reply = client.users.GetBalance(pb.GetBalanceRequest(username="bob", token=client.login("alice")))
    assert not reply.success and "your own balance" in reply.message


def test_generated_secret_persists_across_restarts(tmp_path) -> None:  # noqa: ANN001
    from nodepool.server import start
    from tests.nodepool_kit import pool_settings

    first = start(pool_settings(tmp_path, secret=None))
    try:
        add_user(first, "dave")
        token = Client(first.address).login("dave")
    finally:
        first.stop()
    second = start(pool_settings(tmp_path, secret=None))
    try:
        reply = Client(second.address).users.GetBalance(pb.GetBalanceRequest(token=token))
        assert reply.success, reply.message
    finally:
        second.stop()


def test_signed_tokens_with_wrong_claims_are_refused(pool: RunningPool, client: Client) -> None:
    """Signed with the pool's real key, yet not valid: a claim missing, a user id
    or account mark that belongs to another user than the name it carries."""
    now = int(time.time())
    alice = _claims(pool, "alice", 600)
    bob = _claims(pool, "bob", 600)
    tokens = {
        "no-exp": jwt.encode({k: v for k, v in alice.items() if k != "exp"}, TEST_SECRET, algorithm="HS256"),
        "no-acct": jwt.encode({k: v for k, v in alice.items() if k != "acct"}, TEST_SECRET, algorithm="HS256"),
        "alice-name-bob-id": jwt.encode({**alice, "uid": bob["uid"], "acct": bob["acct"]}, TEST_SECRET, algorithm="HS256"),
        "bob-acct-on-alice": jwt.encode({**alice, "acct": bob["acct"]}, TEST_SECRET, algorithm="HS256"),
        "uid-as-text": jwt.encode({**alice, "uid": str(alice["uid"])}, TEST_SECRET, algorithm="HS256"),
        "not-yet-valid": jwt.encode({**alice, "nbf": now + 3600}, TEST_SECRET, algorithm="HS256"),
    }
    # The same claims as issued are accepted: what is refused above is the change.
    assert client.users.GetBalance(pb.GetBalanceRequest(token=jwt.encode(alice, TEST_SECRET, algorithm="HS256"))).success
    for kind, token in tokens.items():
        reply = client.users.GetBalance(pb.GetBalanceRequest(token=token))
        assert not reply.success, kind
        assert reply.balance == 0, kind


def test_token_of_a_recreated_user_is_refused(pool: RunningPool, client: Client) -> None:
    """Same name, new account (SQLite may even reuse the id): the old account's
    token does not carry over. A password change ends old tokens too."""
    add_user(pool, "erin", balance=5)
    old = client.login("erin")
    with pool.pool.store.transaction() as conn:
        conn.execute("DELETE FROM users WHERE username = 'erin'")
    add_user(pool, "erin", balance=99)
    reply = client.users.GetBalance(pb.GetBalanceRequest(token=old))
    assert not reply.success and reply.balance == 0
    assert client.users.GetBalance(pb.GetBalanceRequest(token=client.login("erin"))).balance == 99
    token = client.login("erin")
    from nodepool.auth import hash_password

    with pool.pool.store.transaction() as conn:
        conn.execute("UPDATE users SET password_hash = ? WHERE username = 'erin'", (hash_password(PASSWORD),))
    assert not client.users.GetBalance(pb.GetBalanceRequest(token=token)).success
