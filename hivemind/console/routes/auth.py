"""Logging in and out. A wrong password waits a second before the answer
(slowing guessing, not the other requests); a good one starts a fresh session
with a new CSRF token."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hivemind.console import auth
from hivemind.console.deps import CheckedForm, State, logged_in, to_login
from hivemind.console.render import render

WRONG_PASSWORD_DELAY_S = 1.0

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, console: State) -> Response:
    if logged_in(request):
        return RedirectResponse("/", status_code=303)
    return render(console.templates, request, "login.html", error="", hint=str(console.creds.password_file or ""))


@router.post("/login")
async def login(request: Request, console: State, form: CheckedForm) -> Response:
    if not auth.password_matches(str(form.get("password", "")), console.creds.password):
        await asyncio.sleep(WRONG_PASSWORD_DELAY_S)  # slows guessing; other requests go on
        return render(
            console.templates,
            request,
            "login.html",
            status_code=401,
            error="Wrong password.",
            hint=str(console.creds.password_file or ""),
        )
    request.session.clear()
    request.session.update(user="owner", csrf=auth.new_csrf_token())
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
async def logout(request: Request, form: CheckedForm) -> Response:
    request.session.clear()
    return to_login()
