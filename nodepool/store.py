"""SQLite storage for the Node Pool: one connection per thread, WAL, numbered migrations.

Everything the pool knows lives here, so a restart loses nothing. Writers that
must be atomic use `transaction()`, which takes the write lock up front
(BEGIN IMMEDIATE) so read-then-write sequences cannot interleave.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Each entry upgrades the schema by one version (PRAGMA user_version). Append only.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
        created_at REAL NOT NULL
    );
    CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        sender_id INTEGER NOT NULL REFERENCES users(id),
        receiver_id INTEGER NOT NULL REFERENCES users(id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        created_at REAL NOT NULL
    );
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        hostname TEXT NOT NULL,
        port INTEGER NOT NULL,
        cpu_cores INTEGER NOT NULL DEFAULT 0,
        memory_gb INTEGER NOT NULL DEFAULT 0,
        cpu_score INTEGER NOT NULL DEFAULT 0,
        gpu_score INTEGER NOT NULL DEFAULT 0,
        gpu_memory_gb INTEGER NOT NULL DEFAULT 0,
        gpu_name TEXT NOT NULL DEFAULT '',
        location TEXT NOT NULL DEFAULT '',
        docker_status TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT '',
        cpu_usage REAL NOT NULL DEFAULT 0,
        memory_usage REAL NOT NULL DEFAULT 0,
        gpu_usage REAL NOT NULL DEFAULT 0,
        gpu_memory_usage REAL NOT NULL DEFAULT 0,
        running_tasks INTEGER NOT NULL DEFAULT 0,
        reserved_memory_gb INTEGER NOT NULL DEFAULT 0,
        reserved_cpu_score INTEGER NOT NULL DEFAULT 0,
        reserved_gpu_score INTEGER NOT NULL DEFAULT 0,
        reserved_gpu_memory_gb INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        backoff_until REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        memory_gb INTEGER NOT NULL DEFAULT 0,
        cpu_score INTEGER NOT NULL DEFAULT 0,
        gpu_score INTEGER NOT NULL DEFAULT 0,
        gpu_memory_gb INTEGER NOT NULL DEFAULT 0,
        location TEXT NOT NULL DEFAULT '',
        gpu_name TEXT NOT NULL DEFAULT '',
        task_zip BLOB NOT NULL,
        node_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        cpu_usage REAL NOT NULL DEFAULT 0,
        memory_usage REAL NOT NULL DEFAULT 0,
        gpu_usage REAL NOT NULL DEFAULT 0,
        gpu_memory_usage REAL NOT NULL DEFAULT 0,
        usage_samples INTEGER NOT NULL DEFAULT 0,
        cpu_usage_sum REAL NOT NULL DEFAULT 0,
        memory_usage_sum REAL NOT NULL DEFAULT 0,
        gpu_usage_sum REAL NOT NULL DEFAULT 0,
        output TEXT NOT NULL DEFAULT '',
        result_zip BLOB,
        result_at REAL
    );
    CREATE INDEX tasks_by_status ON tasks(status, created_at);
    CREATE INDEX tasks_by_owner ON tasks(owner_id, created_at);
    CREATE TABLE ledger (
        task_id TEXT PRIMARY KEY REFERENCES tasks(task_id),
        payer_id INTEGER NOT NULL REFERENCES users(id),
        payee_id INTEGER NOT NULL REFERENCES users(id),
        amount_due INTEGER NOT NULL CHECK (amount_due >= 0),
        amount_paid INTEGER NOT NULL CHECK (amount_paid >= 0),
        duration_s REAL NOT NULL,
        cpu_percent REAL NOT NULL,
        memory_percent REAL NOT NULL,
        gpu_percent REAL NOT NULL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # A node that answered "no" to a task is asked again once it reports Idle.
    """
    ALTER TABLE nodes ADD COLUMN backoff_ends_on_report INTEGER NOT NULL DEFAULT 0;
    """,
    # The WireGuard hub's peers (nodepool/vpn_peers.py): one tunnel address per account, kept
    # across restarts. No foreign key: a removed account's peer is dropped by the hub's sweep.
    """
    CREATE TABLE vpn_peers (
        user_id INTEGER PRIMARY KEY,
        public_key TEXT NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        client_name TEXT NOT NULL DEFAULT '',
        joined_at REAL NOT NULL
    );
    """,
]


class Store:
    """The pool's database. Safe to share between threads: each gets its own connection."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so every write is explicit.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta_once(self, key: str, value: str) -> str:
        """Store `value` under `key` unless one is there; return the stored value."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
