"""The CLI tests' `lipline` subprocesses share one real Prefect server (started once for this package).

Each `lipline run` would otherwise start Prefect's embedded server in its own process (10-60 s apiece on two
loaded cores); with `PREFECT_API_URL` set they connect to this one, as they would to an operator's server.
The embedded start itself is tested in tests/lipline_core/test_prefect_env.py.
"""

from __future__ import annotations

import os

import pytest

from tests.prefect_server import start_prefect_server


@pytest.fixture(scope="package", autouse=True)
def shared_prefect_api(tmp_path_factory):
    base = tmp_path_factory.mktemp("prefect-cli")
    server = start_prefect_server(base / "home", base / "server.log")
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api  # read by every `lipline` subprocess started from here on
    try:
        yield server.api
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        server.stop()
