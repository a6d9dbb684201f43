"""`lipline portal serve` and `lipline portal add-user NAME` (FastAPI and uvicorn are imported only by `serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The operator portal: upload, check, start, watch, preview and download in a browser",
                  no_args_is_help=True, add_completion=False)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 behind a proxy or in compose)"),
          port: int = typer.Option(8080, help="Port"),
          users: Optional[Path] = typer.Option(None, help="Users file (default LIPLINE_PORTAL_USERS)")) -> None:
    """Serve the portal. Jobs start through the `localize` deployment when PREFECT_API_URL is set, else in this
    process (see LIPLINE_PORTAL_RUNNER); the store is LIPLINE_STORE."""
    import uvicorn

    from lipline.portal.app import create_app
    from lipline.settings import get_settings

    settings = get_settings()
    portal = create_app(users_file=users)
    if settings.portal_secret is None:
        typer.echo("notice: LIPLINE_PORTAL_SECRET is not set: sessions end when the portal restarts", err=True)
    typer.echo(f"Lipline portal on http://{host}:{port}/ (store {settings.store})", err=True)
    uvicorn.run(portal, host=host, port=port, log_level="warning", proxy_headers=True)


@app.command(name="add-user")
def add_user(name: str = typer.Argument(..., help="User name (letters, digits, . _ @ -)"),
             users: Optional[Path] = typer.Option(None, help="Users file (default LIPLINE_PORTAL_USERS)"),
             password: Optional[str] = typer.Option(None, envvar="PORTAL_PASSWORD", hidden=True,
                                                    help="Password (default: asked twice, not echoed)")) -> None:
    """Add a user (or set a user's password) in the users file; the password is stored as a scrypt hash."""
    from lipline.portal.auth import add_user as add
    from lipline.settings import get_settings

    path = users or get_settings().portal_users
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    add(path, name, password)
    typer.echo(f"user {name} saved in {path}")
