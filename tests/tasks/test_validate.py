"""Stage 2: every contract rule fires with the right name, severity and observed value on generated media."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lipline.errors import InputError
from lipline.records import ValidationReport
from lipline.tasks.validate import override_keys, validate, validate_file, validate_inputs
from tests import media_factory as mf

GBK_SRT = """1
00:00:00,500 --> 00:00:02,500
你好，世界，今天天气很好

2
00:00:03,000 --> 00:00:05,000
我们一起去公园散步吧

3
00:00:06,000 --> 00:00:08,000
谢谢大家的支持和帮助
"""

BAD_SRT = """1
00:00:00,500 --> 00:00:02,500
first

2
00:00:02,000 --> 00:00:03,000
overlaps cue 1

3
00:00:05,000 --> 00:00:04,000
ends before it starts

4
00:00:06,000 -> 00:00:07,000
broken arrow

5
00:00:07,500 --> 00:00:08,000
fine

6
00:00:08,100 --> 00:00:08,400
also fine
"""


def _clip(path: Path, w: int = 640, h: int = 360, **kwargs) -> Path:
    return mf.pattern_clip(path, w, h, **kwargs)


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("validate")
    out: dict[str, Path] = {}
    sp = mf.speech_like
    out["sr8k"] = mf.write_audio(d / "sr8k.wav", sp(6.0, sr=8000), sr=8000)
    out["short"] = mf.write_audio(d / "short.wav", sp(3.0))
    out["silent"] = mf.write_audio(d / "silent.wav", np.zeros((44100 * 6, 2), np.float32))
    out["clipped"] = mf.write_audio(d / "clipped.wav", np.clip(sp(6.0, level_db=-6), -1, 1))
    t = np.arange(44100 * 6) / 44100
    loud = (0.9 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    out["loud"] = mf.write_audio(d / "loud.wav", np.stack([loud, loud], 1))
    inv = sp(6.0)
    inv[:, 1] *= -1
    out["inverted"] = mf.write_audio(d / "inverted.wav", inv)
    out["lead"] = mf.write_audio(d / "lead.wav", np.concatenate([np.zeros((44100 * 3, 2), np.float32), sp(4.0)]))
    out["m4a"] = mf.write_audio(d / "speech.m4a", sp(6.0))
    out["small"] = _clip(d / "small.mp4", 320, 240)
    out["odd"] = _clip(d / "odd.mp4", vf="scale=641:361", pix_fmt="yuv444p")  # testsrc2 rounds sizes
    out["fps15"] = _clip(d / "fps15.mp4", fps=15)
    out["vfr"] = _clip(d / "vfr.mp4", fps=30, dur=2.0, vf="setpts='if(lt(N,30),N/30,1+(N-30)/25)/TB'",
                       extra=("-fps_mode", "passthrough"))
    out["rotated"] = d / "rotated.mp4"
    mf.ffmpeg("-display_rotation", "90", "-i", _clip(d / "upright.mp4", 640, 480), "-c", "copy", out["rotated"])
    good = _clip(d / "good.mp4", 640, 360, dur=3.0)
    data = good.read_bytes()
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["random"] = d / "random.mp4"
    out["random"].write_bytes(np.random.default_rng(11).bytes(30_000))
    out["empty"] = d / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["gbk"] = mf.subtitles(d / "gbk.srt", GBK_SRT, "gbk")
    out["utf16"] = mf.subtitles(d / "utf16.srt", mf.SRT_TEXT, "utf-16")
    out["bad_srt"] = mf.subtitles(d / "bad.srt", BAD_SRT)
    out["vtt"] = mf.subtitles(d / "subs.vtt", "WEBVTT\n\nNOTE a comment\n\n00:00.500 --> 00:02.000\nhello\n\n"
                                             "intro\n00:00:03.000 --> 00:00:04.000 align:start\nworld\n")
    out["ass"] = d / "subs.ass"
    import pysubs2

    subs = pysubs2.SSAFile()
    subs.append(pysubs2.SSAEvent(start=500, end=2000, text="你好"))
    subs.append(pysubs2.SSAEvent(start=1500, end=3000, text="overlap"))
    subs.save(str(out["ass"]))
    out["empty_srt"] = mf.subtitles(d / "empty.srt", "")
    return out


def rules(report: ValidationReport) -> dict[str, tuple[str, str]]:
    return {v.rule: (v.severity, v.observed) for v in report.violations}


def only(report: ValidationReport, rule: str):
    matches = [v for v in report.violations if v.rule == rule]
    assert len(matches) == 1, report.violations
    return matches[0]


# ---------------------------------------------------------------------------------------------- good inputs

def test_good_fixtures_pass(media):
    reports = validate_inputs({"video": str(media.video), "audio": str(media.dub), "subtitles": str(media.subtitles),
                               "intro": str(media.intro), "outro": str(media.outro)})
    assert [r.role for r in reports] == ["video", "audio", "subtitles", "intro", "outro"]
    for r in reports:
        assert r.verdict in ("pass", "warn"), r.violations
        assert all(v.severity == "warn" for v in r.violations)
    assert reports[0].probe is not None and reports[0].probe.video.frame_count == 300
    # --json shape
    d = json.loads(json.dumps(reports[1].cli_dict()))
    assert set(d) == {"file", "role", "verdict", "violations"}


def test_dub_audio_in_a_compressed_container_passes(f):
    assert validate_file(str(f["m4a"]), "audio").verdict == "pass"


# ---------------------------------------------------------------------------------------------- audio rules

def test_low_sample_rate(f):
    r = validate_file(str(f["sr8k"]), "audio")
    v = only(r, "audio.sample_rate")
    assert (v.severity, v.observed, v.expected) == ("fail", "8000 Hz", ">= 16000 Hz")
    assert r.verdict == "fail"


def test_too_short(f):
    v = only(validate_file(str(f["short"]), "audio"), "audio.duration")
    assert v.severity == "fail" and v.observed == "3.00 s" and v.expected == "5..600 s"


def test_silent_is_no_speech(f):
    r = validate_file(str(f["silent"]), "audio")
    v = only(r, "audio.no_speech")
    assert v.severity == "fail" and "silent" in v.observed and "no speech" in v.hint
    # every violation is listed, not just the first
    assert {"audio.no_speech", "audio.loudness", "audio.leading_silence", "audio.trailing_silence"} <= set(rules(r))


def test_clipped_and_too_loud(f):
    r = validate_file(str(f["clipped"]), "audio")
    clip = only(r, "audio.clipping")
    assert clip.severity == "fail" and int(clip.observed.split()[0]) > 10
    loud = only(r, "audio.loudness")
    assert loud.severity == "fixable" and loud.expected == "-30..-10 LUFS"
    assert -8.0 < float(loud.observed.split()[0]) < -3.0


def test_too_loud_without_clipping(f):
    r = validate_file(str(f["loud"]), "audio")
    assert set(rules(r)) == {"audio.loudness"}
    assert r.verdict == "warn"  # fixable alone does not fail the job


def test_phase_inverted_stereo(f):
    v = only(validate_file(str(f["inverted"]), "audio"), "audio.phase_cancelling")
    assert v.severity == "fail" and v.observed == "L/R correlation -1.00"


def test_leading_silence_warns(f):
    r = validate_file(str(f["lead"]), "audio")
    v = only(r, "audio.leading_silence")
    assert v.severity == "warn" and v.observed.startswith("3.0")
    assert r.verdict == "warn"


def test_video_file_without_audio_as_audio(media):
    r = validate_file(str(media.intro), "audio")
    assert set(rules(r)) == {"audio.has_audio_stream"}


# ---------------------------------------------------------------------------------------------- video rules

def test_small_video(f):
    v = only(validate_file(str(f["small"]), "video"), "video.short_side")
    assert v.severity == "fail" and v.observed.startswith("240 px") and v.expected == "short side >= 360 px"


def test_odd_dimensions_are_fixable(f):
    r = validate_file(str(f["odd"]), "video")
    v = only(r, "video.even_dimensions")
    assert (v.severity, v.observed) == ("fixable", "641x361")
    assert r.verdict == "warn"


def test_vfr_is_fixable(f):
    r = validate_file(str(f["vfr"]), "video")
    assert set(rules(r)) == {"video.constant_fps"}
    assert rules(r)["video.constant_fps"][0] == "fixable"


def test_low_fps(f):
    r = validate_file(str(f["fps15"]), "video")
    v = only(r, "video.fps")
    assert (v.severity, v.observed, v.expected) == ("fail", "15.000 fps", "23.976..60 fps")


def test_rotation_honoured(f):
    # 640x480 stored, shown as 480x640: short side 480 passes; rotation itself is fixable
    r = validate_file(str(f["rotated"]), "video")
    assert set(rules(r)) == {"video.rotation"}
    assert rules(r)["video.rotation"] == ("fixable", "270 degrees clockwise (640x480 stored, 480x640 displayed)")
    small = validate_file(str(f["rotated"]), "video", {"video.short_side.min_px": 600})
    assert "480 px (480x640 as displayed)" in rules(small)["video.short_side"][1]


def test_truncated_mp4_named_as_such(f):
    r = validate_file(str(f["truncated"]), "video")
    v = only(r, "video.decodes_to_end")
    assert v.severity == "fail" and "truncated" in v.observed
    assert r.verdict == "fail"


@pytest.mark.parametrize("name,detail", [("random", "media.readable"), ("empty", "media.not_empty")])
def test_not_media_fails_readable(f, name, detail):
    for role in ("video", "audio", "intro"):
        r = validate_file(str(f[name]), role)
        assert set(rules(r)) == {f"{role}.readable"}
        assert detail in rules(r)[f"{role}.readable"][1]


def test_missing_file_is_a_violation(tmp_path):
    r = validate_file(str(tmp_path / "missing.mp4"), "video")
    assert r.verdict == "fail" and "media.exists" in rules(r)["video.readable"][1]


def test_audio_file_as_video_role(f):
    r = validate_file(str(f["m4a"]), "video")
    v = only(r, "video.has_video_stream")
    assert v.severity == "fail" and "audio aac" in v.observed
    assert set(rules(r)) == {"video.has_video_stream"}


def test_intro_relaxed(media, f):
    assert validate_file(str(media.outro), "outro").verdict == "pass"  # 320x240 is fine for a bumper
    assert validate_file(str(f["fps15"]), "intro").verdict == "pass"
    assert set(rules(validate_file(str(f["m4a"]), "intro"))) == {"intro.has_video_stream"}
    assert rules(validate_file(str(f["rotated"]), "outro")) == {
        "outro.rotation": ("fixable", "270 degrees clockwise")}


# ---------------------------------------------------------------------------------------------- still pictures

@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> dict[str, Path]:
    """Pictures under video names, and a one-frame video (all big enough to pass every other video rule)."""
    d = tmp_path_factory.mktemp("stills")
    face = mf.face_png(d / "face.png")
    out = {"png": d / "talk.png", "png_as_mp4": d / "talk.mp4", "jpeg_as_mov": d / "talk.mov",
           "jpeg_no_ext": d / "talk"}
    mf.ffmpeg("-i", face, "-vf", "scale=640:640", out["png"])
    out["png_as_mp4"].write_bytes(out["png"].read_bytes())
    mf.ffmpeg("-i", face, "-vf", "scale=640:640", d / "talk.jpg")
    out["jpeg_as_mov"].write_bytes((d / "talk.jpg").read_bytes())
    out["jpeg_no_ext"].write_bytes((d / "talk.jpg").read_bytes())
    out["one_frame"] = _clip(d / "one-frame.mp4", dur=0.04)
    return out


@pytest.mark.parametrize("name,shown", [("png", "a png image (1 frame"), ("png_as_mp4", "a png image"),
                                        ("jpeg_as_mov", "a jpeg image"), ("jpeg_no_ext", "a jpeg image"),
                                        ("one_frame", "1 frame of h264 video")])
def test_still_picture_is_refused_whatever_its_name(stills, name, shown):
    r = validate_file(str(stills[name]), "video")
    v = only(r, "video.still_image")
    assert v.severity == "fail" and r.verdict == "fail"
    assert shown in v.observed and v.observed.startswith("a still picture")
    assert v.hint == "give a video of the speaker talking, not a still picture"
    assert set(rules(r)) == {"video.still_image"}  # no frame-rate noise from the image demuxer's default 25 fps


def test_a_moving_video_is_not_a_still(f):
    assert "video.still_image" not in rules(validate_file(str(f["vfr"]), "video"))


# ---------------------------------------------------------------------------------------------- header vs decoded

def _claim_hours_wav(src: Path, dst: Path, hours: float) -> Path:
    """`src` with its RIFF and data sizes patched to claim `hours` of audio (the samples stay as they are)."""
    data = bytearray(src.read_bytes())
    byte_rate = int.from_bytes(data[28:32], "little")
    at = data.find(b"data")
    claim = int(hours * 3600 * byte_rate)
    data[at + 4:at + 8] = claim.to_bytes(4, "little")
    data[4:8] = (claim + at).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


def _claim_hours_mp4(src: Path, dst: Path, hours: float) -> Path:
    """`src` with its movie header (mvhd, version 0) patched to claim `hours` (the frames stay as they are)."""
    data = bytearray(src.read_bytes())
    at = data.find(b"mvhd")
    assert data[at + 4] == 0
    scale = int.from_bytes(data[at + 16:at + 20], "big")
    data[at + 20:at + 24] = int(hours * 3600 * scale).to_bytes(4, "big")
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def liars(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("liars")
    dub = mf.write_audio(d / "dub.wav", mf.speech_like(10.0, sr=16000, channels=1), sr=16000)
    video = _clip(d / "video.mp4", dur=3.0)
    return {"wav": _claim_hours_wav(dub, d / "dub-10h.wav", 10), "mp4": _claim_hours_mp4(video, d / "video-10h.mp4", 10),
            "cut_wav": _claim_hours_wav(dub, d / "dub-cut.wav", 12 / 3600), "honest_wav": dub, "honest_mp4": video}


@pytest.mark.parametrize("name,role,decoded", [("wav", "audio", "10.00"), ("mp4", "video", "3.00"),
                                               ("cut_wav", "audio", "10.00")])
def test_header_claiming_more_than_decodes_is_a_warning_naming_both(liars, name, role, decoded):
    r = validate_file(str(liars[name]), role)
    v = only(r, f"{role}.header_duration")
    claimed = "36000.00" if name != "cut_wav" else "12.00"
    assert v.severity == "warn" and v.observed == f"header says {claimed} s, decoded {decoded} s"
    assert r.verdict == "warn" and set(rules(r)) == {f"{role}.header_duration"}
    assert r.probe.duration_s == pytest.approx(float(decoded), abs=0.05)  # the decoded figure is what is used
    relaxed = validate_file(str(liars[name]), role, {f"{role}.header_duration.max_diff_s": 40000})
    assert relaxed.verdict == "pass"


def test_honest_headers_raise_nothing(liars):
    for name, role in (("honest_wav", "audio"), ("honest_mp4", "video")):
        r = validate_file(str(liars[name]), role)
        assert r.verdict == "pass", r.violations
        assert r.probe.header_duration_s == pytest.approx(r.probe.duration_s, abs=0.05)


# ---------------------------------------------------------------------------------------------- subtitles

def test_gbk_detected_and_parsed(f):
    r = validate_file(str(f["gbk"]), "subtitles")
    v = only(r, "subtitles.encoding")
    assert v.severity == "warn" and v.observed.lower().startswith("gb")
    assert set(rules(r)) == {"subtitles.encoding"}


def test_utf16_bom_detected_and_parsed(f):
    r = validate_file(str(f["utf16"]), "subtitles", media_duration_s=12)
    assert rules(r) == {"subtitles.encoding": ("warn", "utf-16 (with BOM)")}


def test_grammar_overlap_negative_by_cue_number(f):
    r = validate_file(str(f["bad_srt"]), "subtitles", media_duration_s=8.2)
    assert only(r, "subtitles.grammar").cues == [4]
    assert "broken arrow" not in only(r, "subtitles.grammar").observed
    assert "bad timing line" in only(r, "subtitles.grammar").observed
    assert only(r, "subtitles.negative_duration").cues == [3]
    assert only(r, "subtitles.overlap").cues == [2]
    assert only(r, "subtitles.overlap").severity == "warn"
    assert only(r, "subtitles.past_media_end").cues == [6]
    assert r.verdict == "fail"
    sev = {v.rule: v.severity for v in r.violations}
    assert sev["subtitles.grammar"] == sev["subtitles.negative_duration"] == "fail"


def test_cue_past_media_end_warns(media):
    r = validate_file(str(media.subtitles), "subtitles", media_duration_s=6.0)
    v = only(r, "subtitles.past_media_end")
    assert v.severity == "warn" and v.cues == [3] and "2.000 s after" in v.observed
    assert r.verdict == "warn"
    assert validate_file(str(media.subtitles), "subtitles").verdict == "pass"  # unknown media end: not checked


def test_past_end_from_media_in_validate_inputs(media, f):
    reports = validate_inputs({"audio": str(f["m4a"]), "subtitles": str(media.subtitles)})
    assert only(reports[1], "subtitles.past_media_end").cues == [3]


def test_vtt_and_ass(f):
    assert validate_file(str(f["vtt"]), "subtitles").verdict == "pass"
    r = validate_file(str(f["ass"]), "subtitles")
    assert only(r, "subtitles.overlap").cues == [2]


@pytest.mark.parametrize("role", ["subtitles"])
def test_video_as_subtitles_and_empty_subtitles(media, f, role):
    r = validate_file(str(media.video), role)
    assert set(rules(r)) == {"subtitles.readable"} and "binary" in rules(r)["subtitles.readable"][1]
    r = validate_file(str(f["empty_srt"]), role)
    assert set(rules(r)) == {"subtitles.readable"}


# ---------------------------------------------------------------------------------------------- overrides

def test_overrides_change_the_outcome(f):
    assert validate_file(str(f["small"]), "video", {"video.short_side.min_px": 240}).verdict == "pass"
    assert validate_file(str(f["short"]), "audio", {"audio.duration.min_s": 2}).verdict == "pass"
    assert validate_file(str(f["fps15"]), "video", {"video.fps.min_fps": 15}).verdict == "pass"
    r = validate_file(str(f["lead"]), "audio", {"audio.leading_silence.max_s": 4})
    assert r.verdict == "pass"
    # a tighter threshold makes a passing file fail, and the expected text follows the override
    r = validate_file(str(f["m4a"]), "audio", {"audio.loudness.min_lufs": -15, "audio.loudness.max_lufs": -12})
    assert only(r, "audio.loudness").expected == "-15..-12 LUFS"
    # keys of other roles are accepted (one dict per run) and do not affect this file
    assert validate_file(str(f["small"]), "video", {"audio.loudness.min_lufs": -35}).verdict == "fail"


def test_unknown_override_key_lists_valid_keys(f):
    with pytest.raises(InputError) as err:
        validate_file(str(f["small"]), "video", {"video.short_side.min": 200})
    assert err.value.rule == "contracts.override_key"
    assert "video.short_side.min_px" in err.value.hint and "audio.loudness.min_lufs" in err.value.hint
    with pytest.raises(InputError):
        validate_inputs({"video": str(f["small"])}, {"nope": 1})
    with pytest.raises(InputError):
        validate_file(str(f["small"]), "video", {"video.short_side.min_px": "big"})
    assert "audio.loudness.min_lufs" in override_keys()


def test_unknown_role():
    with pytest.raises(InputError):
        validate_file("x.mp4", "music")  # type: ignore[arg-type]


def test_prefect_task_wrapper(media):
    assert validate.name == "validate"
    reports = validate.fn({"video": str(media.video)})
    assert reports[0].verdict == "pass"
