"""Window plans, blend weights and silence weights of the `latentsync` video engine (pure numpy)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from lipline.models.latentsync.windows import blend_weights, plan_windows, runs_of, silence_alpha, window_groups


def covered(windows, n):
    seen = np.zeros(n, int)
    for w in windows:
        seen[w.start:w.end] += 1
    return seen


def test_official_layout_keeps_the_short_tail():
    windows = plan_windows(np.ones(35, bool), 16, overlap=0)
    assert [(w.start, w.end) for w in windows] == [(0, 16), (16, 32), (32, 35)]  # 35 frames in, 35 frames out


@pytest.mark.parametrize("n", [1, 15, 16, 17, 35, 100])
@pytest.mark.parametrize("overlap", [1, 2, 4])
def test_overlapping_windows_cover_every_frame_with_full_windows(n, overlap):
    windows = plan_windows(np.ones(n, bool), 16, overlap)
    assert covered(windows, n).min() == 1
    assert all(w.length == min(16, n) for w in windows)  # the last window is anchored on the end, never short
    for a, b in zip(windows, windows[1:]):
        assert b.start < a.end  # consecutive windows share frames


def test_windows_follow_runs_and_skip_gaps():
    active = np.ones(40, bool)
    active[10:14] = False
    windows = plan_windows(active, 16, 2)
    assert covered(windows, 40)[10:14].tolist() == [0, 0, 0, 0]
    assert {(w.run_start, w.run_end) for w in windows} == {(0, 10), (14, 40)}
    assert runs_of(active) == [(0, 10), (14, 40)]


@pytest.mark.parametrize("overlap", [0, 2, 5])
def test_blend_weights_sum_to_one_and_ramp(overlap):
    windows = plan_windows(np.ones(50, bool), 16, overlap)
    weights = blend_weights(windows)
    total = np.zeros(50)
    for w, wt in zip(windows, weights):
        total[w.start:w.end] += wt
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if overlap:
        second = weights[1]
        assert second[0] < second[1] < 1.0  # the next window fades in over the shared frames
    else:
        assert all((wt == 1).all() for wt in weights)


def test_groups_end_at_a_short_window():
    windows = plan_windows(np.array([True] * 35 + [False] + [True] * 20), 16, 0)
    groups = window_groups(windows, 4)
    lengths = [[windows[k].length for k in g] for g in groups]
    assert all(all(x == 16 for x in g[:-1]) for g in lengths)  # only a group's last window may be short
    assert sum(len(g) for g in groups) == len(windows)


def test_silence_keeps_the_original_mouth_with_a_three_frame_fade():
    rate = Fraction(25)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    wave[16000:32000] = 0.0  # 1.0 s of silence: frames 25..49
    alpha = silence_alpha(wave, 100, rate)
    assert (alpha[:25] == 1).all() and (alpha[50:] == 1).all()
    assert alpha[25:28].tolist() == pytest.approx([0.75, 0.5, 0.25])  # fade out over 3 frames
    assert (alpha[28:47] == 0).all()
    assert alpha[47:50].tolist() == pytest.approx([0.25, 0.5, 0.75])  # and back in


def test_short_pauses_are_lip_synced():
    wave = (0.1 * np.random.default_rng(1).standard_normal(16000 * 2)).astype(np.float32)
    wave[8000:13000] = 0.0  # 0.31 s: shorter than 0.5 s
    assert (silence_alpha(wave, 50, Fraction(25)) == 1).all()
