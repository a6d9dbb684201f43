"""LatentSyncEngine: generation on tiny models, the out-of-memory ladder, loading once, registry wiring."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lipline.errors import EngineError, InsufficientGPUMemory
from lipline.models.latentsync import weights
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.engine import RUNGS, EngineParams, FaceEngineResult, LatentSyncEngine
from lipline.models.latentsync.model import LatentSyncModel

from .tiny_release import random_audio, random_faces, tiny_mask_tensor, tiny_unet, tiny_vae, write_tiny_release

N, R = 5, 64
FAST = dict(steps=2)


def tiny_model() -> LatentSyncModel:
    return LatentSyncModel.from_components(tiny_unet(), tiny_vae(), None, mask=tiny_mask_tensor(R), version="tiny")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("ls15e") / "hub", "1.5")


def test_generate_returns_n_frames():
    engine = LatentSyncEngine(model=tiny_model())
    assert engine.name == "latentsync" and engine.version == "tiny"
    res = engine.generate(random_faces(N, R), random_audio(N), params=EngineParams(**FAST))
    assert isinstance(res, FaceEngineResult)
    assert res.faces.shape == (N, 3, R, R) and res.faces.dtype == torch.uint8
    assert res.rungs_taken == []
    s = res.settings_used
    assert (s["steps"], s["guidance"], s["deepcache"], s["seed"], s["window_batch"], s["dtype"], s["device"]) == \
        (2, 1.5, True, 1247, 1, "fp32", "cpu")
    assert res.timings["frames"] == N and res.timings["generate_s"] > 0
    # same seed -> same output; the mask's keep region is pasted back
    again = engine.generate(random_faces(N, R), random_audio(N), params=EngineParams(**FAST))
    assert torch.equal(res.faces, again.faces)
    keep = tiny_mask_tensor(R).bool()
    diff = res.faces[:, keep].int() - random_faces(N, R)[:, keep].int()
    assert diff.abs().max() <= 1  # kept pixels only go through the official [-1, 1] round trip (truncation)


def test_default_params_follow_the_official_preset():
    p = EngineParams()
    assert (p.steps, p.guidance, p.deepcache, p.seed, p.window_batch, p.dtype, p.compile, p.channels_last) == \
        (20, 1.5, True, 1247, None, "auto", False, None)
    with pytest.raises(EngineError):
        EngineParams(dtype="fp8")
    with pytest.raises(EngineError):
        EngineParams(window_batch=0)


LADDER_CASES = [
    # (fault_injection, params, expected rungs_taken)
    ("window_batch", dict(window_batch=4), ["window_batch=2"]),
    ("window_batch", dict(window_batch=1), ["vae_slicing"]),  # not applicable -> reached with the next rung
    ("vae_slicing", dict(window_batch=4), ["window_batch=2", "window_batch=1", "vae_slicing"]),
    ("fp16", dict(window_batch=2), ["window_batch=1", "vae_slicing", "fp16"]),
    ("deepcache_off", dict(window_batch=2), ["window_batch=1", "vae_slicing", "fp16", "deepcache_off"]),
    ("deepcache_off", dict(dtype="bf16"), ["vae_slicing", "deepcache_off"]),  # bf16 -> fp16 frees nothing: skipped
]


@pytest.mark.parametrize("fault, extra, expected", LADDER_CASES)
def test_oom_ladder_each_rung(fault, extra, expected):
    engine = LatentSyncEngine(model=tiny_model(), fault_injection=fault)
    res = engine.generate(random_faces(N, R), random_audio(N), params=EngineParams(**FAST, **extra))
    assert res.rungs_taken == expected
    assert res.faces.shape == (N, 3, R, R)
    attempts = res.timings["attempts"]
    assert [a["ok"] for a in attempts] == [False] * len(expected) + [True]
    assert all("synthetic CUDA out of memory" in a["error"] for a in attempts[:-1])
    s = res.settings_used
    if "fp16" in expected:
        assert s["dtype"] == "fp16" and s["weights_dtype"] == "fp16"
    if "vae_slicing" in expected:
        assert s["vae_slicing"] is True
    assert s["deepcache"] is ("deepcache_off" not in expected)
    wb = [int(r.split("=")[1]) for r in expected if r.startswith("window_batch=")]
    assert s["window_batch"] == (wb[-1] if wb else extra.get("window_batch", 1))


def test_oom_everywhere_raises_insufficient_gpu_memory():
    engine = LatentSyncEngine(model=tiny_model(), fault_injection="all")
    with pytest.raises(InsufficientGPUMemory) as info:
        engine.generate(random_faces(N, R), random_audio(N), params=EngineParams(**FAST, window_batch=4))
    assert info.value.rungs == ["window_batch=2", "window_batch=1", "vae_slicing", "fp16", "deepcache_off"]
    assert "bigger GPU" in str(info.value) and isinstance(info.value, EngineError)
    assert set(RUNGS) == {"window_batch", "vae_slicing", "fp16", "deepcache_off"}


def test_real_oom_from_the_pipeline_is_caught(monkeypatch):
    """An OutOfMemoryError raised inside the pipeline (not the injector) drives the ladder too."""
    from lipline.models.latentsync.pipeline import LatentSyncPipeline

    real = LatentSyncPipeline.generate
    seen = []

    def flaky(self, *args, **kw):
        seen.append((kw["window_batch"], kw["vae_slicing"]))
        if kw["window_batch"] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kw)

    monkeypatch.setattr(LatentSyncPipeline, "generate", flaky)
    res = LatentSyncEngine(model=tiny_model()).generate(random_faces(N, R), random_audio(N), params=EngineParams(**FAST, window_batch=2))
    assert res.rungs_taken == ["window_batch=1"] and seen == [(2, False), (1, False)]
    assert "Tried to allocate" in res.timings["attempts"][0]["error"]


def test_bad_fault_injection_and_inputs():
    with pytest.raises(EngineError, match="fault_injection"):
        LatentSyncEngine(model=tiny_model(), fault_injection="everything")
    with pytest.raises(EngineError, match="unknown LatentSync version"):
        LatentSyncEngine(version="9.9")
    engine = LatentSyncEngine(model=tiny_model())
    with pytest.raises(EngineError, match=r"faces must be uint8 \[N, 3, 64, 64\]"):
        engine.generate(random_faces(N, 32), random_audio(N))
    with pytest.raises(EngineError, match="audio_chunks"):
        engine.generate(random_faces(N, R), random_audio(N + 1))


def test_model_is_loaded_once_and_reused(release, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    real = LatentSyncModel.from_pretrained.__func__

    def counting(cls, *args, **kw):
        calls.append((args, kw))
        return real(cls, *args, **kw)

    monkeypatch.setattr(LatentSyncModel, "from_pretrained", classmethod(counting))
    engine = LatentSyncEngine(version="1.5", cache_dir=release.cache, mask_path=release.mask_file, unet_config=UNet3DConfig.tiny())
    assert engine.model is None and engine.resolution == 256  # lazy
    faces, audio = random_faces(1, 256), random_audio(1)
    first = engine.generate(faces, audio, params=EngineParams(steps=1))
    model = engine.model
    second = engine.generate(faces, audio, params=EngineParams(steps=1, deepcache=False))
    assert len(calls) == 1 and engine.load_count == 1 and engine.model is model
    assert first.timings["load_s"] > 0 and second.timings["load_s"] == 0
    assert first.faces.shape == (1, 3, 256, 256) and second.faces.shape == (1, 3, 256, 256)
    prov = engine.describe()["provenance"]
    assert prov["sha256"]["unet"] == hashlib.sha256(open(prov["files"]["unet"], "rb").read()).hexdigest()

    # After the ladder cast the weights to fp16, asking for fp32 again reloads them from disk (no rounded upcast).
    engine.fault_injection = "fp16"
    reduced = engine.generate(faces, audio, params=EngineParams(steps=1, dtype="fp32"))
    assert "fp16" in reduced.rungs_taken and engine.model.dtype == torch.float16
    engine.fault_injection = None
    full = engine.generate(faces, audio, params=EngineParams(steps=1, dtype="fp32"))
    assert full.rungs_taken == [] and engine.model.dtype == torch.float32 and engine.load_count == 2
    assert torch.equal(full.faces, first.faces)


def test_registry_builds_a_lazy_engine(tmp_path):
    from lipline.models.registry import get_engine

    engine = get_engine("latentsync-faces", kind="face", version="1.6", cache_dir=str(tmp_path), device="cpu")
    assert isinstance(engine, LatentSyncEngine) and engine.model is None and engine.resolution == 512
    assert get_engine("latentsync-faces", kind="face", version="1.6", cache_dir=str(tmp_path), device="cpu") is engine
    with pytest.raises(weights.WeightsNotFound, match="lipline weights pull --version 1.6"):
        engine.generate(random_faces(1, 512), random_audio(1, d=384))
