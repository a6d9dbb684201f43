"""``lipline faces``: JSON spans, the debug video, and one-line errors (no traceback) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from lipline.faces_cli import CHOSEN
from tests.models.face import clips as C

ABSENT = range(20, 32)  # frames without the face


def _lipline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from lipline.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = C.timeline(2, C.still("astronaut"))
    for i in ABSENT:
        frames[i] = []
    return C.write_clip(tmp_path_factory.mktemp("faces-cli") / "talk.mp4", frames)


def test_json_and_debug_view(clip, tmp_path):
    out = tmp_path / "track.mp4"
    proc = _lipline("faces", str(clip), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 50 and summary["choice"] == "largest"
    assert summary["spans"] == [{"start": ABSENT.start, "end": ABSENT.stop, "reason": "no face",
                                 "start_s": 0.8, "end_s": 1.28}]
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 50 and frames[0].shape == (C.H, C.W, 3)
    banner = lambda f: f[:20, :, 0].mean() - f[:20, :, 2].mean()  # noqa: E731 - red banner on gap frames
    assert banner(frames[25]) > 40 and banner(frames[5]) < 10
    chosen = np.all(np.abs(frames[5].astype(int) - CHOSEN) < 40, axis=2)
    assert chosen.sum() > 100  # the chosen face's green box and points


def test_human_summary_names_the_span(clip):
    proc = _lipline("faces", str(clip), "--face", "index=0")
    assert proc.returncode == 0, proc.stderr
    assert "frames 20-31 (0.80-1.28 s): no face" in proc.stdout and "choice index=0" in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["{missing}"], "missing.mp4: video: no such file"),
    (["{junk}"], "junk.mp4: video: cannot be opened"),
    (["{clip}", "--face", "biggest"], "face choice 'biggest' is not understood; use largest | index=K"),
])
def test_bad_input_is_one_line_without_traceback(clip, tmp_path, args, expected):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00junk" * 50)
    paths = {"missing": str(tmp_path / "missing.mp4"), "junk": str(junk), "clip": str(clip)}
    proc = _lipline("faces", *(a.format(**paths) for a in args))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert expected in proc.stderr
