"""Pause detection equals librosa.effects.split, in bounded memory."""

import numpy as np
import pytest

from lipline.tasks.pauses import Samples, find_pauses, split_nonsilent


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_nonsilent_equals_librosa_split(seed):
    import librosa

    rng = np.random.default_rng(seed)
    y = (rng.standard_normal(16000 * 7) * 0.1).astype(np.float32)
    for start in rng.integers(0, y.size - 8000, 6):
        y[start:start + int(rng.integers(800, 8000))] *= 1e-4  # pauses of 50-500 ms
    ours = split_nonsilent(y, top_db=40, frame_length=640, hop_length=160)
    theirs = librosa.effects.split(y, top_db=40, frame_length=640, hop_length=160)
    assert np.array_equal(ours, theirs)


def test_file_backed_samples_give_the_same_pauses(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(5)
    y = (rng.standard_normal(16000 * 5) * 0.1).astype(np.float32)
    y[16000:24000] = 0.0
    path = tmp_path / "m.wav"
    sf.write(path, y, 16000, subtype="FLOAT")
    with sf.SoundFile(path) as handle:
        from_file = find_pauses(Samples.of_file(handle), 16000)
    assert from_file == find_pauses(y, 16000) and len(from_file) >= 1
