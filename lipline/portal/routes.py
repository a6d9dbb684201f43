"""The portal's pages and actions after login: jobs (watch), a new job's uploads, check and start, a job's
preview and downloads. Every POST/PUT carries the session's CSRF token (form field or ``X-CSRF-Token``)."""

from __future__ import annotations

import importlib.util
from urllib.parse import unquote
from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from lipline.errors import LiplineError, one_line
from lipline.params import JOB_ID
from lipline.portal import files, forms, multipart, uploads
from lipline.portal.app import check_csrf, portal_of, posted_form
from lipline.portal.jobs import JobStartError
from lipline.settings import get_settings

router = APIRouter()
#: what a job page may serve from the job's folder (the name is looked up here, never joined from the URL)
JOB_FILES = {"final.mp4": "final.mp4", "final.srt": "final.srt", "final.vtt": "final.vtt",
             "report.html": "report.html", "manifest.json": "manifest.json", "status.json": "status.json"}


def _job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise HTTPException(404, f"no job {job_id!r}")
    return job_id


def _draft(draft: str) -> str:
    try:
        return uploads.check_draft_id(draft)
    except uploads.UploadRefused as exc:
        raise HTTPException(exc.status, str(exc)) from None


def preview_flow_available() -> bool:
    """A `preview` flow exists in this installation (offered only then)."""
    return importlib.util.find_spec("lipline.flows.preview") is not None


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    portal = portal_of(request)
    views = [portal.jobs.view(r) for r in portal.jobs.records()]
    return portal.page(request, "jobs.html", jobs=views, mode=portal.jobs.runner.mode)


@router.get("/api/jobs")
def jobs_json(request: Request) -> JSONResponse:
    portal = portal_of(request)
    return JSONResponse([_job_json(portal.jobs.view(r)) for r in portal.jobs.records()])


def _job_json(view) -> dict:
    data = asdict(view)
    data.pop("record")
    data["done"] = view.done
    return data


@router.post("/drafts")
async def new_draft(request: Request) -> Response:
    await posted_form(request)
    return RedirectResponse(f"/drafts/{uploads.new_draft_id()}", status_code=303)


def _draft_page(request: Request, draft: str, status: int = 200, **extra) -> Response:
    portal = portal_of(request)
    present = uploads.draft_files(portal.store, draft)
    reports = uploads.load_check(portal.store, draft, present)
    return portal.page(request, "draft.html", status=status, draft=draft, roles=uploads.ROLES, files=present,
                       allowed={r: sorted(e) for r, e in uploads.ALLOWED.items()}, reports=reports,
                       fields=forms.form_fields(), values=extra.pop("values", {}),
                       max_mb=portal.max_upload_mb, preview_flow=preview_flow_available(),
                       upload_mode="multipart" if files.is_s3(portal.store) else "stream", **extra)


@router.get("/drafts/{draft}", response_class=HTMLResponse)
def draft_page(request: Request, draft: str) -> Response:
    return _draft_page(request, _draft(draft))


@router.put("/api/drafts/{draft}/{role}")
async def upload(request: Request, draft: str, role: str) -> JSONResponse:
    """One file's bytes as the raw request body, streamed to a temporary file and then into the store."""
    check_csrf(request, request.headers.get("x-csrf-token"))
    draft = _draft(draft)
    portal = portal_of(request)
    name = unquote(request.headers.get("x-file-name", ""))
    sink = None
    try:
        limit = uploads.max_bytes(role if role in uploads.ROLES else "video", portal.max_upload_mb)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise uploads.UploadRefused(f"{uploads.display_name(name)}: {int(declared) / 1024 / 1024:.1f} MB is "
                                        f"over the {role} limit of {limit / 1024 / 1024:.0f} MB; shorten or "
                                        "re-encode it (the limit is LIPLINE_PORTAL_MAX_UPLOAD_MB)", status=413)
        sink = uploads.UploadSink(role, name, limit, get_settings().work_dir)
        async for chunk in request.stream():
            sink.write(chunk)
        stored = await run_in_threadpool(sink.finish, portal.store, draft, request.session["user"])
    except uploads.UploadRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except LiplineError as exc:
        return JSONResponse({"error": one_line(exc)}, status_code=502)
    finally:
        if sink is not None:
            sink.discard()
    return JSONResponse({"role": stored.role, "name": stored.name, "size": stored.size, "sha256": stored.sha256})


async def _multipart_call(request: Request, draft: str, action, *args) -> JSONResponse:
    """A multipart step (S3 stores only): CSRF from ``X-CSRF-Token``, the JSON body's fields as `args`' sources,
    refusals and store errors as one-line JSON errors."""
    check_csrf(request, request.headers.get("x-csrf-token"))
    portal = portal_of(request)
    try:
        draft = uploads.check_draft_id(draft)
        if not files.is_s3(portal.store):
            raise uploads.UploadRefused("this portal's store is not S3: upload through PUT /api/drafts/DRAFT/ROLE",
                                        status=409)
        try:
            body = await request.json()
        except ValueError:
            raise uploads.UploadRefused("the request body must be JSON") from None
        if not isinstance(body, dict):
            raise uploads.UploadRefused("the request body must be a JSON object")
        return JSONResponse(await run_in_threadpool(action, portal, draft, body, request.session["user"], *args))
    except uploads.UploadRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except LiplineError as exc:
        return JSONResponse({"error": one_line(exc)}, status_code=502)


def _start_multipart(portal, draft: str, body: dict, user: str, role: str) -> dict:
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise uploads.UploadRefused("size must be the file's size in bytes (an integer)")
    return multipart.start(portal.store, draft, role, str(body.get("name", "")), size, portal.max_upload_mb, user)


def _complete_multipart(portal, draft: str, body: dict, user: str, role: str) -> dict:
    etags = body.get("etags")
    if not isinstance(etags, list):
        raise uploads.UploadRefused("etags must be the list of the parts' ETags, in part order")
    stored = multipart.complete(portal.store, draft, role, str(body.get("upload_id", "")), etags)
    return {"role": stored.role, "name": stored.name, "size": stored.size, "etag": stored.etag}


def _abort_multipart(portal, draft: str, body: dict, user: str, role: str) -> dict:
    multipart.abort(portal.store, draft, role, str(body.get("upload_id", "")))
    return {"aborted": True}


@router.post("/api/drafts/{draft}/{role}/multipart")
async def multipart_start(request: Request, draft: str, role: str) -> JSONResponse:
    """Start a presigned multipart upload: body ``{"name", "size"}``; returns the part size and part URLs."""
    return await _multipart_call(request, draft, _start_multipart, role)


@router.post("/api/drafts/{draft}/{role}/multipart/complete")
async def multipart_complete(request: Request, draft: str, role: str) -> JSONResponse:
    """Complete it: body ``{"upload_id", "etags"}``; the stored file is then sniffed like a streamed one."""
    return await _multipart_call(request, draft, _complete_multipart, role)


@router.post("/api/drafts/{draft}/{role}/multipart/abort")
async def multipart_abort(request: Request, draft: str, role: str) -> JSONResponse:
    """Abort it (a part failed in the browser): body ``{"upload_id"}``."""
    return await _multipart_call(request, draft, _abort_multipart, role)


async def _draft_post(request: Request, draft: str):
    """A form posted to a draft: (form, draft id, portal, the draft's files), CSRF checked."""
    form = await posted_form(request)
    draft = _draft(draft)
    portal = portal_of(request)
    return form, draft, portal, uploads.draft_files(portal.store, draft)


@router.post("/drafts/{draft}/check")
async def check(request: Request, draft: str) -> Response:
    """Run the data contracts on the uploaded files and keep every violation for the page."""
    form, draft, portal, present = await _draft_post(request, draft)
    if not present:
        return _draft_page(request, draft, status=400, error="upload at least a video and a dub first")
    from lipline.tasks.validate import validate_inputs

    faces = "largest" if form.get("faces") else None
    reports = await run_in_threadpool(validate_inputs, {r: m["uri"] for r, m in present.items()}, faces=faces)
    shown = []
    for report in reports:
        data = report.cli_dict()
        data["file"] = present[report.role]["name"]  # the operator's name for it, not the store path
        shown.append(data)
    uploads.save_check(portal.store, draft, shown, present)
    return RedirectResponse(f"/drafts/{draft}#check", status_code=303)


@router.post("/drafts/{draft}/start")
async def start(request: Request, draft: str) -> Response:
    """Start a job on the draft's files, once a check of exactly these files found nothing that fails."""
    form, draft, portal, present = await _draft_post(request, draft)
    values = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    flow = values.get("flow", "localize")
    missing = [r for r in ("video", "audio") if r not in present]
    reports = uploads.load_check(portal.store, draft, present)
    problem = None
    if missing:
        problem = f"upload the {' and the '.join(missing)} first"
    elif reports is None:
        problem = "check the files first (the check must cover the files as they are now)"
    elif any(r["verdict"] == "fail" for r in reports):
        problem = "the check found failures: replace those files (or override the rule) and check again"
    if problem is None:
        try:
            params = forms.parse_form(values, {r: m["uri"] for r, m in present.items()}, portal.store.root)
            job_id = await run_in_threadpool(portal.jobs.start, params, user=request.session["user"], draft=draft,
                                             flow=flow)
            return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        except (forms.FormError, JobStartError) as exc:
            problem = str(exc)
    return _draft_page(request, draft, status=400, error=problem, values=values)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    portal = portal_of(request)
    record = portal.jobs.record(_job_id(job_id))
    if record is None:
        raise HTTPException(404, f"no job {job_id!r} was started from this portal")
    view = portal.jobs.view(record)
    store = portal.store
    present = {name: store.exists(f"{job_id}/{name}") for name in JOB_FILES}
    downloads = {name: files.presigned_url(store, f"{job_id}/{name}", download_name=f"{job_id}-{name}")
                 or f"/media/{job_id}/{name}?download=1" for name, there in present.items() if there}
    return portal.page(request, "job.html", job=view, present=present, downloads=downloads)


@router.get("/api/jobs/{job_id}")
def job_json(request: Request, job_id: str) -> JSONResponse:
    portal = portal_of(request)
    record = portal.jobs.record(_job_id(job_id))
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return JSONResponse(_job_json(portal.jobs.view(record)))


@router.get("/media/{job_id}/{name}")
def media(request: Request, job_id: str, name: str, download: bool = False) -> Response:
    """A job's file (or its original video) with range support; only names from a fixed list."""
    portal = portal_of(request)
    record = portal.jobs.record(_job_id(job_id))
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    if name == "original":
        key = _draft_key(portal, record, "video")
    elif name in JOB_FILES:
        key = f"{job_id}/{JOB_FILES[name]}"
    else:
        raise HTTPException(404, f"{name!r} is not a file a job has")
    response = files.serve(portal.store, key, request.headers.get("range"),
                           download_name=f"{job_id}-{name}" if download else None)
    if name == "report.html":  # shown on its own: no scripts of the report run with the portal's cookies
        response.headers["Content-Security-Policy"] = "sandbox"
    return response


def _draft_key(portal, record: dict, role: str) -> str:
    present = uploads.draft_files(portal.store, _draft(record["draft"]))
    if role not in present:
        raise HTTPException(404, f"the {role} of job {record['job_id']} is no longer in the store")
    return present[role]["key"]
