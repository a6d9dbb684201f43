"""Jobs through the `localize/localize` deployment on a real Prefect server (no worker: the test plays one by
setting states): the flow run carries the form's parameters, the job list shows its state, progress artifact,
failure message and a link into the Prefect UI; a missing deployment is one clear line."""

from __future__ import annotations

from uuid import UUID

import pytest

from lipline.params import LocalizeParams
from lipline.portal.jobs import DeploymentRunner, JobStartError, Jobs, make_runner
from lipline.store import Store
from tests.prefect_server import start_prefect_server


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    base = tmp_path_factory.mktemp("portal-prefect")
    server = start_prefect_server(base / "home", base / "server.log")
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # the environment for new clients, the settings context for what Prefect read when it was first imported
        with pytest.MonkeyPatch.context() as env, temporary_settings(updates={PREFECT_API_URL: server.api}):
            env.setenv("PREFECT_API_URL", server.api)
            yield server.api
    finally:
        server.stop()


def _params(tmp_path, job_id: str) -> LocalizeParams:
    return LocalizeParams(video_uri="s3://b/talk.mp4", audio_uri="s3://b/dub.wav", engine="passthrough",
                          job_id=job_id, store=str(tmp_path / "store"), crf=23)


@pytest.mark.integration
def test_a_preview_job_runs_in_process_and_makes_a_small_result(tmp_path, media):
    """First in this module: the in-process runner uses Prefect's embedded API (no PREFECT_API_URL yet)."""
    import time

    import av

    from lipline.portal.jobs import InProcessRunner
    from tests import media_factory as mf

    video = mf.talking_video(tmp_path / "hd.mp4", media.face, 6.0, width=1280, height=720)  # previews: ≤ 512 px
    dub = mf.write_audio(tmp_path / "hd-dub.wav", mf.speech_like(6.0))
    store = Store(str(tmp_path / "store"))
    jobs = Jobs(store, InProcessRunner(warm_up=False))
    params = LocalizeParams(video_uri=str(video), audio_uri=str(dub), engine="passthrough", store=store.root)
    job_id = jobs.start(params, user="alice", draft="d-0123456789abcdef", flow="preview")
    record = jobs.record(job_id)
    assert (record["flow"], record["mode"]) == ("preview", "in-process")
    deadline = time.monotonic() + 300  # a bound for a stuck job on two loaded cores, not a speed check
    while not (view := jobs.view(record)).done and time.monotonic() < deadline:
        time.sleep(0.5)
    assert view.state == "Completed", view.message
    with av.open(store.backend.path(f"{job_id}/final.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (910, 512)
    notices = store.read_json(f"{job_id}/manifest.json")["engine"]["notices"]
    assert any(n.startswith("preview: 910x512, first 30 s at most") for n in notices), notices


def test_a_missing_deployment_is_one_clear_line(prefect_api, tmp_path):
    store = Store(str(tmp_path / "store"))
    with pytest.raises(JobStartError, match=r"deployment localize/localize not found on http://127\.0\.0\.1:\d+/api: "
                                            r"apply it with `lipline deploy`"):
        Jobs(store, DeploymentRunner()).start(_params(tmp_path, "j0"), user="alice", draft="d-0123456789abcdef")
    assert not store.exists("_portal/jobs/j0.json")


def test_jobs_start_as_flow_runs_of_the_deployment_and_show_their_state(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.states import Failed, Running

    assert isinstance(make_runner(), DeploymentRunner)  # auto: PREFECT_API_URL is set
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow_from_name("localize"), name="localize")
    store = Store(str(tmp_path / "store"))
    jobs = Jobs(store, make_runner())
    job_id = jobs.start(_params(tmp_path, "ep1-de"), user="alice", draft="d-0123456789abcdef")
    record = jobs.record(job_id)
    view = jobs.view(record)
    assert (view.state, view.user, view.job_id) == ("Scheduled", "alice", "ep1-de")
    assert view.ui_url == f"{prefect_api[:-4]}/runs/flow-run/{record['flow_run_id']}"
    run_id = UUID(record["flow_run_id"])
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        assert run.parameters["params"]["crf"] == 23 and run.parameters["params"]["job_id"] == "ep1-de"
        assert run.idempotency_key.startswith("lipline-portal-ep1-de-")  # a resent create returns this run
        client.set_flow_run_state(run_id, Running(), force=True)
        client.create_artifact(ArtifactCreate(key="progress-ep1-de", type="progress", data=42.0, flow_run_id=run_id))
    view = jobs.view(record)
    assert (view.state, view.progress) == ("Running", pytest.approx(0.42))
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Failed(message="validation failed: dub.wav audio.sample_rate"), force=True)
    view = jobs.view(record)
    assert view.state == "Failed" and "audio.sample_rate" in view.message and view.done
    with pytest.raises(JobStartError, match="already started from the portal"):
        jobs.start(_params(tmp_path, "ep1-de"), user="alice", draft="d-0123456789abcdef")


def test_a_preview_job_starts_as_a_flow_run_of_the_preview_deployment(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment_id = client.create_deployment(flow_id=client.create_flow_from_name("preview"), name="preview")
    store = Store(str(tmp_path / "store"))
    jobs = Jobs(store, make_runner())
    job_id = jobs.start(_params(tmp_path, "ep2-pv"), user="alice", draft="d-0123456789abcdef", flow="preview")
    record = jobs.record(job_id)
    assert record["flow"] == "preview"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(record["flow_run_id"]))
    assert run.deployment_id == deployment_id
    assert run.parameters["params"]["job_id"] == "ep2-pv" and run.parameters["params"]["crf"] == 23
    assert jobs.view(record).state == "Scheduled"
