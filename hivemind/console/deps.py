"""What the console's routes depend on, as FastAPI dependencies: the console's
state, the owner's session, and a POST's form checked against the session's
CSRF token.

A dependency that refuses raises `Refused` with the response to send: a page
without a session goes to /login (303), the JSON API and the live fragments
answer 401, a change without the token 403. `create_app` sends it as it is.
Dependencies run in the order a route declares them, so a route that needs
both asks for the session before the form (no session: 303/401, not 403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

import redis
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hivemind.console import auth
from hivemind.console.auth import Credentials
from hivemind.console.site_view import SiteView
from hivemind_celery.core import Settings


@dataclass(frozen=True)
class ConsoleState:
    """What every route may use; one per app (app.state.console)."""

    settings: Settings
    client: redis.Redis
    creds: Credentials
    view: SiteView
    templates: Jinja2Templates


class Refused(Exception):
    """A request refused by a dependency; `response` is what the visitor gets."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def console_state(request: Request) -> ConsoleState:
    return cast(ConsoleState, request.app.state.console)


def to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


def logged_in(request: Request) -> bool:
    return bool(request.session.get("user"))


def page_session(request: Request) -> dict[str, Any]:
    """The owner's session, for a page; without one the browser goes to /login."""
    if not logged_in(request):
        raise Refused(to_login())
    return request.session


def api_session(request: Request) -> dict[str, Any]:
    """The owner's session, for the JSON API and the live fragments; without one, 401."""
    if not logged_in(request):
        raise Refused(JSONResponse({"error": "log in first"}, status_code=401))
    return request.session


async def checked_form(request: Request) -> dict[str, Any]:
    """The POSTed form, when it carries the session's CSRF token (form field
    `csrf_token` or header X-CSRF-Token); else 403 and nothing changes."""
    form = dict(await request.form())
    given = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not auth.csrf_matches(str(given) if given else None, request.session.get("csrf")):
        raise Refused(
            HTMLResponse(
                "<h1>403</h1><p>This change did not carry the console's CSRF token; reload the page and try again.</p>",
                status_code=403,
            )
        )
    return form


State = Annotated[ConsoleState, Depends(console_state)]
PageSession = Annotated[dict[str, Any], Depends(page_session)]
ApiSession = Annotated[dict[str, Any], Depends(api_session)]
CheckedForm = Annotated[dict[str, Any], Depends(checked_form)]
