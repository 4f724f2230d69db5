"""Logging set-up shared by the worker, the bridge and the Node Pool.

With HIVEMIND_LOG_JSON=1 each record is one JSON object per line. The task
id of the Celery task being run is added to every record made inside it, and
anything that looks like a secret is masked before it is written.

`ProblemLogHandler` also keeps the last warnings and errors of a site process
in a capped Redis list (keys.site_problems) for the console's Problems page,
masked the same way; `recent_problems` reads it back.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from hivemind_celery.core import keys
from hivemind_celery.core.redis_client import redis_from_url
from hivemind_celery.core.settings import Settings

# Record attributes that are not user `extra=` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# A value is masked only where it is given: after `:` or `=` ("password=…",
# "token: …", "authorization: Bearer …"), or after the word Bearer. The word
# "secret" in a sentence ("missing x-hivemind-secret node_id=…") masks nothing.
_SECRET = re.compile(r"(?i)\b(password|passwd|token|secret|authorization)(\"?\s*[:=]\s*\"?)(bearer\s+)?([^\s\",}]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])([^\s\",}]+)")
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def redact(text: str) -> str:
    text = _JWT.sub("[redacted]", text)
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}[redacted]", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}[redacted]", text)


class TaskContextFilter(logging.Filter):
    """Adds the running Celery task's id when the record has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "task_id", None):
            try:
                from celery import current_task

                if current_task and current_task.request.id:
                    record.task_id = current_task.request.id
            except Exception:  # noqa: BLE001 - logging must never fail
                pass
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(str(value)) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")
        )
        line = super().format(record)
        return redact(f"{line} {extras}" if extras else line)


def configure_logging(settings: Settings, level: str | int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContextFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or settings.log_level.upper())


PROBLEMS_MAX = 500


class ProblemLogHandler(logging.Handler):
    """WARNING and above into the site's problem list (newest first, capped).
    Never raises and never logs itself: a record made while it writes (redis-py's
    own) is dropped, not written again."""

    def __init__(self, client: Any, process: str, node_id: str = "", level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.client = client
        self.process = process
        self.node_id = node_id  # the record's own node_id wins
        self.host = socket.gethostname()
        self._busy = threading.local()
        self.addFilter(TaskContextFilter())

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "process": self.process,
            "host": self.host,
            "msg": redact(record.getMessage()),
            "task_id": str(getattr(record, "task_id", "") or ""),
            "node_id": str(getattr(record, "node_id", "") or self.node_id),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc"] = redact(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return entry

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(keys.site_problems(), json.dumps(self.entry(record), default=str))
            pipe.ltrim(keys.site_problems(), 0, PROBLEMS_MAX - 1)
            pipe.execute()
        except Exception:  # noqa: BLE001 - logging must never fail
            pass
        finally:
            self._busy.on = False


def recent_problems(client: Any, limit: int = 200, level: str = "") -> list[dict[str, Any]]:
    """The site's latest problems, newest first (of one level, e.g. "ERROR", when
    given); a damaged entry is skipped."""
    entries = []
    for raw in client.lrange(keys.site_problems(), 0, limit - 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and (not level or entry.get("level") == level):
            entries.append(entry)
    return entries


def attach_problem_log(settings: Settings, process: str, node_id: str = "") -> None:
    """Add the problem list to the root logger (once per process)."""
    root = logging.getLogger()
    if any(isinstance(h, ProblemLogHandler) for h in root.handlers):
        return
    try:
        client = redis_from_url(settings.payload_redis, socket_timeout=2, socket_connect_timeout=2)
    except Exception:  # noqa: BLE001 - a bad URL shows elsewhere; logging goes on
        return
    root.addHandler(ProblemLogHandler(client, process, node_id))
