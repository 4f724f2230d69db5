"""The console's JSON: the overview and a task's usage series (401 without a session)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from hivemind.console.deps import State, api_session

router = APIRouter(prefix="/api", dependencies=[Depends(api_session)])


@router.get("/tasks/{task_id}/series")
def task_series(task_id: str, console: State) -> Response:
    points = console.view.series.task(task_id)
    return JSONResponse({"task_id": task_id, "points": points, "count": len(points)})


@router.get("/overview")
def overview_json(console: State) -> Response:
    return JSONResponse(vars(console.view.overview()))
