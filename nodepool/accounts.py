"""Users, balances and transfers. Amounts are whole CPT; balances never go below zero."""

from __future__ import annotations

import re
import sqlite3
import time

from nodepool.auth import hash_password
from nodepool.errors import Refused
from nodepool.store import Store

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
# Far above any real balance, far below int64: sums of balances can never overflow.
MAX_AMOUNT = 10**15


def create_user(store: Store, username: str, password: str, balance: int = 0) -> int:
    """Add a user; returns its id."""
    if not USERNAME_PATTERN.match(username):
        raise Refused(
            f"username {username!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if not 0 <= balance <= MAX_AMOUNT:
        raise Refused(f"balance must be between 0 and {MAX_AMOUNT}")
    password_hash = hash_password(password)
    try:
        with store.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO users(username, password_hash, balance, created_at) VALUES (?, ?, ?, ?)",
                (username, password_hash, balance, time.time()),
            )
    except sqlite3.IntegrityError:
        raise Refused(f"user {username!r} already exists") from None
    return int(cursor.lastrowid or 0)


def set_password(store: Store, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE users SET password_hash = ? WHERE username = ?", (hash_password(password), username)
        ).rowcount
    if not changed:
        raise Refused(f"no user {username!r}")


def balance_of(store: Store, user_id: int) -> int:
    row = store.conn.execute("SELECT balance FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise Refused(f"no user with id {user_id}")
    return int(row["balance"])


def balance_by_name(store: Store, username: str) -> int:
    row = store.conn.execute("SELECT balance FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise Refused(f"no user {username!r}")
    return int(row["balance"])


def user_id_of(store: Store, username: str) -> int | None:
    row = store.conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    return None if row is None else int(row["id"])


def transfer(store: Store, sender_id: int, receiver_username: str, amount: int) -> int:
    """Move `amount` CPT from the sender to the receiver at once; returns the sender's new balance."""
    if not 0 < amount <= MAX_AMOUNT:
        raise Refused(f"amount must be between 1 and {MAX_AMOUNT} CPT, got {amount}")
    with store.transaction() as conn:
        receiver = conn.execute("SELECT id FROM users WHERE username = ?", (receiver_username,)).fetchone()
        if receiver is None:
            raise Refused(f"no user {receiver_username!r} to receive the transfer")
        if receiver["id"] == sender_id:
            raise Refused("cannot transfer to yourself")
        # The balance condition in the UPDATE is the overdraft guard: no read-then-write gap.
        debited = conn.execute(
            "UPDATE users SET balance = balance - ? WHERE id = ? AND balance >= ?", (amount, sender_id, amount)
        ).rowcount
        if not debited:
            have = conn.execute("SELECT balance FROM users WHERE id = ?", (sender_id,)).fetchone()
            raise Refused(f"insufficient balance: have {have['balance'] if have else 0}, tried to send {amount}")
        conn.execute("UPDATE users SET balance = balance + ? WHERE id = ?", (amount, receiver["id"]))
        conn.execute(
            "INSERT INTO transfers(sender_id, receiver_id, amount, created_at) VALUES (?, ?, ?, ?)",
            (sender_id, receiver["id"], amount, time.time()),
        )
        return int(conn.execute("SELECT balance FROM users WHERE id = ?", (sender_id,)).fetchone()[0])
