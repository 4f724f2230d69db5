"""Zips by reference: the content-addressed store in Redis, safe reading of task
zips (a stranger's) and the result zip with its execution report."""

from hivemind_celery.payloads.store import PayloadError, PayloadStore

__all__ = ["PayloadError", "PayloadStore"]
