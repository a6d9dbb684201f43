"""The portal's FastAPI application: login, sessions and CSRF, then the pages (jobs, new job, job) and the routes
they call (uploads, check, start, media). See `lipline.portal` for the whole picture."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from lipline.portal import auth
from lipline.portal.jobs import Jobs, make_runner
from lipline.settings import get_settings
from lipline.store import Store

HERE = Path(__file__).parent
SESSION_MAX_AGE_S = 12 * 3600


class Portal:
    """What the routes share: the store, the users file, the jobs and the templates."""

    def __init__(self, store: Store, users_file: Path, max_upload_mb: float, jobs: Jobs) -> None:
        self.store, self.users_file, self.max_upload_mb, self.jobs = store, users_file, max_upload_mb, jobs
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def page(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        context.update(user=request.session.get("user"), csrf=auth.csrf_token(request.session))
        return self.templates.TemplateResponse(request, name, context, status_code=status)


def portal_of(request: Request) -> Portal:
    return request.app.state.portal


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse a state-changing request whose CSRF token is missing or not this session's."""
    if not auth.csrf_ok(request.session, sent):
        from fastapi import HTTPException

        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


async def posted_form(request: Request):
    """The posted form, once its ``csrf_token`` field proved it came from one of this session's pages."""
    form = await request.form()
    check_csrf(request, form.get("csrf_token"))
    return form


def create_app(*, store: Store | None = None, users_file: Path | None = None, secret: str | None = None,
               max_upload_mb: float | None = None, jobs: Jobs | None = None) -> FastAPI:
    """The portal app; what is not given comes from `lipline.settings` (``LIPLINE_PORTAL_*``, ``LIPLINE_STORE``)."""
    settings = get_settings()
    store = store or Store.from_settings()
    users_file = users_file or settings.portal_users
    auth.read_users(users_file)  # refuse to start without a usable users file
    if secret is None and settings.portal_secret is not None:
        secret = settings.portal_secret.get_secret_value()
    app = FastAPI(title="Lipline portal", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.portal = Portal(store, users_file, max_upload_mb or settings.portal_max_upload_mb,
                              jobs or Jobs(store, make_runner()))

    @app.middleware("http")
    async def login_required(request: Request, call_next):
        path = request.url.path
        if path == "/login" or path.startswith("/static/") or request.session.get("user"):
            return await call_next(request)
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"error": "log in first"}, status_code=401)

    # added last = outermost: the session is decoded before `login_required` looks at it
    app.add_middleware(SessionMiddleware, secret_key=secret or secrets.token_urlsafe(32),
                       session_cookie="lipline_portal", max_age=SESSION_MAX_AGE_S, same_site="strict")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from lipline.portal import routes

    app.include_router(routes.router)
    add_login_routes(app)
    return app


def add_login_routes(app: FastAPI) -> None:
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return portal_of(request).page(request, "login.html")

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await posted_form(request)
        portal = portal_of(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        users = auth.read_users(portal.users_file)  # read per login: a user added while running can log in
        if name not in users or not auth.verify_password(password, users[name]):
            return portal.page(request, "login.html", status=401, error="wrong user name or password")
        request.session.clear()
        request.session["user"] = name
        auth.csrf_token(request.session)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await posted_form(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
