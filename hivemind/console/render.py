"""Drawing the console's pages: the Jinja2 templates, their filters (times,
sizes, durations as a person reads them), and `render`, which hands every
template the session's CSRF token."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from hivemind.console import auth

TEMPLATES = Path(__file__).parent / "templates"


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    seconds = max(0.0, time.time() - ts)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "—"


def _bytes(value: float | None) -> str:
    value = float(value or 0)
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {name}"
    return f"{value:.0f} B"


def _seconds(value: float | None) -> str:
    value = float(value or 0)
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters.update(ago=_ago, when=_when, bytes=_bytes, seconds=_seconds)
    return templates


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made at the first page that needs one."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = auth.new_csrf_token()
    return str(token)


def render(templates: Jinja2Templates, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(csrf_token=csrf_token(request), page=context.get("page", ""))
    return templates.TemplateResponse(request, name, context, status_code=status_code)
