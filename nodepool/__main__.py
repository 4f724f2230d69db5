"""`python -m nodepool`: serve this project's Node Pool (settings from HIVEMIND_NODEPOOL_*)."""

from __future__ import annotations

import os

from nodepool import logs
from nodepool.server import serve


def main() -> None:
    logs.configure(os.environ.get("HIVEMIND_LOG_LEVEL", "INFO"), os.environ.get("HIVEMIND_LOG_JSON", "") in ("1", "true", "yes"))
    serve()


if __name__ == "__main__":
    main()
