"""What each console page shows: its title, and the template context built
from the site's view (charts drawn here, as SVG)."""

from __future__ import annotations

from typing import Any

from hivemind.console.charts import Line, rates, svg
from hivemind.console.site_view import SiteView

PAGES = {
    "overview": "Overview",
    "running": "Running",
    "history": "History",
    "machine": "Machine",
    "problems": "Problems",
    "preferences": "Preferences",
}


def _line(label: str, points: list[dict[str, Any]], name: str, scale: float = 1.0) -> Line:
    return Line(label, [(p["t"], float(p.get(name) or 0) * scale) for p in points if name in p])


def task_charts(series: list[dict[str, Any]], task_id: str) -> dict[str, str]:
    return {
        "cpu": svg("CPU", [_line("CPU %", series, "cpu_percent")], "%", 100.0, chart_id=f"{task_id}:cpu"),
        "memory": svg("Memory", [_line("used", series, "memory_bytes")], "B", chart_id=f"{task_id}:memory"),
        "gpu": svg("GPU", [_line("GPU %", series, "gpu_percent")], "%", 100.0, chart_id=f"{task_id}:gpu"),
    }


def machine_charts(points: list[dict[str, Any]]) -> dict[str, str]:
    sent = rates([(p["t"], float(p.get("net_sent_bytes") or 0)) for p in points])
    recv = rates([(p["t"], float(p.get("net_recv_bytes") or 0)) for p in points])
    charts = {
        "cpu": svg("CPU", [_line("CPU %", points, "cpu_percent")], "%", 100.0, chart_id="host:cpu"),
        "memory": svg("Memory", [_line("used %", points, "memory_percent")], "%", 100.0, chart_id="host:memory"),
        "disk": svg("Disk", [_line("used %", points, "disk_percent")], "%", 100.0, chart_id="host:disk"),
        "network": svg("Network", [Line("in", recv), Line("out", sent)], "B/s", chart_id="host:network"),
    }
    gpu_ids = sorted({g["index"] for p in points for g in p.get("gpus") or []})
    for index in gpu_ids:

        def gpu_line(label: str, field: str, idx: int = index) -> Line:
            return Line(
                label,
                [
                    (p["t"], float(g.get(field) or 0))
                    for p in points
                    for g in p.get("gpus") or []
                    if g.get("index") == idx and g.get(field) is not None
                ],
            )

        charts[f"gpu{index} load"] = svg(f"GPU {index} load", [gpu_line("load %", "load_percent")], "%", 100.0)
        charts[f"gpu{index} memory"] = svg(f"GPU {index} memory", [gpu_line("used MiB", "memory_used_mb")], " MiB")
        charts[f"gpu{index} temperature"] = svg(f"GPU {index} temperature", [gpu_line("°C", "temperature_c")], "°C")
        charts[f"gpu{index} power"] = svg(f"GPU {index} power", [gpu_line("W", "power_w")], " W")
    return charts


def context(view: SiteView, name: str, outcome: str = "") -> dict[str, Any]:
    if name == "overview":
        return {"overview": view.overview(), "mode": view.prefs.mode()}
    if name == "running":
        tasks = view.running()
        return {"tasks": tasks, "charts": {t.task_id: task_charts(t.series, t.task_id) for t in tasks}, "mode": view.prefs.mode()}
    if name == "history":
        return {"rows": view.history(outcome=outcome)}
    if name == "machine":
        hosts = view.hosts()
        return {"hosts": [(h, machine_charts(view.host_series(h)), (view.host_series(h) or [{}])[-1]) for h in hosts]}
    if name == "problems":
        return {"problems": view.problems()}
    if name == "preferences":
        return {"prefs": view.prefs.load(), "mode": view.prefs.mode(), "error": ""}
    return {}


def _number(form: dict[str, Any], name: str) -> float | None:
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ')}: {text!r} is not a number") from None


def preferences_from_form(form: dict[str, Any]) -> dict[str, Any]:
    """The Preferences fields the form sets (empty optional fields clear their rule)."""
    start, end = str(form.get("hours_start", "")).strip(), str(form.get("hours_end", "")).strip()
    gpus = [g.strip() for g in str(form.get("gpus", "")).split(",") if g.strip()]
    fields: dict[str, Any] = {
        "run_mode": str(form.get("run_mode", "always")),
        "suspend_above_cpu_percent": _number(form, "suspend_above_cpu_percent"),
        "release_memory_after_minutes": _number(form, "release_memory_after_minutes"),
        "hours": {"start": start, "end": end} if start or end else None,
        "gpus": gpus or None,
        # a checkbox: sent only when ticked
        "pause_on_battery": str(form.get("pause_on_battery", "")).strip().lower() in ("on", "true", "1", "yes"),
        "max_cpu_temperature_c": _number(form, "max_cpu_temperature_c"),
        "max_gpu_temperature_c": _number(form, "max_gpu_temperature_c"),
    }
    for name, default in (
        ("cpu_share_percent", 100.0),
        ("memory_share_percent", 100.0),
        ("keep_free_disk_gb", 0.0),
        ("temperature_margin_c", 5.0),
        ("resume_after_seconds", 60.0),
    ):
        value = _number(form, name)
        fields[name] = default if value is None else value
    return fields
