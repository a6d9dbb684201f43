"""The `latentsync` video engine on a tiny model (R = 64) and real clips: frames in = frames out, face gaps bit-exact,
only the face region touched, windowed feeding equal to one sampling call, seams measured."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lipline.models.face.align import CropGeometry, face_region
from lipline.models.face.track import compute_face_track
from lipline.models.latentsync.engine import EngineParams, LatentSyncEngine
from lipline.models.latentsync.model import LatentSyncModel
from lipline.models.latentsync.video_engine import LatentSyncVideoEngine, plan_segment
from lipline.models.latentsync.windows import silence_alpha
from lipline.records import LipsyncOptions, Segment
from lipline.samples import speech_like, write_audio
from tests.models.face import clips

from .tiny_release import random_audio, random_faces, tiny_mask_tensor, tiny_unet, tiny_vae

R = 64
GAP = (12, 24)  # the face is out of the picture for these frames


def tiny_engine() -> LatentSyncEngine:
    model = LatentSyncModel.from_components(tiny_unet(), tiny_vae(), None, mask=tiny_mask_tensor(R), version="tiny")
    return LatentSyncEngine(model=model)


def video_engine(options: LipsyncOptions) -> LatentSyncVideoEngine:
    engine = LatentSyncVideoEngine(device="cpu")
    face = tiny_engine()

    class _Audio:  # the tiny model has no whisper: per-frame chunks from a fixed random projection of the level
        @staticmethod
        def audio_chunks(wave, fps):
            n = int(len(wave) / 16000 * float(fps)) + 2
            return random_audio(n, 64, seed=3)

    face.load().audio_chunks = _Audio.audio_chunks  # type: ignore[method-assign]
    engine._engines[(options.model_version, options.weights_dir)] = face
    return engine


def yuv_frames(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.to_ndarray(format="yuv420p") for f in c.decode(s)], Fraction(s.average_rate)


@pytest.fixture(scope="module")
def gap_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("ve-clip")

    def at(t: float):
        i = round(t * 25)
        x = 2000 if GAP[0] <= i < GAP[1] else 320 + 10 * np.sin(i / 4)
        return [clips.Sprite("astronaut", x, 170, 140)]

    video = clips.write_clip(d / "gap.mp4", clips.timeline(35 / 25, at), size=(640, 360))
    audio = write_audio(d / "dub.wav", speech_like(35 / 25, sr=16000, channels=1, pauses=()), sr=16000)
    return video, audio, compute_face_track(video)


@pytest.fixture(scope="module")
def gap_run(gap_clip, tmp_path_factory):
    video, audio, track = gap_clip
    options = LipsyncOptions(steps=1, guidance=1.0)
    out = tmp_path_factory.mktemp("ve-out") / "seg.mp4"
    seg = Segment(index=0, start_frame=0, end_frame=35, fps=25.0, video_uri=str(video), audio_uri=str(audio))
    result = video_engine(options).run_segment(seg, video, audio, out, options, track=track)
    return result, out


def test_35_frames_in_35_frames_out_at_the_source_rate(gap_run):
    result, out = gap_run
    frames, rate = yuv_frames(out)
    assert len(frames) == result.frames == 35 and rate == 25


def test_frames_without_a_face_are_the_source_frames_bit_exact(gap_clip, gap_run):
    video, _, track = gap_clip
    result, out = gap_run
    gaps = [(s.start, s.end) for s in result.passed_through if s.reason == "no face"]
    assert gaps and gaps[0][0] <= GAP[0] + 1 and gaps[0][1] >= GAP[1] - 1
    got, _ = yuv_frames(out)
    src, _ = yuv_frames(video)
    for start, end in gaps:
        for i in range(start, end):
            assert np.array_equal(got[i], src[i]), i
    generated = {i for s in result.generated for i in range(s.start, s.end)}
    assert generated and all(not track.valid[i] for s in gaps for i in range(*s)) and len(generated) + sum(
        e - s for s, e in gaps) == 35


def test_only_the_face_region_changes(gap_clip, gap_run):
    video, audio, track = gap_clip
    result, out = gap_run
    got, _ = yuv_frames(out)
    src, _ = yuv_frames(video)
    geometry = CropGeometry(R)
    plan = plan_segment(track, np.ones(35, np.float32), geometry, 2)
    changed = 0
    for s in result.generated:
        for i in range(s.start, s.end):
            x0, y0, x1, y1 = face_region(plan.matrices[i], geometry, 640, 360)
            outside = np.ones((360, 640), bool)
            outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False  # the region, aligned for chroma
            assert np.array_equal(got[i][:360][outside], src[i][:360][outside]), i
            changed += int(np.abs(got[i][:360].astype(int) - src[i][:360]).max() > 8)
    assert changed >= len(result.generated) and changed > 10  # the random model redraws the mouth


def test_manifest_settings_and_seams(gap_run):
    result, _ = gap_run
    s = result.settings
    assert (s["steps"], s["guidance"], s["fps"], s["resolution"]) == (1, 1.0, "25/1", R)
    seams = s["seams"]
    assert seams["within_pairs"] > 0 and seams["mouth_mad_within_windows"] > 0
    assert set(s["timings_s"]) == {"audio_s", "align_s", "model_s", "paste_encode_s"}


def test_the_dpmpp_sampler_is_a_job_option(gap_clip, gap_run, tmp_path):
    """`sampler="dpmpp"` reaches the denoising loop: recorded in the settings, and the generated face region differs
    from the DDIM run of the same seed, steps and inputs (faces outside the region stay the source's)."""
    video, audio, track = gap_clip
    options = LipsyncOptions(steps=1, guidance=1.0, sampler="dpmpp")
    seg = Segment(index=0, start_frame=0, end_frame=35, fps=25.0, video_uri=str(video), audio_uri=str(audio))
    result = video_engine(options).run_segment(seg, video, audio, tmp_path / "dpmpp.mp4", options, track=track)
    assert result.settings["sampler"] == "dpmpp" and gap_run[0].settings["sampler"] == "ddim"
    ddim, _ = yuv_frames(gap_run[1])
    dpmpp, _ = yuv_frames(tmp_path / "dpmpp.mp4")
    assert len(dpmpp) == len(ddim) == 35
    assert all(np.array_equal(a, b) for a, b in zip(dpmpp[GAP[0]:GAP[1]], ddim[GAP[0]:GAP[1]]))  # no face: source
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(dpmpp[:GAP[0]], ddim[:GAP[0]])) > 8


def test_feeding_windows_group_by_group_equals_one_sampling_call():
    """overlap 0: the engine's piecewise calls (one generator, the first call's initial noise) reproduce one
    official call over all 35 frames, which tests/models/latentsync/test_e2e_conformance.py holds to the goldens."""
    engine = tiny_engine()
    faces, audio = random_faces(35, R), random_audio(35)
    params = EngineParams(steps=2)
    whole = engine.generate(faces, audio, params=params).faces
    generator = torch.Generator().manual_seed(params.seed)
    noise, parts = None, []
    for a, b in ((0, 32), (32, 35)):  # a group of two windows, then the short tail window
        res = engine.generate(faces[a:b], audio[a:b], params=params, generator=generator, init_noise=noise)
        noise = res.init_noise
        parts.append(res.faces)
    assert torch.equal(torch.cat(parts), whole)


def test_silence_keeps_frames_of_the_source(gap_clip, tmp_path):
    video, _, track = gap_clip
    wave = speech_like(35 / 25, sr=16000, channels=1, pauses=((0.0, 0.9),))[:, 0]
    alpha = silence_alpha(wave, 35, Fraction(25))
    assert (alpha[:19] == 0).all() and alpha[19:22].tolist() == pytest.approx([0.25, 0.5, 0.75])
    plan = plan_segment(track, alpha, CropGeometry(R), 2)
    assert all(r == "silence" for r in plan.reasons[:12]) and plan.reasons[30] == "generated"


def test_window_boundaries_show_no_jump(tmp_path):
    """The seam measurement of every job: mean |change| of the regenerated mouth between consecutive frames across
    a window boundary vs inside a window. With the default overlap a boundary is no bigger a step than any other."""
    video = clips.write_clip(tmp_path / "v.mp4", clips.timeline(40 / 25, lambda t: [
        clips.Sprite("astronaut", 320 + 10 * np.sin(t * 6), 170, 140)]), size=(640, 360))
    audio = write_audio(tmp_path / "a.wav", speech_like(40 / 25, sr=16000, channels=1, pauses=()), sr=16000)
    options = LipsyncOptions(steps=2, guidance=1.0)
    seg = Segment(index=0, start_frame=0, end_frame=40, fps=25.0, video_uri=str(video), audio_uri=str(audio))
    seams = video_engine(options).run_segment(seg, video, audio, tmp_path / "o.mp4", options).settings["seams"]
    assert seams["boundary_pairs"] >= 2 and seams["within_pairs"] >= 30
    assert seams["mouth_mad_at_window_boundaries"] <= 1.3 * seams["mouth_mad_within_windows"]
