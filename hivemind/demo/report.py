"""What the demo shows: live progress of the submitted examples and the final
table of outcomes (rich), and the same outcomes as JSON for scripts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from hivemind.demo.catalog import Example, Finished


@dataclass
class Tracked:
    """One example through its run."""

    example: Example
    task_id: str = ""
    submitted_at: float = 0.0  # time.monotonic()
    pool_status: str = "-"
    last_line: str = ""
    finished: Finished | None = None
    result_path: Path | None = None
    skipped: str = ""  # why it was not submitted
    error: str = ""  # why it could not be followed to the end

    @property
    def done(self) -> bool:
        return bool(self.skipped or self.error or self.finished is not None)

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "skipped"
        if self.error:
            return "error"
        return self.finished.status if self.finished else "running"

    @property
    def as_expected(self) -> bool:
        return bool(self.skipped) or self.outcome == self.example.expected

    def as_dict(self) -> dict[str, Any]:
        finished = self.finished
        return {
            "example": self.example.name,
            "task_id": self.task_id,
            "expected": self.example.expected,
            "outcome": self.outcome,
            "as_expected": self.as_expected,
            "pool_status": self.pool_status,
            "skipped": self.skipped,
            "error": self.error,
            "exit_code": finished.exit_code if finished else None,
            "duration_s": finished.duration_s if finished else None,
            "cpu_seconds": finished.cpu_seconds if finished else None,
            "memory_peak_bytes": finished.memory_peak_bytes if finished else None,
            "reward_cpt": finished.reward if finished else None,
            "reason": finished.reason if finished else "",
            "result_zip": str(self.result_path) if self.result_path else None,
        }


_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "yellow", "skipped": "dim", "error": "bold red"}


def elapsed(row: Tracked, now: float) -> str:
    """Seconds since submission while it runs; its measured duration once done."""
    if row.finished is not None:
        return f"{row.finished.duration_s:.0f}s"
    if row.submitted_at and not row.done:
        return f"{now - row.submitted_at:.0f}s"
    return "-"


def progress_table(rows: list[Tracked]) -> Table:
    # Fixed widths for all but the output column, so on an 80-column terminal
    # rich shrinks only that one (a flexible column had squeezed `time` to nothing).
    # The task ids are in the notes below the outcomes.
    table = Table(title="HiveMind demo: the examples through the Node Pool", expand=True)
    table.add_column("example", no_wrap=True, min_width=17, max_width=17)
    table.add_column("state", no_wrap=True, min_width=9, max_width=9)
    table.add_column("time", no_wrap=True, justify="right", min_width=5, max_width=5)
    table.add_column("latest output", no_wrap=True, overflow="ellipsis", ratio=1)
    now = time.monotonic()
    for row in rows:
        if row.skipped:
            table.add_row(row.example.name, Text("skipped", style="dim"), "-", row.skipped)
            continue
        state = row.outcome if row.done else row.pool_status
        table.add_row(
            row.example.name, Text(state, style=_STYLE.get(state, "cyan")), elapsed(row, now), row.error or row.last_line
        )
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def outcome_table(rows: list[Tracked]) -> Table:
    table = Table(title="Outcomes (✓ = as expected)")
    table.add_column("example", no_wrap=True, min_width=17)
    table.add_column("outcome", no_wrap=True, min_width=11)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("CPU-s", justify="right", no_wrap=True)
    table.add_column("peak mem", justify="right", no_wrap=True)
    table.add_column("CPT", justify="right", no_wrap=True)
    for row in rows:
        finished = row.finished
        mark = Text("✓ " if row.as_expected else "✗ ", style="green" if row.as_expected else "bold red")
        outcome = Text.assemble(mark, Text(row.outcome, style=_STYLE.get(row.outcome, "")))
        if finished is None:
            table.add_row(row.example.name, outcome, "-", "-", "-", "-")
            continue
        peak = finished.memory_peak_bytes
        table.add_row(
            row.example.name,
            outcome,
            _seconds(finished.duration_s),
            "-" if finished.cpu_seconds is None else f"{finished.cpu_seconds:.2f}",
            "-" if peak is None else f"{peak / 2**20:.1f} MiB",
            "-" if finished.reward is None else str(finished.reward),
        )
    return table


def notes(rows: list[Tracked]) -> list[str]:
    """One line per row that needs words: skips, errors, reasons, surprises."""
    lines = []
    for row in rows:
        if row.skipped:
            lines.append(f"{row.example.name}: skipped: {row.skipped}")
        elif row.error:
            lines.append(f"{row.example.name}: {row.error}")
        elif row.finished is not None:
            line = f"{row.example.name}: task {row.task_id}"
            if not row.as_expected:
                line += f"; expected {row.example.expected}"
            if row.finished.reason:
                line += f"; {row.finished.reason}"
            lines.append(line)
    if any(r.finished and r.finished.cpu_seconds is None for r in rows):
        lines.append("(a '-' under CPU-s, peak mem or CPT: the worker's report did not include that figure)")
    return lines
