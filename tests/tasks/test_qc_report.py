"""The QC report renders from real media: a talking clip, its real face track, a deliverable that differs."""

from __future__ import annotations

import base64
import copy
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from lipline.samples import bumper, face_png, ffmpeg, speech_like, talking_video, write_audio
from lipline.tasks.qc_plots import HEADER_H, LABEL_W, NO_FACE_CAPTION, TILE, frames_at, momentary_loudness, track_box
from lipline.tasks.qc_report import build_report, markdown_summary, publish_artifacts, segment_rows, totals

HOSTILE = "<script>alert('x')</script>"
DUR = 3.0


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from lipline.models.face.track import compute_face_track

    d = tmp_path_factory.mktemp("qc-media")
    face = face_png(d / "face.png")
    dub = write_audio(d / "dub.wav", speech_like(DUR, level_db=-20.0, seed=1))
    delivered = write_audio(d / "delivered.wav", speech_like(DUR, level_db=-26.0, seed=1))
    original = talking_video(d / "normalized.mp4", face, DUR, audio=dub)
    track_path = d / "track.npz"
    track = compute_face_track(original, "largest", landmark_every=2)
    track.save(track_path)
    # the "lip-synced" deliverable: another mouth (a dark box opening and closing over the tracked lips)
    cx, cy, side = track_box(track, 1.0)
    final = talking_video(d / "final.mp4", face, DUR, audio=delivered,
                          extra_vf=f"drawbox=x={cx - side / 4:.0f}:y={cy - 4:.0f}:w={side / 2:.0f}:"
                                   "h='4+8*abs(sin(t*12))':color=black@0.9:t=fill")
    intro = bumper(d / "intro.mp4", 1.0, 640, 360, 25, with_audio=True)
    with_intro = d / "final-intro.mp4"
    ffmpeg("-i", intro, "-i", original, "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]",
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12",
           "-pix_fmt", "yuv420p", "-c:a", "aac", with_intro)
    return {"dir": d, "dub": dub, "delivered": delivered, "original": original, "final": final,
            "with_intro": with_intro, "track": track_path}


def manifest_for(quality: bool = True) -> dict:
    doc = {
        "job_id": f"job-{HOSTILE}",
        "lipline": "0.1.0",
        "engine": {"name": "latentsync", "segments": [
            {"segment_index": 0, "engine": "latentsync", "frames": 40, "seconds": 4.0, "reused": False,
             "generated": [{"start": 0, "end": 30, "reason": "generated"}],
             "passed_through": [{"start": 30, "end": 40, "reason": "no face"}],
             "worker": {"worker": "gpu-0", "host": HOSTILE}},
            {"segment_index": 1, "engine": "latentsync", "frames": 35, "seconds": 2.0, "reused": True,
             "generated": [{"start": 0, "end": 35, "reason": "generated"}], "passed_through": [], "worker": {}},
        ]},
        "video": {"fps": 25.0, "frame_count": 75, "width": 640, "height": 360},
        "loudness": {"target_lufs": -23.0},
        "timings_s": {"validate": 1.5, "normalize": 2.25, "lipsync": 10.0},
    }
    if quality:
        doc["quality"] = {
            "metric": "mouth-energy NCC (weight-free)", "threshold": {"max_offset_frames": 1},
            "retries_allowed": 2, "on_fail": "flag", "needs_review": [1],
            "segments": [
                {"segment_index": 0, "offset_frames": 0, "offset_ms": 0.0, "confidence": 7.123, "peak_corr": 0.8,
                 "verdict": "pass", "reason": "in sync", "retries": 0, "seeds": [1], "needs_review": False},
                {"segment_index": 1, "offset_frames": 3, "offset_ms": 120.0, "confidence": 6.5, "peak_corr": 0.5,
                 "verdict": "fail", "reason": "the audio is 3 frames late <b>", "retries": 2, "seeds": [1, 2, 3],
                 "needs_review": True}],
            "deliverable": {"offset_frames": 1, "offset_ms": 40.0, "confidence": 9.0, "peak_corr": 0.7,
                            "verdict": "pass", "reason": "within one frame", "needs_review": False}}
    return doc


VALIDATION = [{"file": "dub.wav", "role": "audio", "verdict": "warn", "violations": [
    {"rule": "audio.loudness", "severity": "warn", "observed": "-14 LUFS", "expected": "-23 ± 5",
     "hint": f"quiet it down {HOSTILE}"},
    {"rule": "audio.note", "severity": "info", "observed": "x", "expected": "y", "hint": "informational only"}]},
    {"file": "video.mp4", "role": "video", "verdict": "pass", "violations": []}]


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None
        self.srcs: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.srcs.append(attrs.get("src", ""))
        for name in ("href", "src"):
            if tag != "img" and name in attrs:
                self.links.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def halves(sheet_path: Path) -> tuple[np.ndarray, np.ndarray]:
    sheet = cv2.imread(str(sheet_path))
    assert sheet is not None and sheet.size > 0
    assert sheet.shape[0] == HEADER_H + 2 * TILE
    before = sheet[HEADER_H:HEADER_H + TILE, LABEL_W:].astype(np.float64)
    after = sheet[HEADER_H + TILE:HEADER_H + 2 * TILE, LABEL_W:].astype(np.float64)
    return before, after


def test_report_renders_with_real_media(media, tmp_path):
    files = build_report(manifest_for(), original_video=media["original"], deliverable=media["final"],
                         dub_audio=media["dub"], delivered_audio=None, face_track=media["track"],
                         out_dir=tmp_path / "qc", price_per_gpu_hour=3.6, sheet_frames=6, validation=VALIDATION)
    assert files.html == tmp_path / "qc" / "report.html" and files.html.exists()
    text = files.html.read_text(encoding="utf-8")
    page = Page(text)

    # self-contained: the two PNGs inline, nothing fetched from anywhere
    assert len(page.srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    for src in page.srcs:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.size > 0
    assert not page.links and "http" not in text and "<link" not in text
    assert "script" not in page.tags
    assert HOSTILE in "".join(page.text)  # shown as text, escaped in the source
    assert "&lt;script&gt;" in text and "<script>" not in text

    rows = {r[0]: r for r in page.rows if r}
    seg0, seg1 = rows["0"], rows["1"]
    assert seg0[:8] == ["0", "latentsync", "40", "30", "10", "4.0", "no", f"gpu-0 / {HOSTILE}"]
    assert seg0[8:14] == ["0", "0.0", "7.12", "pass", "0", "no"]
    assert seg1[5:7] == ["2.0", "yes"] and seg1[8:14] == ["3", "120.0", "6.5", "fail", "2", "yes"]
    assert seg1[14] == "the audio is 3 frames late <b>"
    assert rows["Wall time (s, sum of stages)"][1] == "13.75"
    assert rows["GPU seconds (engine, not counting reused segments)"][1] == "4.0"
    assert rows["Video seconds"][1] == "3.0"
    assert rows["Seconds of video per GPU second"][1] == "0.75"
    assert rows["Estimated cost (USD at $3.6/GPU-hour)"][1] == "0.0040"
    # validation: the warn violation, not the info note
    assert rows["dub.wav"][2:4] == ["warn", "audio.loudness"] and HOSTILE in rows["dub.wav"][6]
    assert "informational only" not in text

    # the PNG files: decodable, non-empty; the mouths differ between before and after
    plot = cv2.imread(str(files.loudness_plot))
    assert plot is not None and plot.shape[0] > 100 and plot.std() > 0
    before, after = halves(files.contact_sheet)
    assert before.std() > 0 and after.std() > 0
    assert np.abs(before - after).mean() > 5
    assert "face track" in text and NO_FACE_CAPTION not in text
    assert "Segments needing review: 1." in text and "Deliverable: <b>pass</b>, offset 1 frames (40.0 ms)" in text


def test_contact_sheet_halves_equal_when_nothing_changed(media, tmp_path):
    files = build_report(manifest_for(), original_video=media["original"], deliverable=media["original"],
                         dub_audio=media["dub"], delivered_audio=media["dub"], face_track=media["track"],
                         out_dir=tmp_path, sheet_frames=4)
    before, after = halves(files.contact_sheet)
    assert before.std() > 0
    assert np.abs(before - after).mean() == 0


def test_intro_offset_lines_up_the_main_part(media, tmp_path):
    doc = manifest_for()
    doc["inputs"] = {"intro": {"probe": {"duration_s": 1.0}}}  # no post.main_offset_s: from the intro length
    aligned = build_report(doc, original_video=media["original"], deliverable=media["with_intro"],
                           dub_audio=media["dub"], delivered_audio=None, face_track=media["track"],
                           out_dir=tmp_path / "aligned", sheet_frames=4)
    doc["post"] = {"main_offset_s": 0.0}  # wrong on purpose: the sheet's "after" row shows the intro card
    shifted = build_report(doc, original_video=media["original"], deliverable=media["with_intro"],
                           dub_audio=media["dub"], delivered_audio=None, face_track=media["track"],
                           out_dir=tmp_path / "shifted", sheet_frames=4)
    good = np.abs(np.subtract(*halves(aligned.contact_sheet))).mean()
    bad = np.abs(np.subtract(*halves(shifted.contact_sheet))).mean()
    assert good < 3 < bad


def test_without_face_track_or_quality(media, tmp_path):
    files = build_report(manifest_for(quality=False), original_video=media["original"], deliverable=media["final"],
                         dub_audio=media["dub"], delivered_audio=media["delivered"], face_track=None,
                         out_dir=tmp_path, sheet_frames=3)
    text = files.html.read_text(encoding="utf-8")
    assert NO_FACE_CAPTION in text
    assert "not measured" in text and "No validation warnings." in text
    before, _ = halves(files.contact_sheet)
    # the first column is the centre of the lower third of the frame at the middle of the first sixth
    frame = frames_at(media["original"], [DUR / 6])[0]
    h, w = frame.shape[:2]
    expected = cv2.resize(frame[h - h // 3 - 0:h, w // 2 - h // 6:w // 2 + h // 6], (TILE, TILE),
                          interpolation=cv2.INTER_AREA)
    assert np.abs(before[:, :TILE] - expected).mean() < 1
    assert all(r["verdict"] == "not measured" for r in segment_rows(manifest_for(quality=False)))


def test_frames_of_a_portrait_phone_clip_stand_upright(media, tmp_path):
    """A display matrix (a phone held upright): the contact sheet's frames are turned as ffmpeg's autorotate shows
    them, not the stored landscape picture."""
    rotated = tmp_path / "portrait.mp4"
    ffmpeg("-display_rotation", "90", "-i", media["original"], "-c", "copy", rotated)
    shown = tmp_path / "shown.png"
    ffmpeg("-i", rotated, "-frames:v", "1", shown)
    expected = cv2.imread(str(shown))
    frame = frames_at(rotated, [0.0])[0]
    assert frame.shape == expected.shape and frame.shape[0] > frame.shape[1]
    assert np.abs(frame.astype(float) - expected).mean() < 2


def test_momentary_loudness_of_a_tone_at_minus_23(tmp_path):
    import pyloudnorm

    from lipline.tasks.loudness import read_audio

    sr = 48000
    t = np.arange(int(4.0 * sr)) / sr
    tone = 0.1 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.repeat(tone[:, None], 2, axis=1)
    stereo = pyloudnorm.normalize.loudness(stereo, pyloudnorm.Meter(sr).integrated_loudness(stereo), -23.0)
    path = write_audio(tmp_path / "tone.wav", stereo.astype(np.float32), sr=sr)
    samples, rate = read_audio(path)
    reference = pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64))
    times, lufs = momentary_loudness(path, chunk_s=0.7)  # chunk edges inside windows
    assert times[0] == pytest.approx(0.4) and np.diff(times) == pytest.approx(0.1)
    assert len(lufs) == pytest.approx(37, abs=1)
    assert abs(reference - -23.0) < 0.1
    assert np.all(np.abs(lufs - reference) < 0.1)


def test_markdown_artifact_and_publish(tmp_path, monkeypatch):
    import prefect.artifacts
    import prefect.context

    from lipline.tasks.qc_report import ReportFiles

    doc = manifest_for()
    md = markdown_summary(doc, "s3://bucket/job/report.html", 3.6)
    assert "[s3://bucket/job/report.html](s3://bucket/job/report.html)" in md
    assert "| 0 | latentsync | 40 | 30 | 10 | 4.0 | no |" in md and "| 13.75 |" in md and "<script>" not in md
    assert totals(doc, 3.6)["cost_usd"] == pytest.approx(0.004)

    calls = []
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **kw: calls.append(("md", kw)))
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **kw: calls.append(("table", kw)))
    files = ReportFiles(html=tmp_path / "report.html", contact_sheet=None, loudness_plot=tmp_path / "loudness.png")
    publish_artifacts(files, copy.deepcopy(doc), "s3://bucket/job/report.html")
    assert calls == []  # outside a flow or task run: nothing is created
    monkeypatch.setattr(prefect.context, "get_run_context", lambda: object())
    publish_artifacts(files, copy.deepcopy(doc), "s3://bucket/job/report.html")
    (kind_md, md_kw), (kind_table, table_kw) = calls
    assert (kind_md, md_kw["key"], kind_table, table_kw["key"]) == ("md", "qc-report", "table", "qc-segments")
    assert "(s3://bucket/job/report.html)" in md_kw["markdown"]
    assert [row["segment"] for row in table_kw["table"]] == [0, 1] and table_kw["table"][1]["retries"] == 2
