"""Portal users, password hashing (scrypt, hashed at rest) and CSRF tokens.

The users file holds one ``name:scrypt$n$r$p$salt$hash`` line per user (``#`` comments allowed); `add_user` writes
it. Passwords never appear in it in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from lipline.errors import LiplineError

USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_N, _R, _P = 2**14, 8, 1


class PortalAuthError(LiplineError):
    """A users file that cannot be used, or a bad user name (named, with what to do)."""


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of `password` with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored scrypt hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def read_users(path: Path) -> dict[str, str]:
    """name -> stored hash, from the users file."""
    if not path.is_file():
        raise PortalAuthError(f"portal users file {path} not found: create a user with `lipline portal add-user "
                              f"NAME` (or point LIPLINE_PORTAL_USERS at the file)")
    users: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not USER_NAME.match(name) or not stored.startswith("scrypt$"):
            raise PortalAuthError(f"{path} line {number}: expected NAME:scrypt$... (written by `lipline portal "
                                  "add-user NAME`); clear-text passwords are not accepted")
        users[name] = stored
    if not users:
        raise PortalAuthError(f"portal users file {path} has no users: add one with `lipline portal add-user NAME`")
    return users


def add_user(path: Path, name: str, password: str) -> None:
    """Add `name` (or replace its password) in the users file, written under a temporary name and renamed."""
    if not USER_NAME.match(name):
        raise PortalAuthError(f"user name {name!r} must match {USER_NAME.pattern}")
    if len(password) < 8:
        raise PortalAuthError("the password must have at least 8 characters")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    kept = [line for line in lines if line.partition(":")[0].strip() != name]
    kept.append(f"{name}:{hash_password(password)}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def csrf_token(session: dict) -> str:
    """The session's CSRF token (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: dict, sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and sent and hmac.compare_digest(expected, sent))
