"""The job's progress artifact on a real Prefect server: throttled within a stage, yet never left behind."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow

from lipline.progress import JobProgress

pytestmark = pytest.mark.integration


def progress_value(key: str) -> float:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return float(artifact.data)


@flow
def report_stages(job_id: str, stages: list[str]) -> int:
    progress = JobProgress(job_id)
    for stage in stages:
        for i in range(1, 51):  # fifty reports per stage in well under a second
            progress.update(stage, i / 50)
    return progress.artifact.published


def test_a_stage_end_reaches_the_artifact_however_fast_the_reports_come():
    job_id = f"t-{uuid.uuid4().hex[:8]}"
    published = report_stages(job_id, ["validate", "normalize"])
    assert 3 <= published <= 6  # the first report and each stage's end (more only if the machine stalls), not 100
    assert progress_value(f"progress-{job_id}") == pytest.approx(100 * (JobProgress.STAGES["validate"]
                                                                        + JobProgress.STAGES["normalize"]))
    done = f"t-{uuid.uuid4().hex[:8]}"
    report_stages(done, list(JobProgress.STAGES))
    assert progress_value(f"progress-{done}") == pytest.approx(100.0)
