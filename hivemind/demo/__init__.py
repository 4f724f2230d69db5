"""`hivemind demo`: a whole HiveMind site on one machine, started from nothing.

The parts, one job each:
- `paths.py`: the ./.hivemind layout and the demo's saved state;
- `procs.py`: child processes in their own process groups, logs, stopping;
- `services.py`: starting Redis, the Node Pool, the bridge, workers and Flower, and
  waiting until each is ready;
- `preflight.py`: what this machine has (Docker, the task image, a GPU, Flower) and
  what the demo does about what it lacks;
- `dockerd.py`: which Docker daemon to use, starting it when it is installed but
  not running (and stopping it after);
- `catalog.py`: the bundled examples (package data in `examples/`) and their expected outcomes;
- `report.py`: live progress and the outcome table (rich);
- `runner.py`: the whole run, start to stop.

It talks to the Node Pool through hivemind/pool_client.py, the same client as the CLI.
"""
