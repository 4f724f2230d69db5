"""The console's web app (FastAPI, Jinja2 templates, server-drawn SVG charts).

`create_app(settings, client, creds)` builds it; `hivemind console` serves it.
The routes live in console/routes/, one router per area; the session and the
CSRF token are FastAPI dependencies (console/deps.py): every page but /login
needs the session, every POST the CSRF token (form field `csrf_token` or
header X-CSRF-Token), else 403. Pages re-fetch their live part from
/fragment/<page> every two seconds (static/console.js).
"""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from hivemind.console.auth import Credentials
from hivemind.console.deps import ConsoleState, Refused
from hivemind.console.render import make_templates
from hivemind.console.routes import api, auth, pages, prefs, tasks
from hivemind.console.site_view import SiteView
from hivemind_celery.core import Settings

SESSION_COOKIE = "hivemind_console"
SESSION_MAX_AGE = 7 * 24 * 3600


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return exc.response


def create_app(settings: Settings, client: redis.Redis, creds: Credentials) -> FastAPI:
    app = FastAPI(title="HiveMind console", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=creds.session_key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        same_site="strict",
        https_only=False,
    )
    app.add_exception_handler(Refused, _refused)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.state.console = ConsoleState(settings, client, creds, SiteView(client, settings), make_templates())
    for router in (auth.router, pages.router, api.router, tasks.router, prefs.router):
        app.include_router(router)
    return app
