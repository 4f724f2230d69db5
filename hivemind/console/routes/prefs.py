"""The owner's preferences, and pausing or resuming the site (every route
needs the session first, then the CSRF token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from hivemind.console import pages
from hivemind.console.deps import CheckedForm, State, page_session
from hivemind.console.render import render
from hivemind_celery.site import PreferencesError

router = APIRouter(dependencies=[Depends(page_session)])


@router.post("/preferences")
async def save_preferences(request: Request, form: CheckedForm, console: State) -> Response:
    try:
        console.view.prefs.update(**pages.preferences_from_form(form))
    except (PreferencesError, ValueError) as exc:
        context = {**pages.context(console.view, "preferences"), "error": str(exc)}
        return render(
            console.templates,
            request,
            "preferences.html",
            status_code=400,
            page="preferences",
            pages=pages.PAGES,
            notice="",
            **context,
        )
    return RedirectResponse("/preferences?notice=Preferences+saved", status_code=303)


@router.post("/pause")
async def pause(form: CheckedForm, console: State) -> Response:
    hours = str(form.get("hours", "")).strip()
    try:
        console.view.prefs.pause(float(hours) * 3600 if hours else None)
    except (PreferencesError, ValueError) as exc:
        return RedirectResponse(f"/preferences?notice=Not+paused:+{exc}", status_code=303)
    return RedirectResponse("/preferences?notice=Paused", status_code=303)


@router.post("/resume")
async def resume(form: CheckedForm, console: State) -> Response:
    console.view.prefs.resume()
    return RedirectResponse("/preferences?notice=Resumed", status_code=303)
