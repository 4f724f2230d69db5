"""The console's pages (pages.PAGES) and the live part of four of them, which
static/console.js re-fetches from /fragment/<page> every two seconds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from hivemind.console import pages
from hivemind.console.deps import ApiSession, ConsoleState, PageSession, Refused, State
from hivemind.console.render import render
from hivemind_celery.core import TaskStatus

LIVE_PAGES = ("overview", "running", "machine", "problems")

router = APIRouter()


def known_page(name: str) -> str:
    """A page's name; an unknown one is 404 before the session is asked for."""
    if name not in pages.PAGES:
        raise Refused(HTMLResponse("<h1>404</h1>", status_code=404))
    return name


def _page(request: Request, console: ConsoleState, name: str) -> Response:
    outcome = request.query_params.get("outcome", "")
    context = pages.context(console.view, name, outcome=outcome)
    return render(
        console.templates,
        request,
        f"{name}.html",
        page=name,
        pages=pages.PAGES,
        outcomes=[s.value for s in TaskStatus],
        outcome_filter=outcome,
        notice=request.query_params.get("notice", ""),
        **context,
    )


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: PageSession, console: State) -> Response:
    return _page(request, console, "overview")


@router.get("/{name}", response_class=HTMLResponse)
def page(request: Request, name: Annotated[str, Depends(known_page)], session: PageSession, console: State) -> Response:
    return _page(request, console, name)


@router.get("/fragment/{name}", response_class=HTMLResponse)
def fragment(request: Request, name: str, session: ApiSession, console: State) -> Response:
    if name not in LIVE_PAGES:
        return HTMLResponse("", status_code=404)
    return render(console.templates, request, f"_{name}.html", page=name, **pages.context(console.view, name))
