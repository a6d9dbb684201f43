"""The REST client waits out a busy Prefect server (503 + Retry-After, 429) instead of failing — against a real
HTTP server on loopback that answers busy a set number of times."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lipline import prefect_http
from lipline.prefect_http import api_client


class _Busy(BaseHTTPRequestHandler):
    busy_left = 0
    status = 503
    seen: list[bytes] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(body)
        if type(self).busy_left > 0:
            type(self).busy_left -= 1
            self.send_response(type(self).status)
            self.send_header("Retry-After", "0.1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = json.dumps({"ok": True, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Busy.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api"
    httpd.shutdown()


@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_answer_is_retried_with_the_same_body(server, status):
    _Busy.busy_left, _Busy.status = 3, status
    with api_client(server, auth_string="u:p") as client:
        r = client.post("/flow_runs/filter", json={"limit": 1})
    assert r.status_code == 200 and r.json()["ok"]
    assert r.json()["auth"] == "Basic dTpw"  # base64("u:p")
    assert _Busy.seen == [b'{"limit":1}'] * 4


def test_a_server_that_stays_busy_gives_its_last_answer(server):
    _Busy.busy_left, _Busy.status = 100, 503
    r = prefect_http.post(f"{server}/flow_runs/filter", json={})
    assert r.status_code == 503
    assert len(_Busy.seen) == prefect_http.RetryingTransport().attempts
