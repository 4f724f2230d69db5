"""An example task that fails on purpose: it reads a file the zip does not
hold, so Python exits with status 1 and a traceback in the task's output."""

print("about to read input.csv, which this task does not ship...", flush=True)
with open("input.csv") as source:
    print(source.read())
