"""Portal fixtures: a users file with one scrypt-hashed user, a local store, a logged-in TestClient."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="package")
def users_file(tmp_path_factory) -> Path:
    from lipline.portal.auth import add_user

    path = tmp_path_factory.mktemp("portal-users") / "users.txt"
    add_user(path, "alice", PASSWORD)
    return path


@dataclass
class LoggedIn:
    client: object  # fastapi.testclient.TestClient
    csrf: str
    store: object   # lipline.store.Store

    def new_draft(self) -> str:
        r = self.client.post("/drafts", data={"csrf_token": self.csrf}, follow_redirects=False)
        assert r.status_code == 303, r.text
        return r.headers["location"].rsplit("/", 1)[1]

    def upload(self, draft: str, role: str, data: bytes, name: str, **headers):
        return self.client.put(f"/api/drafts/{draft}/{role}", content=data,
                               headers={"x-csrf-token": self.csrf, "x-file-name": name, **headers})


def login(client, password: str = PASSWORD):
    page = client.get("/login")
    token = CSRF.search(page.text).group(1)
    return client.post("/login", data={"username": "alice", "password": password, "csrf_token": token},
                       follow_redirects=False)


@pytest.fixture
def portal_app(users_file, tmp_path):
    """A portal on a fresh local store (in-process runner, not warmed: these tests start no job)."""
    from lipline.portal.app import create_app
    from lipline.portal.jobs import InProcessRunner, Jobs
    from lipline.store import Store

    store = Store(str(tmp_path / "store"))
    return create_app(store=store, users_file=users_file, secret="test-secret", max_upload_mb=4.0,
                      jobs=Jobs(store, InProcessRunner(warm_up=False)))


@pytest.fixture
def logged_in(portal_app) -> LoggedIn:
    from fastapi.testclient import TestClient

    client = TestClient(portal_app)
    assert login(client).status_code == 303
    token = CSRF.search(client.get("/").text).group(1)
    return LoggedIn(client=client, csrf=token, store=portal_app.state.portal.store)
