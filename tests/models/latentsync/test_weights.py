"""LatentSync weights: required files, local-cache resolution, pull through huggingface_hub, verification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from lipline.errors import EngineError
from lipline.models.latentsync import weights
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.weights import WeightsNotFound

from .tiny_release import LS_COMMIT, VAE_COMMIT, put_hub_file, repo_dir, write_tiny_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("ls15") / "hub", "1.5")


def test_required_files_per_version():
    for version, repo in (("1.5", "ByteDance/LatentSync-1.5"), ("1.6", "ByteDance/LatentSync-1.6")):
        refs = [f.ref for f in weights.required_files(version)]
        assert refs == [f"{repo}/latentsync_unet.pt", f"{repo}/whisper/tiny.pt",
                        "stabilityai/sd-vae-ft-mse/config.json", "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    assert weights.version_spec("1.5").resolution == 256 and weights.version_spec("1.6").resolution == 512
    with pytest.raises(EngineError, match="unknown LatentSync version '2.0'"):
        weights.required_files("2.0")


def test_resolve_reads_the_hub_cache_layout(release):
    rw = weights.resolve("1.5", release.cache)
    snap = repo_dir(release.cache, "ByteDance/LatentSync-1.5") / "snapshots" / LS_COMMIT
    assert rw.version == "1.5" and rw.resolution == 256
    assert rw.unet_path == snap / "latentsync_unet.pt" and rw.whisper_path == snap / "whisper" / "tiny.pt"
    assert rw.vae_dir == repo_dir(release.cache, "stabilityai/sd-vae-ft-mse") / "snapshots" / VAE_COMMIT
    assert rw.revisions == {"ByteDance/LatentSync-1.5": LS_COMMIT, "stabilityai/sd-vae-ft-mse": VAE_COMMIT}
    assert rw.mask_path is None
    assert rw.mask_provenance() == {"source": "generated", "generator": "lipline.models.face.mask.official_mask"}
    assert rw.provenance(hashes=False)["mask"]["source"] == "generated"


def test_resolve_honours_hf_home_and_hf_hub_cache(release, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(release.cache.parent))  # the release lives in $HF_HOME/hub
    assert weights.resolve("1.5").unet_path.is_file()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # HF_HUB_CACHE wins over HF_HOME
    with pytest.raises(WeightsNotFound):
        weights.resolve("1.5")


def test_missing_files_are_all_listed_with_the_pull_command(tmp_path):
    rel = write_tiny_release(tmp_path / "hub", "1.6", drop=("whisper", "vae_weights"))
    with pytest.raises(WeightsNotFound) as info:
        weights.resolve("1.6", rel.cache)
    err = info.value
    assert err.missing == ["ByteDance/LatentSync-1.6/whisper/tiny.pt", "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    msg = str(err)
    for ref in err.missing:
        assert ref in msg
    assert f"lipline weights pull --version 1.6 --cache-dir {rel.cache}" in msg
    assert isinstance(err, EngineError)
    with pytest.raises(WeightsNotFound) as info:  # an empty cache: all four
        weights.resolve("1.5", tmp_path / "empty")
    assert len(info.value.missing) == 4 and "lipline weights pull --version 1.5" in str(info.value)


def test_mask_lookup_order(release, monkeypatch, tmp_path):
    env_mask = tmp_path / "env_mask.png"
    env_mask.write_bytes(release.mask_file.read_bytes())
    monkeypatch.setenv(weights.MASK_ENV, str(env_mask))
    assert weights.resolve("1.5", release.cache).mask_path == env_mask
    assert weights.resolve("1.5", release.cache, mask_path=release.mask_file).mask_path == release.mask_file
    with pytest.raises(WeightsNotFound, match="does not exist"):
        weights.resolve("1.5", release.cache, mask_path=tmp_path / "nope.png")
    monkeypatch.delenv(weights.MASK_ENV)
    rel = write_tiny_release(tmp_path / "hub", "1.5", with_mask_in_snapshot=True)
    rw = weights.resolve("1.5", rel.cache)
    assert rw.mask_path is not None and rw.mask_path.name == "mask.png" and LS_COMMIT in str(rw.mask_path)


def test_falls_back_to_a_snapshot_without_refs(tmp_path):
    rel = write_tiny_release(tmp_path / "hub", "1.5")
    for repo in ("ByteDance/LatentSync-1.5", "stabilityai/sd-vae-ft-mse"):
        (repo_dir(rel.cache, repo) / "refs" / "main").unlink()
    assert weights.resolve("1.5", rel.cache).unet_path.is_file()


def test_sha256_is_lazy_cached_and_equals_hashlib(release):
    rw = weights.resolve("1.5", release.cache, mask_path=release.mask_file)
    assert rw._sha256 is None
    digests = rw.sha256
    assert set(digests) == {"unet", "whisper", "vae_config", "vae_weights", "mask"}
    for role, path in rw.files().items():
        assert digests[role] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert rw.sha256 is digests


def test_verify_reports_size_and_sha256(release):
    files = weights.verify("1.5", release.cache, mask_path=release.mask_file, unet_config=UNet3DConfig.tiny())
    assert [f.role for f in files] == ["unet", "whisper", "vae_config", "vae_weights", "mask"]
    for f in files:
        assert f.ok, (f.role, f.problems)
        data = Path(f.path).read_bytes()
        assert f.size == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
    by_role = {f.role: f for f in files}
    assert by_role["unet"].details["entries"] == len(release.unet_sd)
    assert by_role["whisper"].details["encoder_entries"] == 4 * 15 + 7
    assert by_role["unet"].details["hub_sha256"] == by_role["unet"].sha256  # LFS blob name = content hash
    json.dumps([f.to_dict() for f in files])


def test_verify_finds_missing_removed_and_corrupt(tmp_path):
    from .tiny_release import tiny_unet

    sd = {k: v.clone() for k, v in tiny_unet().state_dict().items()}
    removed = "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"
    assert removed in sd
    del sd[removed]
    rel = write_tiny_release(tmp_path / "hub", "1.5", unet_sd=sd, drop=("vae_config",))
    # corrupt the whisper blob in place (the snapshot entry still links to the blob named by the Hub's hash)
    whisper = repo_dir(rel.cache, "ByteDance/LatentSync-1.5") / "snapshots" / LS_COMMIT / "whisper" / "tiny.pt"
    blob = whisper.resolve()
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    files = {f.role: f for f in weights.verify("1.5", rel.cache, unet_config=UNet3DConfig.tiny())}
    assert "1 missing key(s): " + removed in files["unet"].problems[0]
    assert any("corrupt" in p for p in files["whisper"].problems)
    assert files["vae_config"].path is None and "lipline weights pull --version 1.5" in files["vae_config"].problems[0]
    assert files["mask"].ok and files["mask"].details["generated"]  # no mask file: the generated mask is used


def test_verify_against_the_official_architecture(release):
    # The tiny checkpoint is not the official one: verify with the default (full) config says so.
    files = {f.role: f for f in weights.verify("1.5", release.cache, mask_path=release.mask_file)}
    unet_problems = " | ".join(files["unet"].problems)
    assert "shape mismatch" in unet_problems and "the official checkpoint has 1246" in unet_problems
    assert "n_audio_state=64 != UNet cross_attention_dim=384" in " | ".join(files["whisper"].problems)


def test_expected_unet_shapes_match_the_official_key_list(conformance_dir):
    ref = json.loads((conformance_dir / "unet_full_state_dict_keys.json").read_text())
    expected = {k: tuple(shape) for k, shape, _kind in ref["state_dict"]}
    assert weights.expected_unet_shapes() == expected
    assert len(expected) == weights.OFFICIAL_UNET_ENTRIES
    assert weights.check_unet_state_dict({k: torch.empty(s, device="meta") for k, s in expected.items()}) == []


def test_expected_whisper_shapes_match_the_official_key_list(conformance_dir):
    ref = json.loads((conformance_dir / "whisper_tiny_state_dict_keys.json").read_text())
    expected = {k: tuple(shape) for k, shape in ref["encoder_state_dict"]}
    assert weights.expected_whisper_encoder_shapes(ref["dims"]) == expected


def test_pull_calls_hf_hub_download_for_every_file(release, monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    real = huggingface_hub.hf_hub_download

    def fake(repo_id, filename, **kw):
        calls.append((repo_id, filename, kw.get("cache_dir")))
        return real(repo_id, filename, cache_dir=kw["cache_dir"], local_files_only=True)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    events = []
    rw = weights.pull("1.5", release.cache, progress=lambda ev, req, path: events.append((ev, req.role)))
    assert [(r, f) for r, f, _ in calls] == [(x.repo_id, x.filename) for x in weights.required_files("1.5")]
    assert all(c == str(release.cache) for _, _, c in calls)
    assert events[:2] == [("start", "unet"), ("done", "unet")] and len(events) == 8
    assert rw.unet_path.is_file()


def test_pull_offline_uses_the_cache_or_fails_clearly(release, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rw = weights.pull("1.5", release.cache)  # everything cached: no network needed
    assert rw.whisper_path.is_file()
    with pytest.raises(EngineError, match=r"could not fetch ByteDance/LatentSync-1\.6/latentsync_unet\.pt"):
        weights.pull("1.6", tmp_path / "empty")


def test_importing_weights_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lipline.models.latentsync.weights; print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_put_hub_file_matches_hf_layout(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    p = put_hub_file(tmp_path, "org/name", "a/b.pt", b"xyz", LS_COMMIT)
    assert try_to_load_from_cache("org/name", "a/b.pt", cache_dir=str(tmp_path)) == str(p)


def test_lipline_weights_cache_wins_over_hf_home(monkeypatch, tmp_path):
    from lipline.models.latentsync.weights import default_cache_dir

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("LIPLINE_WEIGHTS_CACHE", raising=False)
    assert default_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("LIPLINE_WEIGHTS_CACHE", str(tmp_path / "weights"))
    assert default_cache_dir() == tmp_path / "weights"
