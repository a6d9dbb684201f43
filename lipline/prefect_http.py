"""An httpx client for Prefect's REST API that rides out a busy server.

Prefect's server answers 503 (with ``Retry-After``) when its database is busy (SQLite "database is locked", a pool
timeout) and 429 when it sheds load; Prefect's own client retries both. Code that talks to the REST API with plain
httpx (``lipline stack``, the tests' stack fixtures) uses :func:`api_client` so that a momentarily busy server is
waited for, not reported as a failure.
"""

from __future__ import annotations

import base64
import os
import time

import httpx

RETRY_STATUSES = frozenset({429, 502, 503})


class RetryingTransport(httpx.HTTPTransport):
    """Retries a request answered 429/502/503, waiting ``Retry-After`` (capped) or an exponential back-off.

    Requests are replayed whole, so only bodies httpx holds in memory (JSON, bytes) are sent again — all that
    Prefect's API takes.
    """

    def __init__(self, attempts: int = 8, backoff_s: float = 0.5, max_wait_s: float = 10.0, **kwargs) -> None:
        super().__init__(retries=3, **kwargs)  # `retries`: connection failures, as httpx defines them
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            response = super().handle_request(request)
            if response.status_code not in RETRY_STATUSES or attempt == self.attempts:
                return response
            response.read()
            response.close()
            time.sleep(self._wait(response, attempt))
        raise AssertionError("unreachable")

    def _wait(self, response: httpx.Response, attempt: int) -> float:
        try:
            hinted = float(response.headers.get("Retry-After", ""))
        except ValueError:
            hinted = self.backoff_s * 2 ** (attempt - 1)
        return min(max(hinted, 0.1), self.max_wait_s)


def api_client(api_url: str, *, timeout: float = 30, auth_string: str | None = None) -> httpx.Client:
    """A client for ``api_url`` (``…/api``) that retries a busy server; Basic auth from ``auth_string`` or
    ``PREFECT_API_AUTH_STRING`` when set."""
    auth = auth_string if auth_string is not None else os.environ.get("PREFECT_API_AUTH_STRING")
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout, headers=headers, transport=RetryingTransport())


def get(url: str, *, timeout: float = 30, **kwargs) -> httpx.Response:
    """``httpx.get`` that retries a busy Prefect server (see :class:`RetryingTransport`)."""
    with httpx.Client(timeout=timeout, transport=RetryingTransport()) as client:
        return client.get(url, **kwargs)


def post(url: str, *, timeout: float = 30, **kwargs) -> httpx.Response:
    """``httpx.post`` that retries a busy Prefect server (see :class:`RetryingTransport`)."""
    with httpx.Client(timeout=timeout, transport=RetryingTransport()) as client:
        return client.post(url, **kwargs)
