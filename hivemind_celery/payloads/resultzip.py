"""The result zip sent back to the Node Pool.

It holds the task's workspace after the run plus four files of ours at the
root: `execution_log.txt` (what happened, in words), `task_logs.txt` (the
output tail), `execution_report.json` (the TaskOutcome as JSON plus
`duration_seconds`: `usage` is the whole run over that duration, the reward's
inputs; `setup_usage` and `main_usage` each step alone) and, when the task was
stopped, `task_stopped.txt`.
If the task wrote a file with one of those names at its workspace root, ours
wins: the task's file is left out and the log says so.

The workspace tar is the runtime's (names relative to the workspace); it is
checked again here because it holds whatever the task wrote: only regular
files and directories with safe names go in, up to `max_bytes` of content.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Sequence

from hivemind_celery.core.model import TaskOutcome
from hivemind_celery.payloads.workspace import tar_entry, zip_time

EXECUTION_LOG = "execution_log.txt"
TASK_LOGS = "task_logs.txt"
TASK_STOPPED = "task_stopped.txt"
EXECUTION_REPORT = "execution_report.json"
RESERVED_NAMES = frozenset({EXECUTION_LOG, TASK_LOGS, TASK_STOPPED, EXECUTION_REPORT})
MAX_NOTES_LISTED = 100


def _add_workspace(archive: zipfile.ZipFile, workspace_tar: bytes, max_bytes: int, notes: list[str]) -> int:
    kept = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(workspace_tar), mode="r|*") as tar:
            for member in tar:
                name, why = tar_entry(member)
                if not name:
                    continue
                if why is None and name.split("/")[0] in RESERVED_NAMES:
                    why = "name reserved for the worker's report (the worker's file is kept)"
                if why is None and member.isfile() and kept + member.size > max_bytes:
                    why = f"{member.size} bytes would exceed the result limit of {max_bytes} bytes"
                if why:
                    notes.append(f"skipped {name!r}: {why}")
                    continue
                info = zipfile.ZipInfo(name + "/" if member.isdir() else name, zip_time(member.mtime))
                mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
                info.external_attr = ((0o040000 if member.isdir() else 0o100000) | mode) << 16
                if member.isdir():
                    archive.writestr(info, b"")
                    continue
                info.compress_type = zipfile.ZIP_DEFLATED
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has a body
                with archive.open(info, "w", force_zip64=member.size > 2**31) as sink:
                    while chunk := source.read(1024 * 1024):
                        sink.write(chunk)
                kept += member.size
    except (tarfile.TarError, OSError, EOFError) as exc:
        notes.append(f"the rest of the workspace was unreadable: {exc}")
    return kept


def _execution_log(outcome: TaskOutcome, node: str, stopped: bool, notes: Sequence[str]) -> str:
    def stamp(value: object) -> str:
        return value.isoformat() if value is not None else "-"  # type: ignore[attr-defined]

    lines = [
        f"task: {outcome.task_id}",
        f"status: {outcome.status.value}",
        f"exit code: {outcome.exit_code if outcome.exit_code is not None else '-'}",
        f"reason: {outcome.reason or '-'}",
        f"started: {stamp(outcome.started_at)}",
        f"finished: {stamp(outcome.finished_at)}",
        f"duration: {outcome.duration:.3f} s",
        f"node: {node}",
        f"worker: {outcome.worker or '-'}",
        f"stopped by request: {'yes' if stopped else 'no'}",
    ]
    # The reward's inputs, over the duration above; each step over its own time.
    for label, usage in (
        ("usage (whole run)", outcome.usage),
        ("set-up step", outcome.setup_usage),
        ("main step", outcome.main_usage),
    ):
        if usage is not None:
            lines.append(
                f"{label}: {usage.cpu_seconds:.3f} CPU s, {usage.cpu_percent:.1f} % of the reserved "
                f"cores over {usage.wall_seconds:.3f} s, peak {usage.memory_peak_bytes} bytes "
                f"({usage.source})"
            )
    if len(outcome.attempts) > 1:  # it was interrupted and resumed (docs/checkpoints.md)
        lines.append(f"attempts ({len(outcome.attempts)}), reward their sum:")
        for attempt in outcome.attempts:
            start = f"from checkpoint {attempt.resumed_from}" if attempt.resumed_from else "from the beginning"
            lines.append(
                f"  {attempt.number}. {attempt.ended} on {attempt.worker or '-'} at "
                f"{stamp(attempt.started_at)}, {attempt.wall_seconds:.1f} s, {attempt.cpu_seconds:.3f} CPU s, "
                f"reward {attempt.reward if attempt.reward is not None else '-'}, {start}, "
                f"{attempt.checkpoints_saved} checkpoint(s) saved"
            )
    if notes:
        lines.append(f"notes ({len(notes)}):")
        lines.extend(f"  {note}" for note in notes[:MAX_NOTES_LISTED])
        if len(notes) > MAX_NOTES_LISTED:
            lines.append(f"  ... and {len(notes) - MAX_NOTES_LISTED} more")
    return "\n".join(lines) + "\n"


def execution_report(outcome: TaskOutcome) -> dict:
    report = outcome.model_dump(mode="json")
    report["duration_seconds"] = outcome.duration
    return report


def build_result_zip(
    workspace_tar: bytes | None,
    outcome: TaskOutcome,
    node: str,
    logs: str | None = None,
    stopped: bool = False,
    max_bytes: int = 100 * 1024 * 1024,
    notes: Sequence[str] = (),
) -> bytes:
    """The result zip. `logs` defaults to the outcome's log tail; `notes` are
    the runtime's remarks on the copied workspace (files it skipped, from
    JobResult.workspace_notes); they go into execution_log.txt."""
    all_notes = list(notes)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if workspace_tar:
            _add_workspace(archive, workspace_tar, max_bytes, all_notes)
        archive.writestr(EXECUTION_LOG, _execution_log(outcome, node, stopped, all_notes))
        archive.writestr(TASK_LOGS, outcome.log_tail if logs is None else logs)
        if stopped:
            finished = outcome.finished_at.isoformat() if outcome.finished_at else "an unknown time"
            archive.writestr(TASK_STOPPED, f"Task {outcome.task_id} was stopped by request at {finished}.\n")
        archive.writestr(EXECUTION_REPORT, json.dumps(execution_report(outcome), indent=2) + "\n")
    return out.getvalue()
