"""HiveMind worker site on Celery.

`celery -A hivemind_celery worker -Q cpu` finds `app` (or `celery`) here: the
worker app of celery_app.py, built on first access, so that importing a package
(the task model, the registry) builds no app and connects no worker hook. A
process that only sends tasks or reads results uses `hivemind_celery.client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from hivemind_celery.celery_app import app

        return app
    raise AttributeError(f"module 'hivemind_celery' has no attribute {name!r}")
