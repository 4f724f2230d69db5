"""What importing the bridge costs a fresh interpreter: this tree against a
baseline tree (a checkout of an earlier commit), alternating run by run.

Before the Celery client was split from the worker app (issue 22), `import
bridge.server` built the worker app and so loaded the worker's steps, usage
measuring, the runtimes, psutil and prometheus_client. Per tree and round:
- `python -X importtime -c "import bridge.server"`: the sum of every module's
  own import time as Python reports it;
- `python -c "import bridge.server"`: the CPU time (user + system) the whole
  interpreter used by the end of the import, the wall time of the import itself
  (perf_counter around it), the resident memory (VmRSS) and the modules loaded.
Medians and minimums: on a shared machine wall times swing with other work, the
CPU time much less, and the minimum is the least disturbed run.
Ratio = this tree / baseline (below 1.0: faster, lighter).

Usage: python bench/bench_bridge_import.py BASELINE_DIR [BASELINE_COMMIT]
(e.g. `mkdir /tmp/before && git archive 4d48ba0 | tar -x -C /tmp/before`, then
`.venv/bin/python bench/bench_bridge_import.py /tmp/before 4d48ba0`).
Both trees run on this interpreter, so they share the installed packages.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
PROBE = """
import time
start = time.perf_counter()
import bridge.server
elapsed = time.perf_counter() - start
import json, resource, sys
usage = resource.getrusage(resource.RUSAGE_SELF)
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(json.dumps({"seconds": elapsed, "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": rss, "modules": len(sys.modules), "file": bridge.server.__file__}))
"""
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|")


def probe(tree: Path) -> dict:
    # `-c` puts the working directory first on sys.path: the tree's own packages win.
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if not Path(result["file"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imported {result['file']}, not the tree's own bridge")
    return result


def import_time_us(tree: Path) -> int:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bridge.server"], cwd=tree, capture_output=True, text=True, check=True
    )
    return sum(int(m.group(1)) for line in run.stderr.splitlines() if (m := IMPORTTIME.match(line)))


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    baseline = Path(sys.argv[1]).resolve()
    commit = sys.argv[2] if len(sys.argv) == 3 else ""
    trees = {"baseline": baseline, "this tree": ROOT}
    figures: dict[str, dict[str, list[float]]] = {
        name: {"importtime": [], "cpu": [], "seconds": [], "rss": [], "modules": []} for name in trees
    }
    load_start = os.getloadavg()[0]
    for tree in trees.values():  # warm the file cache and .pyc files, unmeasured
        probe(tree), import_time_us(tree)
    for _ in range(ROUNDS):
        for name, tree in trees.items():
            figures[name]["importtime"].append(import_time_us(tree) / 1000)
            result = probe(tree)
            figures[name]["seconds"].append(result["seconds"] * 1000)
            figures[name]["cpu"].append(result["cpu"] * 1000)
            figures[name]["rss"].append(result["rss_kib"] / 1024)
            figures[name]["modules"].append(result["modules"])
    load_end = os.getloadavg()[0]
    med = {name: {k: statistics.median(v) for k, v in fig.items()} for name, fig in figures.items()}
    low = {name: {k: min(v) for k, v in fig.items()} for name, fig in figures.items()}

    def row(label: str, key: str, unit: str, fmt: str, stat: dict = med) -> str:
        before, after = stat["baseline"][key], stat["this tree"][key]
        return f"| {label} | {before:{fmt}} {unit} | {after:{fmt}} {unit} | {after / before:.2f} |"

    baseline_name = f"commit {commit}" if commit else f"the tree in `{baseline}`"
    body = f"""\
{ROUNDS} rounds, alternating. Baseline: {baseline_name}, on the same interpreter and packages.
One-minute load average at the start and the end: {load_start:.1f}, {load_end:.1f} on {os.cpu_count()} CPUs
(above the CPU count, other work shared the machine).

| `import bridge.server` in a fresh interpreter | baseline | this tree | ratio (this / baseline) |
|---|---|---|---|
{row("CPU time of the interpreter, start-up and import (median)", "cpu", "ms", ".0f")}
{row("CPU time of the interpreter, start-up and import (minimum)", "cpu", "ms", ".0f", low)}
{row("wall time of the import (median)", "seconds", "ms", ".0f")}
{row("wall time of the import (minimum)", "seconds", "ms", ".0f", low)}
{row("sum of module import times, `-X importtime` (median)", "importtime", "ms", ".0f")}
{row("sum of module import times, `-X importtime` (minimum)", "importtime", "ms", ".0f", low)}
{row("resident memory after it (VmRSS)", "rss", "MiB", ".1f")}
{row("modules loaded", "modules", "", ".0f")}

The baseline's bridge built the worker app (`celery_app.create_app`), which imports the
task body, the worker's steps and hooks, usage measuring and the runtimes (psutil,
prometheus_client); this tree's bridge builds a Celery client (`hivemind_celery/client.py`)
and takes from each package only its light face (`tests/system/test_faces.py` holds it so).
"""
    print(body)
    write_section(
        "bridge-import",
        "Bridge start: importing bridge.server vs the baseline tree",
        f"mkdir -p {baseline} && git archive {commit or 'BASELINE'} | tar -x -C {baseline} && "
        f".venv/bin/python bench/bench_bridge_import.py {baseline} {commit}".rstrip(),
        body,
    )


if __name__ == "__main__":
    main()
