"""Writes one benchmark's section into docs/PERFORMANCE.md, replacing the
section of the same name, so each bench owns its part of the page."""

from __future__ import annotations

import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
HEADER = (
    "# Performance\n\n"
    "Every figure here was measured by a benchmark in `bench/`, as a ratio against a\n"
    "baseline measured in the same run (the machines are noisy; absolute times are\n"
    "given for context only). Re-run one with the command shown in its section.\n"
)


def write_section(name: str, title: str, command: str, body: str, page: Path = PAGE, header: str = HEADER) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {platform.system()} {platform.release()}, Python {sys.version.split()[0]}"
    section = f"{start}\n## {title}\n\nCommand: `{command}`  \nMeasured: {stamp} on {machine}\n\n{body.strip()}\n{end}"
    text = page.read_text() if page.exists() else header
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
