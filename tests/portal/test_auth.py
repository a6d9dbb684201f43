"""Access: scrypt-hashed users, login, no page or file without it, a CSRF token on every state change."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from lipline.portal.auth import PortalAuthError, add_user, hash_password, read_users, verify_password
from tests.portal.conftest import PASSWORD, login

SAMPLE = {"draft": "d-0123456789abcdef", "role": "video", "job_id": "job1", "name": "final.mp4"}


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route, those of included routers too (no prefixes are used)."""
    out = []
    routes = list(app.routes)
    while routes:
        route = routes.pop(0)
        routes.extend(getattr(getattr(route, "original_router", None), "routes", []))
        if isinstance(route, APIRoute):
            path = route.path.format(**SAMPLE)
            out.extend((method, path) for method in route.methods if method != "HEAD")
    return out


def test_password_hashes_are_salted_scrypt_and_verify():
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first.startswith("scrypt$") and first != second and "s3cret-pass" not in first
    assert verify_password("s3cret-pass", first) and not verify_password("s3cret-pasS", first)
    assert not verify_password("s3cret-pass", "scrypt$garbage")


def test_users_file_refuses_clear_text_and_short_passwords(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("bob:hunter2\n")
    with pytest.raises(PortalAuthError, match="line 1: expected NAME:scrypt"):
        read_users(path)
    with pytest.raises(PortalAuthError, match="at least 8"):
        add_user(tmp_path / "u2.txt", "bob", "short")
    with pytest.raises(PortalAuthError, match="not found"):
        read_users(tmp_path / "missing.txt")
    add_user(path.with_name("u3.txt"), "bob", "long enough")
    add_user(path.with_name("u3.txt"), "bob", "another one")  # replaces, never duplicates
    users = read_users(path.with_name("u3.txt"))
    assert list(users) == ["bob"] and verify_password("another one", users["bob"])
    assert path.with_name("u3.txt").stat().st_mode & 0o077 == 0


def test_every_route_needs_a_login(portal_app):
    client = TestClient(portal_app)
    routes = _routes(portal_app)
    assert len(routes) >= 10
    for method, path in routes:
        if path == "/login":
            continue
        r = client.request(method, path, headers={"accept": "application/json"}, follow_redirects=False)
        assert r.status_code == 401, (method, path, r.status_code)
    page = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    # a file of a job, guessed by name, is refused too
    assert client.get("/media/job1/final.mp4").status_code == 401


def test_wrong_password_is_refused_and_right_one_logs_in(portal_app):
    client = TestClient(portal_app)
    bad = login(client, password="wrong password")
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    assert client.get("/api/jobs").status_code == 401
    assert login(client).status_code == 303
    assert client.get("/api/jobs").json() == []


def test_login_itself_needs_the_csrf_token(portal_app):
    client = TestClient(portal_app)
    client.get("/login")
    r = client.post("/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text


def test_every_state_change_needs_the_csrf_token(logged_in, media):
    client = logged_in.client
    changes = [(m, p) for m, p in _routes(client.app) if m in ("POST", "PUT", "DELETE")]
    assert {"/drafts", "/logout"} <= {p for _, p in changes}
    for method, path in changes:
        for token in (None, "forged-token"):
            headers = {"x-file-name": "talk.mp4"} | ({"x-csrf-token": token} if token else {})
            data = None if method == "PUT" else ({"csrf_token": token} if token else {})
            r = client.request(method, path, headers=headers, data=data,
                               content=media.video.read_bytes() if method == "PUT" else None)
            assert r.status_code == 403 and "CSRF" in r.text, (method, path, token, r.status_code)
    assert client.get("/api/jobs").status_code == 200  # still logged in: nothing above logged out
