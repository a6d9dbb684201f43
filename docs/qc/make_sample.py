"""Regenerate the sample QC images in this folder: `.venv/bin/python docs/qc/make_sample.py`.

A 6 s talking clip of the sample face with its dub (-16 LUFS), its real face track, and a "deliverable" with a 1 s
intro, a different mouth (a dark box opening and closing over the tracked lips) and the dub at -23 LUFS.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyloudnorm

from lipline.models.face.track import compute_face_track
from lipline.samples import bumper, face_png, ffmpeg, speech_like, talking_video, write_audio
from lipline.tasks.qc_plots import track_box
from lipline.tasks.qc_report import build_report

HERE = Path(__file__).resolve().parent
DUR, SR = 6.0, 48000


def at_lufs(samples, lufs):
    return pyloudnorm.normalize.loudness(samples, pyloudnorm.Meter(SR).integrated_loudness(samples), lufs)


def main() -> None:
    d = Path(tempfile.mkdtemp(prefix="qc-sample-"))
    speech = speech_like(DUR, sr=SR, seed=3)
    dub = write_audio(d / "dub.wav", at_lufs(speech, -16.0).astype("float32"), sr=SR)
    delivered = write_audio(d / "delivered.wav", at_lufs(speech, -23.0).astype("float32"), sr=SR)
    face = face_png(d / "face.png")
    original = talking_video(d / "normalized.mp4", face, DUR, audio=dub)
    track = compute_face_track(original, "largest", landmark_every=2)
    track.save(d / "track.npz")
    cx, cy, side = track_box(track, 1.0)
    main = talking_video(d / "main.mp4", face, DUR, audio=delivered,
                         extra_vf=f"drawbox=x={cx - side / 4:.0f}:y={cy - 4:.0f}:w={side / 2:.0f}:"
                                  "h='4+8*abs(sin(t*12))':color=black@0.9:t=fill")
    intro = bumper(d / "intro.mp4", 1.0, 640, 360, 25, with_audio=True)
    final = d / "final.mp4"
    ffmpeg("-i", intro, "-i", main, "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]",
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", final)
    manifest = {"job_id": "sample", "engine": {"name": "latentsync", "segments": []},
                "video": {"fps": 25.0, "frame_count": int(DUR * 25), "width": 640, "height": 360},
                "post": {"main_offset_s": 1.0}, "loudness": {"target_lufs": -23.0}, "timings_s": {}}
    files = build_report(manifest, original_video=original, deliverable=final, dub_audio=dub, delivered_audio=None,
                         face_track=d / "track.npz", out_dir=d / "qc")
    for path in (files.contact_sheet, files.loudness_plot):
        shutil.copy(path, HERE / path.name)
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
