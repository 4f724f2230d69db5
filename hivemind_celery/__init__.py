"""HiveMind worker site on Celery.

`celery -A hivemind_celery worker -Q cpu` finds `app` here. The app is built
lazily so that plain-data users (the bridge, the Node Pool, the reward) do not
configure Celery just by importing the task model.
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
