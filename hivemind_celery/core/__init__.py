"""The bottom layer: the task model, settings, Redis key names, the reward, errors and units.
Plain data and pure functions (redis-py at most): no Celery, no Docker, so the bridge and
the Node Pool can share it."""
