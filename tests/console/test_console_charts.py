"""The console's server-drawn charts. The GPU figures are a stand-in (this
machine has no GPU): host points shaped as worker/host_series.host_point writes
them from NVML, with the fields usage/gpu.GpuInfo carries."""

from __future__ import annotations

import re

from hivemind.console.charts import Line, rates, svg
from hivemind.console.pages import machine_charts, task_charts


def polyline_points(chart: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-points="(\d+)"', chart)]


def test_a_chart_has_one_polyline_per_series_with_every_point() -> None:
    chart = svg("CPU", [Line("a", [(0, 10), (1, 20), (2, 30)]), Line("b", [(0, 5)])], "%", 100.0, chart_id="x:cpu")
    assert polyline_points(chart) == [3, 1]
    assert 'data-chart="x:cpu"' in chart and "<script" not in chart
    coords = re.search(r' points="([^"]+)"', chart).group(1).split()
    assert len(coords) == 3


def test_no_samples_says_so() -> None:
    assert "no samples yet" in svg("CPU", [Line("a", [])])


def test_labels_are_escaped() -> None:
    assert "<b>" not in svg("<b>", [Line("<i>", [(0, 1)])])


def test_rates_of_a_counter_skip_a_reset() -> None:
    assert rates([(0, 100), (2, 300), (3, 50), (4, 150)]) == [(2, 100.0), (4, 100.0)]


def test_task_charts_plot_cpu_memory_and_gpu() -> None:
    series = [{"t": t, "cpu_percent": 50, "memory_bytes": 1 << 20, "gpu_percent": 0} for t in range(5)]
    charts = task_charts(series, "t1")
    assert set(charts) == {"cpu", "memory", "gpu"}
    assert all(polyline_points(c) == [5] for c in charts.values())


def test_machine_charts_add_each_gpus_load_memory_temperature_and_power() -> None:
    gpu = {
        "index": 0,
        "name": "stand-in",
        "load_percent": 40.0,
        "memory_used_mb": 900,
        "memory_total_mb": 16000,
        "temperature_c": 55.0,
        "power_w": 120.0,
    }
    points = [
        {
            "t": t,
            "cpu_percent": 10,
            "memory_percent": 20,
            "disk_percent": 30,
            "net_sent_bytes": 1000 * t,
            "net_recv_bytes": 2000 * t,
            "gpus": [gpu],
        }
        for t in range(4)
    ]
    charts = machine_charts(points)
    assert {"cpu", "memory", "disk", "network"} <= set(charts)
    for name in ("gpu0 load", "gpu0 memory", "gpu0 temperature", "gpu0 power"):
        assert polyline_points(charts[name]) == [4], name
    assert polyline_points(charts["network"]) == [3, 3]
    # A host without GPUs gets no GPU charts.
    assert not [n for n in machine_charts([{**p, "gpus": []} for p in points]) if n.startswith("gpu")]
