"""The console's web app (FastAPI, Jinja2 templates, server-drawn SVG charts).

`create_app(settings, client, creds)` builds it; `hivemind console` serves it.
Every page but /login needs the session; every POST needs the CSRF token
(form field `csrf_token` or header X-CSRF-Token), else 403. Pages re-fetch
their live part from /fragment/<page> every two seconds (static/console.js).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from hivemind.console import auth, pages
from hivemind.console.auth import Credentials
from hivemind.console.site_view import SiteView
from hivemind_celery.core.model import TaskStatus
from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.store import PayloadError, PayloadStore
from hivemind_celery.site.prefs import PreferencesError

HERE = Path(__file__).parent
SESSION_COOKIE = "hivemind_console"
SESSION_MAX_AGE = 7 * 24 * 3600
WRONG_PASSWORD_DELAY_S = 1.0
LIVE_PAGES = ("overview", "running", "machine", "problems")


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


def create_app(settings: Settings, client: redis.Redis, creds: Credentials) -> FastAPI:
    app = FastAPI(title="HiveMind console", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=creds.session_key, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE, same_site="strict", https_only=False)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(ago=_ago, when=_when, bytes=_bytes, seconds=_seconds)
    view = SiteView(client, settings)

    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = auth.new_csrf_token()
        return str(token)

    def logged_in(request: Request) -> bool:
        return bool(request.session.get("user"))

    def render(request: Request, name: str, **context: Any) -> HTMLResponse:
        context.update(csrf_token=csrf(request), page=context.get("page", ""))
        return templates.TemplateResponse(request, name, context)

    async def checked_form(request: Request) -> dict[str, Any] | None:
        """The POSTed form when its CSRF token is the session's, else None."""
        form = dict(await request.form())
        given = form.get("csrf_token") or request.headers.get("x-csrf-token")
        return form if auth.csrf_matches(str(given) if given else None, request.session.get("csrf")) else None

    def forbidden() -> Response:
        return HTMLResponse("<h1>403</h1><p>This change did not carry the console's CSRF token; reload the page "
                            "and try again.</p>", status_code=403)

    def to_login() -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        if logged_in(request):
            return RedirectResponse("/", status_code=303)
        return render(request, "login.html", error="", hint=str(creds.password_file or ""))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await checked_form(request)
        if form is None:
            return forbidden()
        if not auth.password_matches(str(form.get("password", "")), creds.password):
            await asyncio.sleep(WRONG_PASSWORD_DELAY_S)  # slows guessing; other requests go on
            return HTMLResponse(templates.get_template("login.html").render(
                request=request, csrf_token=csrf(request), page="", error="Wrong password.",
                hint=str(creds.password_file or "")), status_code=401)
        request.session.clear()
        request.session.update(user="owner", csrf=auth.new_csrf_token())
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        if await checked_form(request) is None:
            return forbidden()
        request.session.clear()
        return to_login()

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        return page(request, "overview")

    @app.get("/{name}", response_class=HTMLResponse)
    def page(request: Request, name: str) -> Response:
        if name not in pages.PAGES:
            return HTMLResponse("<h1>404</h1>", status_code=404)
        if not logged_in(request):
            return to_login()
        outcome = request.query_params.get("outcome", "")
        context = pages.context(view, name, outcome=outcome)
        return render(request, f"{name}.html", page=name, pages=pages.PAGES, outcomes=[s.value for s in TaskStatus],
                      outcome_filter=outcome, notice=request.query_params.get("notice", ""), **context)

    @app.get("/fragment/{name}", response_class=HTMLResponse)
    def fragment(request: Request, name: str) -> Response:
        if not logged_in(request):
            return JSONResponse({"error": "log in first"}, status_code=401)
        if name not in LIVE_PAGES:
            return HTMLResponse("", status_code=404)
        return render(request, f"_{name}.html", page=name, **pages.context(view, name))

    @app.get("/api/tasks/{task_id}/series")
    def task_series(request: Request, task_id: str) -> Response:
        if not logged_in(request):
            return JSONResponse({"error": "log in first"}, status_code=401)
        points = view.series.task(task_id)
        return JSONResponse({"task_id": task_id, "points": points, "count": len(points)})

    @app.get("/api/overview")
    def overview_json(request: Request) -> Response:
        if not logged_in(request):
            return JSONResponse({"error": "log in first"}, status_code=401)
        return JSONResponse(vars(view.overview()))

    @app.post("/tasks/{task_id}/stop")
    async def stop(request: Request, task_id: str) -> Response:
        if not logged_in(request):
            return JSONResponse({"error": "log in first"}, status_code=401)
        if await checked_form(request) is None:
            return forbidden()
        view.stop(task_id)
        return RedirectResponse(f"/running?notice=asked+{task_id}+to+stop", status_code=303)

    @app.get("/history/{task_id}/result.zip")
    def result_zip(request: Request, task_id: str) -> Response:
        if not logged_in(request):
            return to_login()
        outcome = view.outcome(task_id)
        if outcome is None or not outcome.result_ref:
            return HTMLResponse("<h1>404</h1><p>No result is kept for this task.</p>", status_code=404)
        try:
            data = PayloadStore(client, settings).get(outcome.result_ref)
        except PayloadError as exc:
            return HTMLResponse(f"<h1>410</h1><p>The result is gone: {exc}</p>", status_code=410)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{task_id}-result.zip"'})

    @app.post("/preferences")
    async def save_preferences(request: Request) -> Response:
        if not logged_in(request):
            return to_login()
        form = await checked_form(request)
        if form is None:
            return forbidden()
        try:
            view.prefs.update(**pages.preferences_from_form(form))
        except (PreferencesError, ValueError) as exc:
            context = {**pages.context(view, "preferences"), "error": str(exc)}
            response = render(request, "preferences.html", page="preferences", pages=pages.PAGES, notice="", **context)
            response.status_code = 400
            return response
        return RedirectResponse("/preferences?notice=Preferences+saved", status_code=303)

    @app.post("/pause")
    async def pause(request: Request) -> Response:
        if not logged_in(request):
            return to_login()
        form = await checked_form(request)
        if form is None:
            return forbidden()
        hours = str(form.get("hours", "")).strip()
        try:
            view.prefs.pause(float(hours) * 3600 if hours else None)
        except (PreferencesError, ValueError) as exc:
            return RedirectResponse(f"/preferences?notice=Not+paused:+{exc}", status_code=303)
        return RedirectResponse("/preferences?notice=Paused", status_code=303)

    @app.post("/resume")
    async def resume(request: Request) -> Response:
        if not logged_in(request):
            return to_login()
        if await checked_form(request) is None:
            return forbidden()
        view.prefs.resume()
        return RedirectResponse("/preferences?notice=Resumed", status_code=303)

    return app
