"""What the owner does to one task: stop a running one, download an ended one's result zip."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hivemind.console.deps import ApiSession, CheckedForm, PageSession, State
from hivemind_celery.payloads import PayloadError, PayloadStore

router = APIRouter()


@router.post("/tasks/{task_id}/stop")
async def stop(task_id: str, session: ApiSession, form: CheckedForm, console: State) -> Response:
    console.view.stop(task_id)
    return RedirectResponse(f"/running?notice=asked+{task_id}+to+stop", status_code=303)


@router.get("/history/{task_id}/result.zip")
def result_zip(task_id: str, session: PageSession, console: State) -> Response:
    outcome = console.view.outcome(task_id)
    if outcome is None or not outcome.result_ref:
        return HTMLResponse("<h1>404</h1><p>No result is kept for this task.</p>", status_code=404)
    try:
        data = PayloadStore(console.client, console.settings).get(outcome.result_ref)
    except PayloadError as exc:
        return HTMLResponse(f"<h1>410</h1><p>The result is gone: {exc}</p>", status_code=410)
    return Response(
        data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{task_id}-result.zip"'}
    )
