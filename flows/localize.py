"""The `localize` flow: a talking-head video + a dubbed speech track -> a lip-synced, loudness-normalized,
subtitled, branded deliverable in the object store.

The body reads as the business process; every stage is a task in `lipline.tasks` that takes and returns URIs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from lipline.joblock import JobLock
from lipline.lazy import import_in_background
from lipline.errors import JobExists, StoreError, ValidationFailed
from lipline.engine_choice import choose_engine
from lipline.models.registry import get_spec
from lipline.params import LocalizeParams
from lipline.progress import JobProgress
from lipline.records import EngineResult, PostParams, Segment, ValidationReport
from lipline.provenance import lipline_version
from lipline.settings import get_settings
from lipline.store import Store
from lipline.tasks import archive as archive_stage
from lipline.tasks import (faces, gpu_dispatch, merge, normalize, post, qc_plots, qc_report, quality_gate,
                           segment, segment_results, validate)
from lipline.uris import local_path, sha256_once, to_path


# What later stages import on first use: ~2 CPU s (scipy.signal for loudness, librosa's core for the pauses,
# matplotlib for the report) that would otherwise sit on the job's critical path after validation.
LATER_STAGE_IMPORTS = ("scipy.signal", "pyloudnorm", "librosa.core.spectrum", "librosa.core.convert",
                       "matplotlib.figure", "matplotlib.backends.backend_agg")


class LocalizeResult(BaseModel):
    job_id: str
    final_uri: str
    manifest_uri: str
    engine: str
    dry_run: bool
    smoke_model: bool = False
    notices: list[str] = []


@dataclass
class Job:
    """Per-run state: id, store, private temp dir, timings and the stage being worked on."""

    params: LocalizeParams
    job_id: str
    store: Store
    workdir: Path
    progress: JobProgress
    engine: str = "passthrough"  # the engine actually used ('auto' resolved)
    notices: list[str] = field(default_factory=list)  # what the operator must know about this deliverable
    stage: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    lock: JobLock | None = None  # this run's hold on the job id (released when the flow ends)

    @contextmanager
    def stage_of(self, name: str):
        self.stage = name
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        self.progress.update(name, 1.0)


def open_job(params: LocalizeParams) -> Job:
    settings = get_settings()
    job_id = params.job_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    store = Store.from_settings(params.store)
    engine, notices = choose_engine(params)  # no weights for latentsync: refused here, before any work
    workdir = Path(tempfile.mkdtemp(prefix=f"lipline-{job_id}-", dir=settings.work_dir))
    try:
        lock = JobLock(store, job_id).acquire(workdir)  # one run per job id: a second is refused before any write
    except StoreError:
        shutil.rmtree(workdir, ignore_errors=True)
        store.check_writable(job_id)  # a store that refuses writes is named with what to check
        raise
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        if lock.leftover_workdir():  # the lock of a run killed on this host: its local files go
            shutil.rmtree(lock.leftover_workdir(), ignore_errors=True)
        store.check_writable(job_id)
        if store.exists(f"{job_id}/manifest.json"):
            if not params.replace:
                raise JobExists(f"job {job_id} is already complete at {store.uri(job_id)}/; choose another job id "
                                "or replace it (--replace / params.replace)")
            store.delete(f"{job_id}/manifest.json")  # the completion marker goes first
        # then every old key: nothing of a replaced job, or of a failed or killed run, survives beside the new one
        store.delete_prefix(job_id)
    except BaseException:
        lock.release()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Job(params, job_id, store, workdir, JobProgress(job_id), engine=engine, notices=notices, lock=lock)


@flow(name="localize", description="Validate, normalize, segment, lip-sync, merge, subtitle/brand and archive one job")
def localize(params: LocalizeParams) -> LocalizeResult:
    logger = get_run_logger()
    job = open_job(params)
    logger.info("job %s -> %s", job.job_id, job.store.uri(job.job_id))
    with job_lifetime(job):
        return run_stages(job)


@contextmanager
def job_lifetime(job: Job):
    """A run's hold on its job (also `flows/preview.py`): on any error the job's outputs go and `status.json`
    says why; the temp dir and the lock go in every case."""
    try:
        yield job
    except BaseException as exc:
        archive_stage.record_failure(job.store, job.job_id, exc, job.stage)
        raise
    finally:
        shutil.rmtree(job.workdir, ignore_errors=True)
        job.lock.release()


def publish_validation(reports: list[ValidationReport], path: Path) -> Path:
    """`validation.json` for the store and a table artifact for the operator, one row per violation."""
    path.write_text(json.dumps([r.model_dump(mode="json", exclude={"probe", "loudness"}) for r in reports], indent=2,
                               ensure_ascii=False))
    rows = [{"file": r.file, "role": r.role, "verdict": r.verdict, "rule": v.rule, "severity": v.severity,
             "observed": v.observed, "expected": v.expected, "hint": v.hint} for r in reports for v in r.violations]
    rows += [{"file": r.file, "role": r.role, "verdict": r.verdict, "rule": "", "severity": "", "observed": "",
              "expected": "", "hint": ""} for r in reports if not r.violations]
    with contextlib.suppress(RuntimeError, ValueError):
        create_table_artifact(rows, key="validation", description="Media quality contracts: every violation")
    return path


def input_sha256(uri: str, workdir: Path) -> str:
    """SHA-256 of an input (of the local copy validation already fetched, for remote inputs); the faces cache,
    the segment keys and the manifest all ask for the video's, which is read once (a 10-min source is ~1 GB) —
    not at all when the validation worker read it for the probe cache (`uris.sha256_once`)."""
    return sha256_once(local_path(uri, workdir))


def input_provenance(inputs: dict[str, str | None], probes: dict, workdir: Path) -> dict:
    """Per input: URI, SHA-256 and the probe."""
    out = {}
    for role, uri in inputs.items():
        if uri:
            digest = input_sha256(uri, workdir)
            probe = probes.get(role)
            out[role] = {"uri": uri, "sha256": digest, "probe": probe.model_dump(mode="json") if probe else None}
    return out


def lipsync_stage(job: Job, segments: list[Segment]) -> list[EngineResult]:
    """Every segment through the engine, on the backend the settings choose (`tasks/gpu_dispatch.py`)."""
    handoff = gpu_dispatch.HandOff(job.job_id, job.store, job.workdir, segments, job.engine, job.params.lipsync,
                                   recompute=job.params.recompute,
                                   progress=lambda f: job.progress.update("lipsync", f))
    return gpu_dispatch.gpu_backend().run(handoff)


def quality_stage(job: Job, segments: list[Segment], results: list[EngineResult]) -> tuple[list[EngineResult], dict]:
    """The quality gate (`tasks/quality_gate.py`): re-runs go through the same GPU backend as the first run."""
    p = job.params

    def rerun(subset: list[Segment], options) -> list[EngineResult]:
        return gpu_dispatch.gpu_backend().run(gpu_dispatch.HandOff(job.job_id, job.store, job.workdir, subset,
                                                                   job.engine, options, recompute=p.recompute))

    def measure(result: EngineResult, seg: Segment) -> quality_gate.SegmentVerdict:
        return quality_gate.measure_segment(result, seg, p.lipsync.face, job.workdir / "quality")

    results, block = quality_gate.gate(results, segments, p.lipsync, p.quality_gate, rerun, measure,
                                       progress=lambda f: job.progress.update("quality", f))
    if block.get("needs_review"):
        job.notices.append(f"lip-sync needs review in segment(s) {', '.join(map(str, block['needs_review']))}: "
                           f"still out of sync after {p.quality_gate.retries} retries (manifest: quality)")
    return results, block


def report_stage(job: Job, manifest: dict, local: dict, final, tracked: faces.TrackedFaces | None,
                 validation_doc: Path) -> "qc_report.ReportFiles | None":
    """The QC report beside the deliverable (`tasks/qc_report.py`). A report that cannot be made costs the job
    nothing but a notice (and the traceback in the flow run's log)."""
    try:
        return qc_report.build_report(manifest, original_video=Path(local["video"]), deliverable=Path(final.video_path),
                                      dub_audio=Path(local["audio"]), delivered_audio=None,
                                      face_track=Path(tracked.path) if tracked else None,
                                      out_dir=job.workdir / "report",
                                      validation=json.loads(validation_doc.read_text()))
    except Exception as exc:  # noqa: BLE001 - the deliverable is complete; the report is its companion
        get_run_logger().warning("QC report not made", exc_info=True)
        job.notices.append(f"QC report not made: {type(exc).__name__}: {exc}")
        return None


def sheet_times(original: Path, video) -> list[float]:
    """The QC contact sheet's times in the main part (`tasks/qc_plots.sheet_times`: on the original's keyframes
    where one is near; the final encode makes them keyframes of the deliverable). [] when the original's keyframes
    cannot be read: the report then picks its own times."""
    rate = video.fps_num / video.fps_den
    try:
        keys = qc_plots.keyframe_times(original)
    except Exception:  # noqa: BLE001 - the report is the deliverable's companion: it never costs the job
        get_run_logger().warning("keyframes of %s not read; the QC report picks its own times", original.name,
                                 exc_info=True)
        return []
    return qc_plots.sheet_times(video.frame_count / rate, qc_report.SHEET_FRAMES, rate, keys)


def content_keys(segments: list[Segment], plan, video, video_sha256: str,
                 tracked: faces.TrackedFaces | None) -> list[Segment]:
    """Each segment with its content key (what its frames and audio depend on; keys its engine result)."""
    picture = {"frames": video.frame_count, "fps": f"{video.fps_num}/{video.fps_den}", "width": video.width,
               "height": video.height}
    return [s.model_copy(update={"content_key": segment_results.segment_content_key(
        video_sha256=video_sha256, picture=picture, source_frames=planned.source_frames(),
        audio_path=to_path(s.audio_uri), faces_key=tracked.key if tracked else None)})
        for s, planned in zip(segments, plan.segments)]


def engine_keeps_frames(engine: str) -> bool:
    """True for an engine whose output is its input frames (the passthrough dry run): a plan that synthesizes
    frames (ping-pong, loop, freeze) then needs no segment videos; the final encode reads the frames in plan order.
    A model engine (it works on faces) is never imported here just to ask."""
    spec = get_spec(engine, kind="video")
    if spec.uses_faces:
        return False
    module, _, name = spec.target.partition(":")
    return getattr(getattr(importlib.import_module(module), name), "writes_frames", True) is False


def faces_stage(job: Job, video, inputs_sha: str | None) -> faces.TrackedFaces | None:
    """The face track of the normalized video, for engines that work on faces (cached per reference video)."""
    if not get_spec(job.engine, kind="video").uses_faces:
        return None
    picture = {"frames": video.frame_count, "fps": f"{video.fps_num}/{video.fps_den}", "width": video.width,
               "height": video.height}
    return faces.track_faces_task(video.uri, inputs_sha or sha256_once(to_path(video.uri)), picture,
                                  job.params.lipsync.face, job.store, job.workdir / "faces",
                                  progress=lambda f: job.progress.update("faces", f))


def engine_manifest(job: Job, results: list[EngineResult], tracked: faces.TrackedFaces | None) -> dict:
    """What the engine did, segment by segment (every entry is what the engine returned)."""
    first = results[0] if results else None
    doc = {"name": job.engine, "requested": job.params.engine, "version": first.engine_version if first else None,
           "dry_run": bool(first and first.dry_run), "smoke_model": bool(first and first.smoke_model),
           "notices": job.notices, "options": job.params.lipsync.model_dump(mode="json"),
           "frames_generated": sum(sp.end - sp.start for r in results for sp in r.generated),
           "frames_passed_through": sum(sp.end - sp.start for r in results for sp in r.passed_through),
           "segments": [r.model_dump(mode="json", exclude={"uri"}) for r in results]}  # uri: a temp file
    if first and first.dry_run:
        doc["note"] = "dry run: this engine does not lip-sync (original frames under the new audio)"
    if tracked is not None:
        doc["faces"] = {"cache_hit": tracked.cache_hit, "cache_uri": tracked.cache_uri, "seconds": tracked.seconds,
                        **tracked.summary}
    return doc


def run_stages(job: Job) -> LocalizeResult:
    p = job.params

    # 1. Media quality gate: every input against its data contract; stop before any model work on a fail.
    with job.stage_of("validate"):
        import_in_background(LATER_STAGE_IMPORTS)  # while this thread waits for the validation worker
        inputs = {"video": p.video_uri, "audio": p.audio_uri, "subtitles": p.subtitles_uri,
                  "intro": p.intro_uri, "outro": p.outro_uri}
        faces_checked = p.lipsync.face if get_spec(job.engine, kind="video").uses_faces else None
        reports = validate.validate({r: u for r, u in inputs.items() if u}, p.contract_overrides,
                                    workdir=job.workdir / "validate", faces=faces_checked)
        validation_doc = publish_validation(reports, job.workdir / "validation.json")
        job.store.put_file(validation_doc, f"{job.job_id}/validation.json")
        if any(r.verdict == "fail" for r in reports):
            raise ValidationFailed(reports)
        probes = {r.role: r.probe for r in reports}
        # Remote inputs were fetched once for validation; later stages read those copies.
        local = {role: str(local_path(uri, job.workdir / "validate")) if uri else None for role, uri in inputs.items()}

    # 2. Normalize: delivery audio (EBU R128), model audio (16 kHz mono), conformed video.
    with job.stage_of("normalize"):
        measured = next((r.loudness for r in reports if r.role == "audio"), None)
        audio = normalize.normalize_audio_task(local["audio"], job.workdir / "audio", target_lufs=p.loudness_lufs,
                                               true_peak_db=p.true_peak_db, before=measured)
        video = normalize.normalize_video_task(local["video"], job.workdir / "video", probe=probes.get("video"),
                                               any_codec=engine_keeps_frames(job.engine))

    # 3. The speaker's face in every frame (engines that need it; read from the cache when tracked before).
    with job.stage_of("faces"):
        tracked = faces_stage(job, video, input_sha256(inputs["video"], job.workdir / "validate"))

    # 4. Segment at the dub's silences, with the audio/video length policy applied.
    with job.stage_of("segment"):
        modes = segment.LengthModes(audio_longer=p.audio_longer, video_longer=p.video_longer)
        plan = segment.plan_segments_task(audio.model_uri, video.frame_count, Fraction(video.fps_num, video.fps_den),
                                          p.max_segment_s, modes)
        # frames made by the final encode: a plan that synthesizes frames, or a variable-rate source kept as it is
        in_plan_order = (not plan.is_forward or video.variable_rate) and engine_keeps_frames(job.engine)
        segments = segment.cut_segments_task(plan, video.uri, audio.model_uri, job.workdir / "segments",
                                             write_video=not in_plan_order)
        if tracked is not None:
            segments = faces.segment_tracks(segments, [s.source_frames() for s in plan.segments], tracked.path,
                                            job.workdir / "segments")
        segments = content_keys(segments, plan, video, input_sha256(inputs["video"], job.workdir / "validate"),
                                tracked)

    # 5. Lip-sync every segment with the chosen engine (the GPU pool in a deployment).
    with job.stage_of("lipsync"):
        results = lipsync_stage(job, segments)

    # 6. Quality gate: each generated segment's AV offset measured; failures re-run with the next seed, then flagged.
    with job.stage_of("quality"):
        results, quality = quality_stage(job, segments, results)

    # 7. Join the segments' frames frame-accurately (no re-encode).
    with job.stage_of("merge"):
        if in_plan_order:  # the engine kept its input frames: the normalized video, read in the plan's order
            main_video, main_runs = video.uri, plan.runs
        else:
            main_video, main_runs = merge.merge_results_task(results, job.workdir / "main.mp4"), None

    # 8. One final encode: subtitles, intro/outro, delivery audio.
    with job.stage_of("post"):
        sheet = sheet_times(Path(local["video"]), video)
        final = post.post(main_video, audio.delivery_uri, job.workdir / "final",
                          PostParams(burn_subtitles=p.burn_subtitles, soft_subtitles=p.soft_subtitles,
                                     preset=p.x264_preset, crf=p.crf),
                          subtitles_uri=local["subtitles"], intro_uri=local["intro"], outro_uri=local["outro"],
                          progress=lambda f: job.progress.update("post", f),
                          main_frame_limit=plan.total_frames if main_runs is None else None, main_runs=main_runs,
                          main_rate=Fraction(video.fps_num, video.fps_den), keyframes_at=sheet,
                          main_rotation=video.rotation,
                          main_source_frames=video.frame_count if video.variable_rate else None)

    # 9. Archive: deliverable + sidecars + validation, manifest.json last.
    with job.stage_of("archive"):
        manifest = {
            "job_id": job.job_id,
            "lipline": lipline_version(),
            "params": p.model_dump(mode="json"),
            "engine": engine_manifest(job, results, tracked),
            "quality": quality,
            "inputs": input_provenance(inputs, probes, job.workdir / "validate"),
            "loudness": {"before": audio.before.model_dump(), "after": audio.after.model_dump(),
                         "target_lufs": p.loudness_lufs, "method": audio.method},
            "video": video.model_dump(mode="json"),
            "length_mode": plan.length_mode, "audio_pad_s": plan.audio_pad_s,
            "segments": [s.model_dump(mode="json", exclude={"video_uri", "audio_uri", "face_track_uri"})
                         for s in segments],  # their files lived in the job's temp dir
            "post": {"main_offset_s": final.intro_offset_s, "duration_s": final.duration_s, "fps": final.rate,
                     "sheet_times_s": sheet},
            "timings_s": job.timings,
        }
        files = {"final.mp4": Path(final.video_path), "validation.json": validation_doc}
        files.update({Path(side).name: Path(side) for side in (final.srt_path, final.vtt_path) if side})
        report = report_stage(job, manifest, local, final, tracked, validation_doc)
        if report is not None:
            files["report.html"] = report.html
        stored = archive_stage.archive(job.store, job.job_id, files, manifest)
        if report is not None:
            qc_report.publish_artifacts(report, manifest, stored["report.html"].uri)
        try:
            job.store.delete_prefix(f"{job.job_id}/work")  # segments handed to the GPU pool, if any
        except StoreError as exc:  # the deliverable is complete; the leftover is reported, not hidden
            job.notices.append(f"intermediates left in the store: {exc}")
    first = results[0] if results else None
    return LocalizeResult(job_id=job.job_id, final_uri=stored["final.mp4"].uri, manifest_uri=stored["manifest.json"].uri,
                          engine=job.engine, dry_run=bool(first and first.dry_run),
                          smoke_model=bool(first and first.smoke_model), notices=job.notices)
