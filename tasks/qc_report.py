"""The job's QC report: ``report.html`` (self-contained, opens offline) beside the deliverable, and Prefect artifacts.

`build_report` writes into `out_dir`:

* ``contact-sheet.png`` — before/after mouth crops at evenly spaced times of the main part (`tasks/qc_plots.py`);
* ``loudness.png`` — momentary loudness (BS.1770, 400 ms / 100 ms) of the original dub and the delivered audio,
  with the target line;
* ``report.html`` — both images as base64 data URIs (no external CSS, JS or images), the per-segment table (engine
  record joined with the quality gate's record), totals (wall time, GPU seconds, seconds of video per GPU second,
  estimated cost at a $/GPU-hour price) and every warn/fail validation violation. Every string that comes from the
  manifest or the validation reports is HTML-escaped.

`publish_artifacts` adds the markdown artifact ``qc-report`` and the table artifact ``qc-segments`` (silently
skipped outside a Prefect run). Rendering never imports Prefect.
"""

from __future__ import annotations

import base64
import contextlib
import html
from dataclasses import dataclass
from pathlib import Path

from lipline.tasks.qc_plots import contact_sheet, loudness_plot

NOT_MEASURED = "not measured"
SHEET_FRAMES = 8  # columns of the contact sheet
SEGMENT_COLUMNS = (("segment", "Segment"), ("engine", "Engine"), ("frames", "Frames"),
                   ("generated", "Generated"), ("passed_through", "Passed through"), ("gpu_s", "GPU s"),
                   ("reused", "Reused"), ("worker", "Worker"), ("offset_frames", "Offset (frames)"),
                   ("offset_ms", "Offset (ms)"), ("confidence", "Confidence"), ("verdict", "Sync verdict"),
                   ("retries", "Retries"), ("needs_review", "Needs review"), ("reason", "Reason"))


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    contact_sheet: Path | None
    loudness_plot: Path


# ------------------------------------------------------------------------------------------------ numbers


def video_fps(manifest: dict) -> float | None:
    fps = (manifest.get("video") or {}).get("fps")
    return float(fps) if fps else None


def main_offset_s(manifest: dict) -> float:
    """Where the main part starts in the deliverable: ``post.main_offset_s``, else the intro's length in whole
    frames of the main rate (as `tasks/post.py` conforms it), else 0."""
    post = manifest.get("post") or {}
    if post.get("main_offset_s") is not None:
        return float(post["main_offset_s"])
    intro = (manifest.get("inputs") or {}).get("intro") or {}
    duration = (intro.get("probe") or {}).get("duration_s")
    if not duration:
        return 0.0
    fps = video_fps(manifest)
    return round(float(duration) * fps) / fps if fps else float(duration)


def main_duration_s(manifest: dict, original_video: Path) -> float:
    """Length of the main part: the normalized video's frames / fps, else the container's duration."""
    video = manifest.get("video") or {}
    if video.get("frame_count") and video.get("fps"):
        return float(video["frame_count"]) / float(video["fps"])
    import av

    with av.open(str(original_video), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / 1e6


def _span_frames(spans: list[dict] | None) -> int:
    return sum(int(s["end"]) - int(s["start"]) for s in spans or [])


def _worker(worker: dict | None) -> str:
    worker = worker or {}
    parts = [str(worker[k]) for k in ("worker", "host", "process") if worker.get(k) not in (None, "")]
    return " / ".join(parts)


def segment_rows(manifest: dict) -> list[dict]:
    """One row per engine segment, joined by ``segment_index`` with the quality gate's record (absent: the
    sync columns say "not measured")."""
    quality = {q.get("segment_index"): q for q in (manifest.get("quality") or {}).get("segments", [])}
    rows = []
    for seg in (manifest.get("engine") or {}).get("segments", []):
        index = seg.get("segment_index")
        q = quality.get(index)
        row = {"segment": index, "engine": seg.get("engine", ""), "frames": int(seg.get("frames", 0)),
               "generated": _span_frames(seg.get("generated")),
               "passed_through": _span_frames(seg.get("passed_through")),
               "gpu_s": round(float(seg.get("seconds", 0.0)), 2), "reused": bool(seg.get("reused", False)),
               "worker": _worker(seg.get("worker"))}
        if q is None:
            row.update({k: NOT_MEASURED for k in ("offset_frames", "offset_ms", "confidence", "verdict")})
            row.update({"retries": "", "needs_review": "", "reason": ""})
        else:
            row.update({"offset_frames": q.get("offset_frames"), "offset_ms": q.get("offset_ms"),
                        "confidence": None if q.get("confidence") is None else round(float(q["confidence"]), 2),
                        "verdict": q.get("verdict", ""), "retries": q.get("retries", 0),
                        "needs_review": bool(q.get("needs_review", False)), "reason": q.get("reason", "")})
        rows.append(row)
    return rows


def totals(manifest: dict, price_per_gpu_hour: float) -> dict:
    """Wall time (sum of stage timings), GPU seconds (engine seconds of segments not reused), seconds of video per
    GPU second and the estimated cost at `price_per_gpu_hour`."""
    segments = (manifest.get("engine") or {}).get("segments", [])
    wall = sum(float(v) for v in (manifest.get("timings_s") or {}).values())
    gpu = sum(float(s.get("seconds", 0.0)) for s in segments if not s.get("reused"))
    fps = video_fps(manifest)
    frames = sum(int(s.get("frames", 0)) for s in segments) or int((manifest.get("video") or {}).get("frame_count", 0))
    video_s = frames / fps if fps else None
    return {"wall_s": round(wall, 2), "gpu_s": round(gpu, 2), "video_s": None if video_s is None else round(video_s, 3),
            "video_s_per_gpu_s": round(video_s / gpu, 3) if video_s is not None and gpu > 0 else None,
            "price_per_gpu_hour": price_per_gpu_hour, "cost_usd": round(gpu / 3600 * price_per_gpu_hour, 4),
            "segments": len(segments), "reused": sum(1 for s in segments if s.get("reused"))}


def validation_rows(validation: list[dict] | None) -> list[dict]:
    """Every warn or fail violation of the job's ``validation.json`` reports, with its file and role."""
    return [{"file": r.get("file", ""), "role": r.get("role", ""), "rule": v.get("rule", ""),
             "severity": v.get("severity", ""), "observed": v.get("observed", ""), "expected": v.get("expected", ""),
             "hint": v.get("hint", "")}
            for r in validation or [] for v in r.get("violations", []) if v.get("severity") in ("warn", "fail")]


# ------------------------------------------------------------------------------------------------ HTML


def _e(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(str(value), quote=True)


def _table(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> str:
    head = "".join(f"<th>{_e(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(row.get(key))}</td>" for key, _ in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _totals_rows(t: dict) -> list[dict]:
    return [{"k": "Wall time (s, sum of stages)", "v": t["wall_s"]},
            {"k": "GPU seconds (engine, not counting reused segments)", "v": t["gpu_s"]},
            {"k": "Video seconds", "v": t["video_s"]},
            {"k": "Seconds of video per GPU second", "v": t["video_s_per_gpu_s"]},
            {"k": f"Estimated cost (USD at ${t['price_per_gpu_hour']:g}/GPU-hour)", "v": f"{t['cost_usd']:.4f}"},
            {"k": "Segments (reused)", "v": f"{t['segments']} ({t['reused']})"}]


def _quality_summary(manifest: dict) -> str:
    quality = manifest.get("quality")
    if not quality:
        return f"<p>Lip-sync quality: {NOT_MEASURED}.</p>"
    threshold = ", ".join(f"{k} = {v}" for k, v in (quality.get("threshold") or {}).items())
    text = (f"<p>Lip-sync quality: metric {_e(quality.get('metric'))}; threshold {_e(threshold)}; retries allowed "
            f"{_e(quality.get('retries_allowed'))}; on fail: {_e(quality.get('on_fail'))}.</p>")
    if quality.get("needs_review"):
        text += f"<p>Segments needing review: {_e(', '.join(map(str, quality['needs_review'])))}.</p>"
    whole = quality.get("deliverable")
    if whole:
        text += (f"<p>Deliverable: <b>{_e(whole.get('verdict'))}</b>, offset {_e(whole.get('offset_frames'))} frames "
                 f"({_e(whole.get('offset_ms'))} ms), confidence {_e(whole.get('confidence'))} — "
                 f"{_e(whole.get('reason'))}</p>")
    return text


STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px;text-align:left}th{background:#eee}"
         "img{max-width:100%;border:1px solid #ccc}.caption{color:#555;font-size:13px}")


def _version_text(version) -> str:
    """``0.1.0 (commit cbf41d81bd25)`` from the manifest's ``lipline`` record (a plain value is shown as is)."""
    if isinstance(version, dict):
        commit = version.get("git_commit")
        return f"{version.get('version')}" + (f" (commit {str(commit)[:12]})" if commit else "")
    return str(version)


def render_html(manifest: dict, *, sheet: Path | None, sheet_caption: str, loudness: Path, loudness_text: str,
                price_per_gpu_hour: float, validation: list[dict] | None, deliverable_name: str) -> str:
    t = totals(manifest, price_per_gpu_hour)
    warnings = validation_rows(validation)
    warn_html = (_table(warnings, (("file", "File"), ("role", "Role"), ("severity", "Severity"), ("rule", "Rule"),
                                   ("observed", "Observed"), ("expected", "Expected"), ("hint", "Hint")))
                 if warnings else "<p>No validation warnings.</p>")
    sheet_html = (f"{_img(sheet, 'contact sheet')}<p class=caption>Top row: before (original video); bottom row: "
                  f"after (deliverable). {_e(sheet_caption)}.</p>" if sheet else "<p>No contact sheet.</p>")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>QC report {_e(manifest.get('job_id'))}</title><style>{STYLE}</style></head><body>"
            f"<h1>QC report — job {_e(manifest.get('job_id'))}</h1>"
            f"<p>Deliverable: {_e(deliverable_name)}; engine {_e((manifest.get('engine') or {}).get('name'))}; "
            f"Lipline {_e(_version_text(manifest.get('lipline')))}.</p>"
            f"<h2>Totals</h2>{_table(_totals_rows(t), (('k', 'Measure'), ('v', 'Value')))}"
            f"<h2>Segments</h2>{_quality_summary(manifest)}{_table(segment_rows(manifest), SEGMENT_COLUMNS)}"
            f"<h2>Mouth region, before / after</h2>{sheet_html}"
            f"<h2>Loudness</h2>{_img(loudness, 'loudness plot')}<p class=caption>{_e(loudness_text)}</p>"
            f"<h2>Validation warnings</h2>{warn_html}</body></html>\n")


def build_report(manifest: dict, *, original_video: Path, deliverable: Path, dub_audio: Path,
                 delivered_audio: Path | None, face_track: Path | None, out_dir: Path,
                 price_per_gpu_hour: float = 2.5, sheet_frames: int = SHEET_FRAMES,
                 validation: list[dict] | None = None) -> ReportFiles:
    """Write ``report.html``, ``contact-sheet.png`` and ``loudness.png`` into `out_dir`.

    The contact sheet's times are the manifest's ``post.sheet_times_s`` (the keyframes the final encode forced)
    when it has them. `original_video` is the normalized video the face track (`face_track`, a `FaceTrack` file; None: crops of the
    centre of the lower third) refers to; `delivered_audio` None means the deliverable's own audio, whose time axis
    is then shifted by the intro. `validation` is the job's ``validation.json`` content.
    """
    from lipline.models.face.facetrack import FaceTrack

    out_dir.mkdir(parents=True, exist_ok=True)
    track = FaceTrack.load(face_track) if face_track is not None else None
    if track is not None:
        size = (int(track.width), int(track.height))
    else:
        video = manifest.get("video") or {}
        size = (int(video["width"]), int(video["height"])) if video.get("width") else _frame_size(original_video)
    offset = main_offset_s(manifest)
    sheet = out_dir / "contact-sheet.png"
    caption = contact_sheet(original_video, deliverable, sheet, main_offset_s=offset,
                            main_duration_s=main_duration_s(manifest, original_video), size=size, track=track,
                            frames=sheet_frames, times=(manifest.get("post") or {}).get("sheet_times_s"))
    target = (manifest.get("loudness") or {}).get("target_lufs")
    plot = out_dir / "loudness.png"
    medians = loudness_plot(dub_audio, delivered_audio or deliverable, plot, target_lufs=target,
                            delivered_offset_s=0.0 if delivered_audio is not None else offset)
    loudness_text = "Median momentary loudness: " + "; ".join(
        f"{name} {'–' if v is None else f'{v:.1f}'} LUFS" for name, v in medians.items())
    if target is not None:
        loudness_text += f"; target {target} LUFS"
    page = out_dir / "report.html"
    page.write_text(render_html(manifest, sheet=sheet, sheet_caption=caption, loudness=plot,
                                loudness_text=loudness_text, price_per_gpu_hour=price_per_gpu_hour,
                                validation=validation, deliverable_name=deliverable.name), encoding="utf-8")
    return ReportFiles(html=page, contact_sheet=sheet, loudness_plot=plot)


def _frame_size(path: Path) -> tuple[int, int]:
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.width), int(ctx.height)


# ------------------------------------------------------------------------------------------------ Prefect


def _md_cell(value) -> str:
    return _e(value).replace("|", "\\|").replace("\n", " ")


def markdown_summary(manifest: dict, report_uri: str | None, price_per_gpu_hour: float = 2.5) -> str:
    """The ``qc-report`` artifact: totals, the per-segment table and the link to the report."""
    lines = [f"# QC report — job {_md_cell(manifest.get('job_id'))}", ""]
    if report_uri:
        lines += [f"Full report (self-contained HTML): [{_md_cell(report_uri)}]({report_uri})", ""]
    lines += ["| Measure | Value |", "|---|---|"]
    total_rows = _totals_rows(totals(manifest, price_per_gpu_hour))
    lines += [f"| {_md_cell(r['k'])} | {_md_cell(r['v'])} |" for r in total_rows]
    lines += ["", "| " + " | ".join(title for _, title in SEGMENT_COLUMNS) + " |",
              "|" + "---|" * len(SEGMENT_COLUMNS)]
    lines += ["| " + " | ".join(_md_cell(row.get(key)) for key, _ in SEGMENT_COLUMNS) + " |"
              for row in segment_rows(manifest)]
    return "\n".join(lines) + "\n"


def publish_artifacts(files: ReportFiles, manifest: dict, report_uri: str | None,
                      price_per_gpu_hour: float = 2.5) -> None:
    """Markdown artifact ``qc-report`` and table artifact ``qc-segments`` (no-op outside a flow or task run:
    Prefect 3 would otherwise create them against a server, deprecated and slow)."""
    from prefect import context
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.exceptions import MissingContextError

    try:
        context.get_run_context()
    except MissingContextError:
        return
    with contextlib.suppress(RuntimeError, ValueError):
        create_markdown_artifact(markdown=markdown_summary(manifest, report_uri or str(files.html),
                                                           price_per_gpu_hour),
                                 key="qc-report", description="Lip-sync QC: totals, segments, report link")
        create_table_artifact(table=segment_rows(manifest), key="qc-segments",
                              description="Per segment: engine, frames, GPU seconds, sync offset, retries")


__all__ = ["ReportFiles", "build_report", "main_duration_s", "main_offset_s", "markdown_summary",
           "publish_artifacts", "render_html", "segment_rows", "totals", "validation_rows"]
