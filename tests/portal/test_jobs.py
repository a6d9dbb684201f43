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
        with pytest.MonkeyPatch.context() as env:
            env.setenv("PREFECT_API_URL", server.api)
            yield server.api
    finally:
        server.stop()


def _params(tmp_path, job_id: str) -> LocalizeParams:
    return LocalizeParams(video_uri="s3://b/talk.mp4", audio_uri="s3://b/dub.wav", engine="passthrough",
                          job_id=job_id, store=str(tmp_path / "store"), crf=23)


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
