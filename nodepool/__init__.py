"""This project's own HiveMind Node Pool: users and tokens, worker nodes, tasks,
dispatch, results, logs, stop, and a CPT ledger, over the `nodepool` gRPC protocol.

Run it with `python -m nodepool` or `hivemind nodepool`. See nodepool/README.md.
"""
