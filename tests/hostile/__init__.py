"""The hostile-input corpus (issue 6): every case is built in cases.py and sent
through the real paths — the worker (`hivemind.run_task` on a real `celery
worker`) and the bridge's ExecuteTask intake — and must end in a clear
rejection or a FAILED outcome naming what was wrong."""
