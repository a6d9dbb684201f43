"""SyncNet LSE-C / LSE-D: the ``syncnet_v2`` architecture under its official names, strict loading of the official
file format (random weights saved as ``syncnet_v2.model`` is saved), MFCCs equal to python_speech_features',
the score's sign, and the streamed scoring of a real clip equal to the official evaluate loop over all crops."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lipline.models.sync import syncnet as S  # noqa: E402
from tests.models.sync import clips as C  # noqa: E402

# python_speech_features 0.6 `mfcc(x, 16000)` of the signal in `test_mfcc_matches_python_speech_features`,
# frames 0 and 37 (computed with that package; it is not a dependency of Lipline).
PSF_FRAME_0 = [18.773722784, 13.7307432706, -22.1948150392, -22.3495267727, 8.7926445374, 24.6081328894,
               0.2922978154, -35.9030341297, -39.8606417521, -13.7594267561, 4.4964668683, -6.9156668439,
               -26.0578173402]
PSF_FRAME_37 = [18.8823014071, 17.3291611931, -14.2344467622, -13.8479023239, 15.047321767, 27.7048289918,
                0.6603767942, -37.8263177727, -43.2143542724, -17.9942223501, 0.3790107966, -10.5637524044,
                -29.045631948]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Random weights in the syncnet_v2 architecture, saved in the official format (a dict of tensors, BatchNorm
    running stats included, no ``num_batches_tracked``)."""
    torch.manual_seed(0)
    model = S.SyncNetS()
    for module in model.modules():  # non-trivial running stats, so that loading them is checked too
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


def test_official_names_and_shapes():
    state = S.SyncNetS().state_dict()
    expected = {"netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
                "netcnnaud.19.running_var": (512,), "netfcaud.0.weight": (512, 512), "netfcaud.3.weight": (1024, 512),
                "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
                "netcnnlip.18.weight": (512, 256, 1, 6, 6), "netfclip.1.running_mean": (512,),
                "netfclip.3.bias": (1024,)}
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 88  # 12 conv + 12 BN (4 each) + 4 linear
    assert sum(v.numel() for k, v in state.items() if v.is_floating_point()) == 13_640_256


def test_towers_embed_to_1024():
    model = S.SyncNetS().eval()
    with torch.no_grad():
        assert model.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert model.forward_lip(torch.zeros(1, 3, 5, 224, 224)).shape == (1, 1024)


def test_load_is_strict(weights_file, tmp_path):
    model = S.load_syncnet(weights_file)
    saved = torch.load(weights_file)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())

    def refused(state, match):
        path = tmp_path / "bad.model"
        torch.save(state, path)
        with pytest.raises(S.SyncNetWeightsError, match=match):
            S.load_syncnet(path)

    refused({k: v for k, v in saved.items() if k != "netfclip.3.bias"}, "missing netfclip.3.bias")
    refused({**saved, "__S__.netcnnaud.0.weight": saved["netcnnaud.0.weight"]}, "unexpected __S__.netcnnaud")
    refused({**saved, "netfcaud.3.weight": torch.zeros(512, 512)}, "wrong shape netfcaud.3.weight")
    refused([1, 2, 3], "dict of tensors")
    with pytest.raises(S.SyncNetWeightsError, match="no such file"):
        S.load_syncnet(tmp_path / "none.model")


def test_mfcc_matches_python_speech_features():
    t = np.arange(8000) / 16000
    x = (6000 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
         + 2500 * np.sin(2 * np.pi * 1234 * t)).astype(np.int16)
    features = S.mfcc(x)
    assert features.shape == (13, 49)
    np.testing.assert_allclose(features[:, 0], PSF_FRAME_0, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(features[:, 37], PSF_FRAME_37, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("k", [-6, 0, 4])
def test_offset_sign_audio_late_is_positive(k):
    lip = torch.randn(60, 16, generator=torch.Generator().manual_seed(1))
    aud = torch.roll(lip, shifts=k, dims=0)  # audio window i carries lip window i - k: the sound comes k later
    scores = S.scores_from_curve(S.distance_curve(lip, aud), 60)
    assert scores.offset_frames == k and scores.lse_d < 2 and scores.lse_c > 3


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    from lipline.models.face.track import compute_face_track

    video = C.short_clip(tmp_path_factory.mktemp("syncnet-clip"))
    return video, compute_face_track(video)


def test_streamed_scores_equal_the_official_loop(weights_file, short_clip):
    import cv2

    from lipline.models.face.video import iter_frames
    from lipline.models.sync.measure import read_mono

    video, track = short_clip
    model = S.load_syncnet(weights_file)
    torch.set_num_threads(1)
    streamed = S.syncnet_scores(model, video, video, track, batch=7)
    # the official evaluate(): all crops in memory, windows of 5 frames, MFCC columns 4i..4i+20, batches of 20
    params = S.crop_boxes(track.boxes, track.valid)
    crops = [S.crop_face(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), *params[i]) for i, (_, rgb) in enumerate(iter_frames(video))]
    imtv = torch.from_numpy(np.stack(crops, axis=3)[None].transpose(0, 3, 4, 1, 2).astype(np.float32))
    audio = read_mono(video)
    cct = torch.from_numpy(S.mfcc(np.clip(audio, -1, 1) * 32767.0)[None, None].astype(np.float32))
    lastframe = min(len(crops), audio.size // 640) - 5
    with torch.no_grad():
        im_feat = torch.cat([model.forward_lip(torch.cat([imtv[:, :, v:v + 5] for v in range(i, min(lastframe, i + 20))]))
                             for i in range(0, lastframe, 20)])
        cc_feat = torch.cat([model.forward_aud(torch.cat([cct[..., v * 4:v * 4 + 20] for v in range(i, min(lastframe, i + 20))]))
                             for i in range(0, lastframe, 20)])
    official = S.scores_from_curve(S.distance_curve(im_feat, cc_feat), lastframe)
    assert streamed.windows == official.windows == 25
    assert streamed.offset_frames == official.offset_frames
    assert streamed.lse_d == pytest.approx(official.lse_d, rel=1e-4)
    assert streamed.lse_c == pytest.approx(official.lse_c, rel=1e-3, abs=1e-5)
    assert np.isfinite([streamed.lse_c, streamed.lse_d]).all() and streamed.lse_c >= 0
