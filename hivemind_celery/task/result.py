"""Storing an outcome's result zip (the workspace and `execution_report.json`)
and pointing the outcome at it."""

from __future__ import annotations

import logging

from hivemind_celery.core.model import TaskOutcome
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads import resultzip
from hivemind_celery.payloads.store import PayloadStore, PayloadTooLarge

log = logging.getLogger(__name__)


def store_result(
    outcome: TaskOutcome,
    store: PayloadStore,
    settings: Settings,
    workspace_tar: bytes | None = None,
    stopped: bool = False,
    notes: list[str] | None = None,
) -> TaskOutcome:
    """Pack the result zip, store it, and return the outcome pointing at it.

    A workspace too large to store is dropped from the zip (the report says
    so) rather than losing the whole result."""
    limit = min(settings.result_max_bytes, settings.payload_max_bytes)
    data = resultzip.build_result_zip(
        workspace_tar, outcome, node=settings.worker_id, stopped=stopped, max_bytes=limit, notes=notes or ()
    )
    try:
        ref = store.put(data)
    except PayloadTooLarge:
        log.warning("result zip too large; storing it without the workspace", extra={"task_id": outcome.task_id})
        note = (outcome.reason + "; " if outcome.reason else "") + "workspace too large to return"
        outcome = outcome.model_copy(update={"reason": note})
        ref = store.put(
            resultzip.build_result_zip(
                None, outcome, node=settings.worker_id, stopped=stopped, max_bytes=limit, notes=notes or ()
            )
        )
    return outcome.model_copy(update={"result_ref": ref})
