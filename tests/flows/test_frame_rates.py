"""Every common frame rate end to end through the real `localize` flow (passthrough engine, in-process Prefect):
the deliverable keeps the source's exact rational rate (30/1 stays 30/1, 30000/1001 stays 30000/1001), has the
frames the dub's length asks for on an exact timestamp grid, and its audio lasts as long as its video.

Short, small clips (2 s of 192x108 video, a 2.5 s dub) keep the nine runs fast. The dub is longer than the video,
so every run cuts segments (ping-pong), merges them and makes the one final encode; the sources cover the three
ways a video enters the pipeline: H.264 MP4 (stream copy), H.264 MKV with 1 ms timestamps (stream copy from a
coarse time base) and MPEG-4 Part 2 (re-encoded to CFR by normalize).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lipline.flows.localize import localize
from lipline.params import LocalizeParams
from tests import media_factory as mf

pytestmark = pytest.mark.integration

DUB_S = Fraction(5, 2)
SAMPLE_RATE = 48000
AAC_FRAME = 1024  # the final audio may end on a whole AAC frame
OVERRIDES = {"video.short_side.min_px": 64, "audio.duration.min_s": 1}
SOURCES = [("24000/1001", "mkv", "h264"), ("24", "mp4", "mpeg4"), ("25", "mp4", "h264"),
           ("30000/1001", "mkv", "h264"), ("30", "mp4", "mpeg4"), ("50", "mkv", "h264"),
           ("60000/1001", "mp4", "mpeg4"), ("60", "mp4", "h264")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rates")
    return {"dir": d, "face": mf.face_png(d / "face.png"),
            "dub": mf.write_audio(d / "dub.wav", mf.speech_like(float(DUB_S), pauses=((1.0, 1.3),)))}


def source(inputs, rate: str, ext: str, codec: str) -> Path:
    path = inputs["dir"] / f"talk-{rate.replace('/', '_')}-{codec}.{ext}"
    if not path.exists():
        extra = ("-c:v", "mpeg4", "-q:v", "3") if codec == "mpeg4" else ()
        mf.talking_video(path, inputs["face"], 2.0, width=192, height=108, fps=rate, extra=extra)
    return path


def run_job(inputs, video: Path, tmp_path: Path, **extra) -> tuple[Path, dict]:
    result = localize(LocalizeParams(video_uri=str(video), audio_uri=str(inputs["dub"]), store=str(tmp_path / "store"),
                                     job_id="rates", max_segment_s=1.2, contract_overrides=OVERRIDES, **extra))
    final = Path(result.final_uri)
    return final, json.loads((final.parent / "manifest.json").read_text())


def check_exact(final: Path, rate: Fraction, frames: int) -> None:
    """Container rate, exact timestamp grid, frame count, and audio as long as the video."""
    with av.open(str(final)) as c:
        stream = c.streams.video[0]
        assert (stream.average_rate, stream.guessed_rate) == (rate, rate)
        tb = Fraction(stream.time_base)
        assert (1 / rate) / tb == int((1 / rate) / tb), f"time base {tb} cannot hold a {rate} fps grid"
        pts = sorted(f.pts for f in c.decode(stream))
    assert len(pts) == frames
    assert [Fraction(p - pts[0]) * tb for p in pts] == [Fraction(i) / rate for i in range(frames)]
    with av.open(str(final)) as c:
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
    video_samples = Fraction(frames) / rate * SAMPLE_RATE
    assert abs(samples - video_samples) < AAC_FRAME, (samples, float(video_samples))


@pytest.mark.parametrize("rate,ext,codec", SOURCES)
def test_deliverable_keeps_the_exact_source_rate(inputs, tmp_path, rate, ext, codec):
    exact = Fraction(rate)
    final, manifest = run_job(inputs, source(inputs, rate, ext, codec), tmp_path)
    frames = math.ceil(DUB_S * exact)  # the dub's length, in whole frames
    check_exact(final, exact, frames)
    assert manifest["inputs"]["video"]["probe"]["video"]["rate"] == f"{exact.numerator}/{exact.denominator}"
    assert Fraction(manifest["video"]["fps_num"], manifest["video"]["fps_den"]) == exact
    assert manifest["video"]["reencoded"] is (codec != "h264")
    assert manifest["length_mode"] == "pingpong" and len(manifest["segments"]) >= 2


def test_a_phone_hevc_source_is_encoded_once(inputs, tmp_path):
    """HEVC, 10-bit, 30000/1001: the passthrough job keeps the source's stream as its intermediate (no conforming
    encode); the final encode decodes it, converts it to 8-bit and reads it in ping-pong order, frame-exact."""
    path = inputs["dir"] / "talk-hevc-10bit.mov"
    mf.talking_video(path, inputs["face"], 2.0, width=192, height=108, fps="30000/1001",
                     extra=("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                            "-pix_fmt", "yuv420p10le"))
    exact = Fraction(30000, 1001)
    final, manifest = run_job(inputs, path, tmp_path)
    check_exact(final, exact, math.ceil(DUB_S * exact))
    assert manifest["inputs"]["video"]["probe"]["video"]["codec"] == "hevc"
    assert manifest["video"]["reencoded"] is False and manifest["video"]["reasons"] == []
    assert manifest["length_mode"] == "pingpong"
    with av.open(str(final)) as c:
        assert (c.streams.video[0].codec_context.name, c.streams.video[0].format.name) == ("h264", "yuv420p")


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(float)


@pytest.mark.parametrize("ccw,seconds", [(90, 2.0), (180, 2.0), (270, 2.0), (270, 4.0)],
                         ids=["90-pingpong", "180-pingpong", "270-pingpong", "270-trim"])
def test_a_portrait_phone_clip_is_delivered_upright(inputs, tmp_path, ccw, seconds):
    """A display matrix, kept in the intermediate (no conforming encode): the final encode turns the picture as ffmpeg's
    autorotate does, both when it reads the file (trim: frames in order) and when frames are piped (ping-pong); the
    intro is fitted into the portrait picture."""
    plain = mf.talking_video(inputs["dir"] / f"upright-{seconds:.0f}.mp4", inputs["face"], seconds, width=192,
                             height=108, fps=30)
    rotated = inputs["dir"] / f"rotated-{ccw}-{seconds:.0f}.mp4"
    mf.ffmpeg("-display_rotation", str(ccw), "-i", plain, "-c", "copy", rotated)
    reference = tmp_path / "reference.png"  # frame 0 as ffmpeg shows it (autorotate)
    mf.ffmpeg("-i", rotated, "-frames:v", "1", reference)
    intro = mf.bumper(inputs["dir"] / "intro-landscape.mp4", 0.5, 320, 240, 30, with_audio=False)  # 15 frames
    final, manifest = run_job(inputs, rotated, tmp_path, intro_uri=str(intro))
    assert manifest["video"]["reencoded"] is False and manifest["video"]["rotation"] == (360 - ccw) % 360
    assert manifest["length_mode"] == ("pingpong" if seconds < DUB_S else "trim")
    check_exact(final, Fraction(30), 15 + math.ceil(DUB_S * 30))  # the intro fitted into the portrait picture
    with av.open(str(final)) as c:
        first = next(f for i, f in enumerate(c.decode(video=0)) if i == 15).to_ndarray(format="rgb24")
    expected = cv2.cvtColor(cv2.imread(str(reference)), cv2.COLOR_BGR2RGB)
    assert first.shape == expected.shape == ((108, 192, 3) if ccw == 180 else (192, 108, 3))
    upright = np.abs(_gray(first) - _gray(expected)).mean()
    upside_down = np.abs(_gray(first) - _gray(expected[::-1, ::-1])).mean()
    assert upright < 8 and upright < upside_down / 3, (upright, upside_down)


def _numbered_vfr(path: Path, frames: int, slots: str) -> Path:
    """128x96 frames that carry their number (left half: n % 16, right half: n // 16, in luma steps of 16), each
    shown from slot `slots`(N) / 25 s: a variable frame rate."""
    mf.ffmpeg("-f", "lavfi", "-i", f"color=c=black:size=128x96:rate=25:duration={frames / 25}", "-vf",
              "geq=lum='8+16*if(lt(X,W/2),mod(N,16),floor(N/16))':cb=128:cr=128,"
              f"settb=1/1000,setpts='({slots})*40'", "-fps_mode", "passthrough", "-video_track_timescale", "1000",
              "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "10", "-pix_fmt", "yuv420p", path)
    return path


def _frame_numbers(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        planes = [f.to_ndarray()[:96] for f in c.decode(video=0)]  # the Y plane
    return [int(round((y[:, :64].mean() - 8) / 16)) + 16 * int(round((y[:, 64:].mean() - 8) / 16)) for y in planes]


@pytest.mark.parametrize("frames", [100, 50], ids=["trim", "pingpong"])
def test_a_variable_rate_source_is_resampled_by_the_final_encode(inputs, tmp_path, frames):
    """A variable frame rate kept as it is (no conforming encode): the deliverable shows, at each tick of the job's
    rate, the frame ffmpeg's fps filter shows (a gap holds the frame before it; of two frames in one slot, the
    second), in the plan's order, on an exact CFR grid."""
    # 25 fps with one slot skipped (frame 40 comes one slot late) and two frames sharing slot 45
    slots = "if(lt(N,40),N,if(lt(N,45),N+1,if(eq(N,45),45.4,N)))"
    source = _numbered_vfr(inputs["dir"] / f"vfr-{frames}.mp4", frames, slots)
    final, manifest = run_job(inputs, source, tmp_path)
    assert manifest["video"]["reencoded"] is False and manifest["video"]["variable_rate"] is True
    assert (manifest["video"]["fps_num"], manifest["video"]["fps_den"]) == (25, 1)
    total = math.ceil(DUB_S * 25)
    check_exact(final, Fraction(25), total)
    shown = tmp_path / "fps.mp4"  # the source as ffmpeg's fps filter resamples it
    mf.ffmpeg("-i", source, "-vf", "fps=25", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", shown)
    resampled = _frame_numbers(shown)
    assert resampled[38:47] == [38, 39, 39, 40, 41, 42, 43, 45, 46]  # the gap held, frame 44 not shown
    if frames >= total:
        expected = resampled[:total]
    else:  # ping-pong: forward, then back from the last frame
        n = manifest["video"]["frame_count"]
        assert n == frames
        expected = resampled[:n] + resampled[n - 1::-1][: total - n]
    assert _frame_numbers(final) == expected


def test_bumpers_at_other_rates_take_the_main_rate(inputs, tmp_path):
    """A 30/1 main with a 25 fps intro (with sound) and a 60000/1001 outro (silent): delivered at exactly 30/1."""
    intro = mf.bumper(inputs["dir"] / "intro-25.mp4", 0.5, 320, 240, 25, with_audio=True)
    outro = inputs["dir"] / "outro-5994.mkv"
    mf.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=60000/1001:duration=0.4", "-c:v", "libx264",
              "-preset", "ultrafast", "-pix_fmt", "yuv420p", outro)
    final, _ = run_job(inputs, source(inputs, "30", "mp4", "h264"), tmp_path, intro_uri=str(intro),
                       outro_uri=str(outro))
    # intro: 12 frames at 25 (its sound ends first: -shortest) = 0.48 s -> 14 at 30; main = the dub, 75;
    # outro: 24 frames of 1001/60000 s = 0.4004 s -> 12
    check_exact(final, Fraction(30), 14 + 75 + 12)
