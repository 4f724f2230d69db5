"""Where the demo keeps things (./.hivemind by default) and the small state it
saves between runs: generated passwords, and the site left up by --keep-running."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @classmethod
    def under(cls, base: Path) -> DemoPaths:
        paths = cls(base.resolve())
        for folder in (paths.root, paths.logs, paths.redis, paths.results):
            folder.mkdir(parents=True, exist_ok=True)
        # Passwords live here: only the owner may read the folder.
        os.chmod(paths.root, 0o700)
        return paths

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def nodepool_db(self) -> Path:
        return self.root / "nodepool.db"

    @property
    def credentials(self) -> Path:
        return self.root / "demo-credentials.json"

    @property
    def site(self) -> Path:
        """The running site (pids, ports) while a demo or --keep-running site is up."""
        return self.root / "demo-site.json"

    @property
    def summary(self) -> Path:
        """Outcomes of the last run, as JSON (read by tests and scripts)."""
        return self.root / "demo-summary.json"

    @property
    def env_file(self) -> Path:
        """Shell variables for using the running site with the hivemind CLI."""
        return self.root / "demo.env"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold passwords)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Credentials:
    """Accounts the demo made; generated once and reused by later runs."""

    user: str
    password: str
    worker: str
    worker_password: str
    flower_user: str
    flower_password: str
    redis_password: str

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[Credentials, bool]:
        """(credentials, True when they were generated now)."""
        data = read_json(path)
        names = {f.name for f in fields(cls)}
        if data is not None and names <= data.keys() and all(isinstance(data[n], str) and data[n] for n in names):
            return cls(**{n: data[n] for n in names}), False
        creds = cls(
            user="demo",
            password=secrets.token_urlsafe(12),
            worker="demo-worker",
            worker_password=secrets.token_urlsafe(12),
            flower_user="admin",
            flower_password=secrets.token_urlsafe(12),
            redis_password=secrets.token_urlsafe(16),
        )
        write_private(path, json.dumps(asdict(creds), indent=2) + "\n")
        return creds, True
