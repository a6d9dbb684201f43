"""Stage 3, normalize: loudness targets and true peak from quiet/loud/peaky inputs, formats, and the conformant
intermediate video (VFR → CFR, odd dimensions, rotation, stream copy when already conformant)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from lipline.tasks.normalize import (LOUDNESS_PRESETS, AudioNormalizeParams, conformance_reasons, normalize_audio,
                                     normalize_video, target_for)
from lipline.tasks.probe import probe_media
from tests import media_factory as mf

WEIRD = "we ird 'q' \"dq\" $HOME ;ls -x 名前 🎬"


def at_lufs(x: np.ndarray, lufs: float, sr: int = 44100) -> np.ndarray:
    meter = pyloudnorm.Meter(sr)
    return (x * 10 ** ((lufs - meter.integrated_loudness(x)) / 20)).astype(np.float32)


def lufs_tp(path: Path) -> tuple[float, float, int, int, int]:
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    tp = 20 * np.log10(np.max(np.abs(resample_poly(x, 4, 1, axis=0))) + 1e-12)
    return pyloudnorm.Meter(sr).integrated_loudness(x), tp, sr, x.shape[1], x.shape[0]


@pytest.fixture(scope="module")
def audio_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("norm-audio")
    speech = mf.speech_like(5.0, channels=2)
    peaky = mf.speech_like(5.0, channels=1, level_db=-40)
    peaky[::11025] = 0.7  # clicks: quiet speech whose gain would push the true peak far over -1 dBTP
    return {
        "quiet": mf.write_audio(d / "quiet.wav", at_lufs(speech, -35)),
        "loud": mf.write_audio(d / "loud.wav", at_lufs(speech, -12)),
        "peaky": mf.write_audio(d / "peaky.wav", at_lufs(peaky, -35)),
        "mono": mf.write_audio(d / "mono.wav", at_lufs(mf.speech_like(4.0, channels=1), -28)),
    }


def test_presets():
    assert LOUDNESS_PRESETS == {"default": -16.0, "broadcast": -23.0, "streaming": -14.0}
    assert target_for("broadcast") == -23.0
    assert AudioNormalizeParams.from_preset("streaming").target_lufs == -14.0
    with pytest.raises(ValueError):
        AudioNormalizeParams(target_lufs=-3.0)


@pytest.mark.parametrize("source", ["quiet", "loud", "peaky"])
@pytest.mark.parametrize("target", [-16.0, -23.0, -14.0])
def test_loudness_reaches_target(audio_inputs, tmp_path, source, target):
    result = normalize_audio(str(audio_inputs[source]), tmp_path, target_lufs=target)
    lufs, tp, sr, channels, n = lufs_tp(Path(result.delivery_uri))
    assert abs(lufs - target) <= 1.0, (source, lufs)
    assert tp <= -1.0 + 0.05, (source, tp)
    assert (sr, channels) == (48000, 2)
    assert abs(n / sr - 5.0) < 0.01  # no delay, nothing lost (limiter latency compensated)
    assert abs(result.after.integrated_lufs - target) <= 1.0
    assert result.after.true_peak_dbtp <= -1.0
    expected_before = {"quiet": -35, "loud": -12, "peaky": -35}[source]
    assert abs(result.before.integrated_lufs - expected_before) < 0.6
    if source == "peaky":
        assert result.method == "gain+limiter"  # linear loudnorm cannot: normalised, then limited
    elif source == "loud":
        assert result.method == "linear"
    info = sf.info(result.model_uri)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.frames / 16000 - 5.0) < 0.01


def test_mono_input_and_weird_name(audio_inputs, tmp_path):
    src = tmp_path / f"-{WEIRD}.wav"
    src.write_bytes(audio_inputs["mono"].read_bytes())
    out = tmp_path / f"out {WEIRD}"
    result = normalize_audio(str(src), out, target_lufs=-16.0)
    lufs, tp, sr, channels, _ = lufs_tp(Path(result.delivery_uri))
    assert (sr, channels) == (48000, 2)
    assert abs(lufs + 16) <= 1.0 and tp <= -0.95
    assert Path(result.delivery_uri).parent == out.absolute()
    mono, msr = sf.read(result.model_uri, always_2d=True)
    assert msr == 16000 and mono.shape[1] == 1


def test_audio_of_a_video_file(tmp_path):
    """A dub delivered as AAC in MP4 decodes too."""
    src = mf.write_audio(tmp_path / "dub.m4a", at_lufs(mf.speech_like(3.0), -20))
    result = normalize_audio(str(src), tmp_path / "o", target_lufs=-23.0)
    assert abs(result.after.integrated_lufs + 23) <= 1.0


# --------------------------------------------------------------------------------------------------- video


def _copy_as(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("norm-video")
    conf = d / "conformant.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-f", "lavfi", "-i",
              "sine=frequency=300:duration=2", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
              "-c:a", "aac", "-shortest", conf)
    odd = d / "odd.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-vf", "scale=321:241",
              "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", odd)
    rot = d / "rotated.mp4"
    mf.ffmpeg("-display_rotation", "90", "-i", conf, "-c", "copy", rot)
    vfr = d / "vfr.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-vf",
              "setpts='if(lt(N,25),N,25+(N-25)*2)/25/TB'", "-fps_mode", "passthrough", "-c:v", "libx264",
              "-preset", "ultrafast", "-pix_fmt", "yuv420p", vfr)
    return {"conformant": conf, "odd": odd, "rotated": rot, "vfr": vfr}


def test_conformant_video_is_copied(videos, tmp_path):
    src = _copy_as(videos["conformant"], tmp_path / f"--{WEIRD}.mp4")
    probe = probe_media(str(src))
    assert conformance_reasons(probe) == []
    out = normalize_video(str(src), tmp_path / WEIRD, probe)
    assert not out.reencoded and out.reasons == []
    assert (out.width, out.height, out.frame_count, out.fps) == (320, 240, 50, 25.0)
    with av.open(str(src)) as a, av.open(out.uri) as b:
        assert not b.streams.audio
        src_packets = [bytes(p) for p in a.demux(a.streams.video[0]) if p.size]
        out_packets = [bytes(p) for p in b.demux(b.streams.video[0]) if p.size]
    assert src_packets == out_packets  # bit-identical stream: no encode


def _packets(path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


@pytest.fixture(scope="module")
def hevc_10bit(tmp_path_factory) -> Path:
    """A phone-like source: CFR HEVC, 10-bit 4:2:0 (neither H.264 nor yuv420p)."""
    path = tmp_path_factory.mktemp("norm-hevc") / "phone.mov"
    mf.pattern_clip(path, 320, 240, fps=30, dur=1.0, pix_fmt="yuv420p10le",
                    extra=("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"))
    return path


def test_hevc_is_copied_when_only_the_final_encode_reads_it(hevc_10bit, tmp_path):
    """An engine that keeps its frames (passthrough): the final encode decodes HEVC and converts 10-bit itself, so
    the intermediate is the source's own stream (no ultrafast encode before the real one)."""
    probe = probe_media(str(hevc_10bit))
    assert (probe.video.codec, probe.video.pix_fmt) == ("hevc", "yuv420p10le")
    assert conformance_reasons(probe, any_codec=True) == []
    out = normalize_video(str(hevc_10bit), tmp_path / "copy", probe, any_codec=True)
    assert not out.reencoded and out.reasons == []
    assert (out.width, out.height, out.frame_count, out.fps) == (320, 240, 30, 30.0)
    assert _packets(out.uri) == _packets(hevc_10bit)


def test_hevc_is_encoded_for_engines_that_read_frames(hevc_10bit, tmp_path):
    """A lip-sync engine reads the intermediate frame by frame: it gets H.264 yuv420p as before."""
    out = normalize_video(str(hevc_10bit), tmp_path / "encode", probe_media(str(hevc_10bit)))
    assert out.reencoded
    assert out.reasons == ["codec hevc is not h264", "pixel format yuv420p10le is not yuv420p"]
    v = probe_media(out.uri).video
    assert (v.codec, v.pix_fmt, v.frame_count) == ("h264", "yuv420p", 30)


def test_any_codec_keeps_a_rotated_source_and_names_its_rotation(videos, tmp_path):
    """A portrait phone clip (a display matrix): copied as it is; the record gives the picture's size as shown and
    the rotation its reader (the final encode) applies."""
    probe = probe_media(str(videos["rotated"]))
    out = normalize_video(str(videos["rotated"]), tmp_path / "kept", probe, any_codec=True)
    assert not out.reencoded and out.reasons == []
    assert (out.rotation, out.width, out.height) == (probe.video.rotation, 240, 320)
    assert probe.video.rotation in (90, 270)
    assert _packets(out.uri) == _packets(videos["rotated"])
    assert probe_media(out.uri).video.rotation == probe.video.rotation
    conformed = normalize_video(str(videos["rotated"]), tmp_path / "conformed", probe)
    assert conformed.reencoded and (conformed.rotation, conformed.width, conformed.height) == (0, 240, 320)


def test_any_codec_keeps_a_variable_rate_and_counts_its_frames_at_the_rate(videos, tmp_path):
    """A variable frame rate (a phone, a screen recording) kept as it is: frame_count is its length at the job's rate
    (the final encode's frame feed resamples it to that many frames)."""
    probe = probe_media(str(videos["vfr"]))
    kept = normalize_video(str(videos["vfr"]), tmp_path / "kept", probe, any_codec=True)
    assert not kept.reencoded and kept.variable_rate and kept.reasons == []
    assert _packets(kept.uri) == _packets(videos["vfr"])
    conformed = normalize_video(str(videos["vfr"]), tmp_path / "conformed", probe)
    assert conformed.reencoded and not conformed.variable_rate
    assert (kept.fps_num, kept.fps_den) == (conformed.fps_num, conformed.fps_den)
    # the last frame's own duration counts here; ffmpeg's fps filter ends at its start (rounded): one frame apart
    assert 0 <= kept.frame_count - conformed.frame_count <= 1
    assert abs(kept.frame_count / kept.fps - probe.video.duration_s) <= 1.5 / kept.fps


def test_any_codec_still_pads_odd_dimensions(videos, tmp_path):
    """Odd dimensions change the picture itself: re-encoded for every reader."""
    out = normalize_video(str(videos["odd"]), tmp_path, probe_media(str(videos["odd"])), any_codec=True)
    assert out.reencoded and out.reasons == ["odd dimensions 321x241"]


def test_odd_dimensions_padded(videos, tmp_path):
    probe = probe_media(str(videos["odd"]))
    assert probe.video.width == 321
    out = normalize_video(str(videos["odd"]), tmp_path, probe)
    assert out.reencoded and any("odd" in r for r in out.reasons)
    v = probe_media(out.uri).video
    assert (v.width, v.height, v.pix_fmt) == (322, 242, "yuv420p")
    assert (out.width, out.height) == (322, 242)
    assert v.frame_count == out.frame_count == 25


def test_rotation_applied(videos, tmp_path):
    probe = probe_media(str(videos["rotated"]))
    assert probe.video.rotation in (90, 270)
    out = normalize_video(str(videos["rotated"]), tmp_path, None)  # probes by itself
    v = probe_media(out.uri).video
    assert (v.width, v.height, v.rotation) == (240, 320, 0)
    with av.open(out.uri) as c:
        frame = next(c.decode(video=0))
        assert not any("DISPLAYMATRIX" in str(sd.type).upper() for sd in frame.side_data)


def test_vfr_becomes_cfr(videos, tmp_path):
    probe = probe_media(str(videos["vfr"]))
    assert not probe.video.constant_fps
    out = normalize_video(str(videos["vfr"]), tmp_path, probe)
    assert out.reencoded
    v = probe_media(out.uri).video
    assert v.constant_fps
    assert abs(v.fps - out.fps) < 0.01
    assert abs(out.frame_count / out.fps - probe.video.duration_s) <= 1.5 / out.fps


def test_a_given_before_measurement_is_used_not_remeasured(tmp_path, monkeypatch):
    from lipline import samples
    from lipline.records import LoudnessMeasure
    from lipline.tasks import normalize as nz

    src = samples.write_audio(tmp_path / "in.wav", samples.speech_like(6.0, level_db=-24.0))
    measured = []
    real = nz._measure
    monkeypatch.setattr(nz, "_measure", lambda path: measured.append(path) or real(path))
    given = LoudnessMeasure(integrated_lufs=-24.5, true_peak_dbtp=-9.0)
    out = nz.normalize_audio(str(src), tmp_path / "out", before=given)
    assert out.before == given
    assert src not in measured and all(p.name != "in.wav" for p in measured)
