"""An example task with a requirements.txt: the worker installs `tabulate`
(a small pure-Python package) before this runs."""

import platform

from tabulate import tabulate

rows = [(n, n * n, n**3) for n in range(1, 8)]
table = tabulate(rows, headers=["n", "n^2", "n^3"], tablefmt="github")
print(table, flush=True)
with open("table.md", "w") as out:
    out.write(f"Made with tabulate on Python {platform.python_version()}\n\n{table}\n")
print("wrote table.md", flush=True)
