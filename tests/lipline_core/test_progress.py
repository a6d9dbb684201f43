"""The job's progress: every report to local listeners, a throttled few to the Prefect progress artifact."""

from __future__ import annotations

from lipline.progress import JobProgress, ProgressArtifact, listening


def test_the_artifact_gets_a_report_a_second_within_a_stage_and_every_stage_end():
    progress = JobProgress("job-1")
    heard: list[tuple[str, float]] = []
    with listening(lambda stage, total: heard.append((stage, total))):
        for stage in ("validate", "normalize"):
            for i in range(1, 101):  # a stage reporting each percent, far faster than once a second
                progress.update(stage, i / 100)
    assert len(heard) == 200  # the CLI's bar sees every report
    # the very first report, then each stage's end (a second or more of stalls on a loaded machine may let one
    # more through; unthrottled it would be 200)
    assert 3 <= progress.artifact.published <= 5


def test_the_last_report_always_goes_through():
    artifact = ProgressArtifact("x", "x", min_interval_s=3600)
    artifact(0.1)
    artifact(0.5)
    artifact(0.9, force=False)
    assert artifact.published == 1
    artifact(1.0)
    artifact(0.95, force=True)
    assert artifact.published == 3
