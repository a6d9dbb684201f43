"""Lipline: talking-head localization pipeline.

Importing the package sets Lipline's defaults for the libraries it starts (only where the user set nothing), before
any of them is imported: Prefect reads its settings once, at import time.
"""

import os

__version__ = "0.1.0"

#: Environment defaults wherever Lipline starts Prefect (CLI, demo, workers, tests). A fresh `PREFECT_HOME` creates
#: and migrates its SQLite database on the first ephemeral-server start, which takes longer than Prefect's 20 s
#: default on a slow laptop or 2 busy cores ("Timed out while attempting to connect to ephemeral Prefect API server").
PREFECT_ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # its heartbeat logs "database is locked" tracebacks on a fresh home
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
}

for _key, _value in PREFECT_ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
