"""Which files each LatentSync release needs, where they come from, and how to fetch, find and check them.

Released artefacts (SPEC section 1):

* ``ByteDance/LatentSync-1.5`` (256 px) / ``ByteDance/LatentSync-1.6`` (512 px): ``latentsync_unet.pt``
  (pickled dict, weights under ``state_dict``, 1246 entries) and ``whisper/tiny.pt`` (stock openai-whisper
  tiny: ``{"dims", "model_state_dict"}``).
* ``stabilityai/sd-vae-ft-mse``: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (diffusers layout).
* ``mask.png`` (256x256, 0/255) ships with the official *code*, not the Hub. It is looked for, in order, at
  the ``mask_path`` argument, the ``LIPLINE_LATENTSYNC_MASK`` environment variable, then as ``mask.png`` in
  the LatentSync Hub snapshot (present only if someone put it there). When none is found, loading falls back
  to the generated approximation (`lipline.models.face.mask.official_mask`) and records ``"generated"`` as the
  mask's source in the provenance.

Everything goes through the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE`` or ``cache_dir``),
so ``HF_ENDPOINT`` mirrors, tokens and ``HF_HUB_OFFLINE`` behave as for any other Hub download.
:func:`resolve` never touches the network; :func:`pull` downloads; :func:`verify` hashes and checks content.

Importing this module does not import torch (the CLI stays light); the checks in :func:`verify` import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lipline.errors import EngineError
from lipline.settings import get_settings

UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = "whisper/tiny.pt"
MASK_FILE = "mask.png"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
MASK_ENV = "LIPLINE_LATENTSYNC_MASK"
OFFICIAL_UNET_ENTRIES = 1246  # 1206 learned tensors + 40 pos_encoder.pe buffers (SPEC section 1)
OFFICIAL_WHISPER_ENCODER_ENTRIES = 67
MASK_SIZE = 256
_CHUNK = 1 << 20


@dataclass(frozen=True)
class VersionSpec:
    version: str
    repo_id: str
    resolution: int


VERSIONS: dict[str, VersionSpec] = {
    "1.5": VersionSpec("1.5", "ByteDance/LatentSync-1.5", 256),
    "1.6": VersionSpec("1.6", "ByteDance/LatentSync-1.6", 512),
}


class WeightsNotFound(EngineError):
    """Some weight files are not in the local Hugging Face cache; ``missing`` lists ``repo_id/filename``."""

    def __init__(self, message: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(message)


@dataclass(frozen=True)
class RequiredFile:
    """One file a release needs: ``role`` (unet, whisper, vae_config, vae_weights), Hub repo and file name."""

    role: str
    repo_id: str
    filename: str

    @property
    def ref(self) -> str:
        return f"{self.repo_id}/{self.filename}"


@dataclass
class WeightFile:
    """Result of :func:`verify` for one file."""

    role: str
    source: str  # "repo_id/filename", or the local mask path
    path: str | None
    size: int | None = None
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "source": self.source, "path": self.path, "size": self.size, "sha256": self.sha256,
                "ok": self.ok, "problems": list(self.problems), "details": dict(self.details)}


def version_spec(version: str) -> VersionSpec:
    spec = VERSIONS.get(str(version))
    if spec is None:
        raise EngineError(f"unknown LatentSync version {version!r}; known versions: {', '.join(VERSIONS)}")
    return spec


def required_files(version: str) -> list[RequiredFile]:
    """Hub files release ``version`` needs (the mask is not on the Hub; see module docstring)."""
    spec = version_spec(version)
    return [
        RequiredFile("unet", spec.repo_id, UNET_FILE),
        RequiredFile("whisper", spec.repo_id, WHISPER_FILE),
        RequiredFile("vae_config", VAE_REPO, VAE_FILES[0]),
        RequiredFile("vae_weights", VAE_REPO, VAE_FILES[1]),
    ]


def default_cache_dir() -> Path:
    """The weights cache, read from the environment *now*: LIPLINE_WEIGHTS_DIR (or its older name
    LIPLINE_WEIGHTS_CACHE; `Settings.weights_dir`), else the Hub cache huggingface_hub would use (HF_HUB_CACHE,
    HF_HOME)."""
    configured = get_settings().weights_dir
    if configured is not None:
        return configured
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def pull_command(version: str, cache_dir: str | os.PathLike | None = None) -> str:
    cmd = f"lipline weights pull --version {version}"
    return cmd + (f" --cache-dir {cache_dir}" if cache_dir is not None else "")


def mask_help(version: str) -> str:
    spec = version_spec(version)
    return (f"the LatentSync mask ({MASK_FILE}, 256x256, 0/255) is not on the Hub: it ships with the official code "
            f"(bytedance/LatentSync, latentsync/utils/mask.png). Without it a generated approximation is used "
            f"(23 of 65536 boundary pixels differ). For the official one, put it at a path and set "
            f"{MASK_ENV}=/path/to/mask.png, pass mask_path=, or place it as {MASK_FILE} in the {spec.repo_id} "
            f"snapshot of the Hugging Face cache")


# --------------------------------------------------------------------------------------------------
# Hashing (streamed, cached per process by path/size/mtime)

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, streamed in 1 MiB chunks; cached per process while size and mtime are unchanged."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _hub_lfs_sha256(path: str | os.PathLike) -> str | None:
    """The SHA-256 the Hub recorded for an LFS file: the name of the cache blob the snapshot entry links to."""
    p = Path(path)
    if not p.is_symlink():
        return None
    blob = Path(os.path.realpath(p))
    return blob.name if blob.parent.name == "blobs" and _SHA256_RE.match(blob.name) else None


# --------------------------------------------------------------------------------------------------
# Resolved files


@dataclass
class ResolvedWeights:
    """Local paths of every file of one release (all present), plus the mask when found."""

    version: str
    resolution: int
    unet_path: Path
    whisper_path: Path
    vae_dir: Path
    mask_path: Path | None
    cache_dir: Path | None = None
    revisions: dict[str, str] = field(default_factory=dict)  # repo_id -> snapshot commit
    _sha256: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def files(self) -> dict[str, Path]:
        """role -> path of every file (mask included when known)."""
        out = {"unet": self.unet_path, "whisper": self.whisper_path,
               "vae_config": self.vae_dir / VAE_FILES[0], "vae_weights": self.vae_dir / VAE_FILES[1]}
        if self.mask_path is not None:
            out["mask"] = self.mask_path
        return out

    @property
    def sha256(self) -> dict[str, str]:
        """role -> SHA-256 of each file, computed on first access (streamed) and cached."""
        if self._sha256 is None:
            self._sha256 = {role: sha256_file(p) for role, p in self.files().items()}
        return self._sha256

    def mask_provenance(self) -> dict[str, Any]:
        """Which mask a load uses: the file found (path + SHA-256) or, when none was found, the generated one."""
        if self.mask_path is None:
            return {"source": "generated", "generator": "lipline.models.face.mask.official_mask"}
        return {"source": "file", "path": str(self.mask_path), "sha256": sha256_file(self.mask_path)}

    def provenance(self, hashes: bool = True) -> dict[str, Any]:
        spec = version_spec(self.version)
        out: dict[str, Any] = {
            "version": self.version, "resolution": self.resolution,
            "repos": {spec.repo_id: self.revisions.get(spec.repo_id), VAE_REPO: self.revisions.get(VAE_REPO)},
            "files": {role: str(p) for role, p in self.files().items()},
        }
        if hashes:
            out["sha256"] = dict(self.sha256)
        out["mask"] = self.mask_provenance()
        return out


def _snapshot_commit(path: str) -> str | None:
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def _find_cached(repo_id: str, filename: str, cache: Path, revision: str | None) -> str | None:
    """Path of a cached file, without network: the ``refs/<revision>`` snapshot first, else the newest snapshot."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision)
    if isinstance(hit, str):
        return hit
    if revision is not None:
        return None
    # No refs/main (e.g. fetched with a pinned revision): take the most recent snapshot holding the file.
    from huggingface_hub.file_download import repo_folder_name

    snaps = cache / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    if not snaps.is_dir():
        return None
    candidates = [s / filename for s in snaps.iterdir() if (s / filename).is_file()]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


def _find_mask(version: str, mask_path: str | os.PathLike | None, snapshot_dir: Path | None) -> Path | None:
    for source, value in (("mask_path", mask_path), (MASK_ENV, get_settings().latentsync_mask)):
        if value is not None:
            p = Path(value).expanduser()
            if not p.is_file():
                raise WeightsNotFound(f"LatentSync mask given by {source} does not exist: {p}. {mask_help(version)}", [str(p)])
            return p
    if snapshot_dir is not None and (snapshot_dir / MASK_FILE).is_file():
        return snapshot_dir / MASK_FILE
    return None


def resolve(version: str = "1.5", cache_dir: str | os.PathLike | None = None, *,
            mask_path: str | os.PathLike | None = None, revision: str | None = None) -> ResolvedWeights:
    """Find every file of release ``version`` in the local Hugging Face cache (no network).

    Raises `WeightsNotFound` listing every missing file and the command that fetches them. The mask is
    optional: ``mask_path`` is None when no file is found, and loading then uses the generated mask
    (`ResolvedWeights.mask_provenance` says which); `mask_help` explains where to put the official file.
    """
    spec = version_spec(version)
    cache = _cache_dir(cache_dir)
    found: dict[str, str] = {}
    missing: list[str] = []
    for req in required_files(version):
        hit = _find_cached(req.repo_id, req.filename, cache, revision if req.repo_id == spec.repo_id else None)
        if hit is None:
            missing.append(req.ref)
        else:
            found[req.role] = hit
    if missing:
        raise WeightsNotFound(
            f"LatentSync {version} weights are not in the Hugging Face cache at {cache}: missing {', '.join(missing)}. "
            f"Fetch them with: {pull_command(version, cache_dir)}", missing)
    unet = Path(found["unet"])
    snapshot_dir = unet.parent
    revisions = {spec.repo_id: _snapshot_commit(found["unet"]) or "", VAE_REPO: _snapshot_commit(found["vae_config"]) or ""}
    return ResolvedWeights(
        version=spec.version, resolution=spec.resolution, unet_path=unet, whisper_path=Path(found["whisper"]),
        vae_dir=Path(found["vae_config"]).parent, mask_path=_find_mask(version, mask_path, snapshot_dir),
        cache_dir=cache, revisions=revisions)


def pull(version: str = "1.5", cache_dir: str | os.PathLike | None = None,
         progress: Callable[[str, RequiredFile, str | None], None] | None = None, *,
         revision: str | None = None, token: str | bool | None = None) -> ResolvedWeights:
    """Download (or find already cached) every Hub file of ``version`` with ``huggingface_hub.hf_hub_download``.

    Honours ``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT`` mirrors, tokens and ``HF_HUB_OFFLINE`` (offline: only
    what is cached). ``progress(event, file, path)`` is called with ``event`` "start" (path None) and "done".
    Failures raise `EngineError` naming the file, the repo and the underlying error.
    """
    from huggingface_hub import hf_hub_download

    spec = version_spec(version)
    kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(_cache_dir(cache_dir))
    elif os.environ.get("HF_HOME") or os.environ.get("HF_HUB_CACHE"):
        kwargs["cache_dir"] = str(default_cache_dir())  # env may have changed since huggingface_hub was imported
    for req in required_files(version):
        if progress is not None:
            progress("start", req, None)
        try:
            path = hf_hub_download(req.repo_id, req.filename, revision=revision if req.repo_id == spec.repo_id else None,
                                   token=token, **kwargs)
        except Exception as exc:  # network, auth, offline mode, missing entry: one clear message
            raise EngineError(f"could not fetch {req.ref} for LatentSync {version}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''} (HF_ENDPOINT mirrors, HF_TOKEN and HF_HUB_OFFLINE "
                              f"are honoured)") from exc
        if progress is not None:
            progress("done", req, str(path))
    return resolve(version, cache_dir, revision=revision)


# --------------------------------------------------------------------------------------------------
# Verification


def _load_pickle(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        return torch.load(str(path), map_location="cpu", weights_only=True)


def expected_unet_shapes(config: Any = None) -> dict[str, tuple[int, ...]]:
    """name -> shape of every parameter and buffer of a UNet built on the meta device from ``config``.

    ``config`` defaults to the full official `UNet3DConfig()`. Buffers are included whether persistent or not,
    because the released checkpoint carries the 40 ``pos_encoder.pe`` tables.
    """
    import torch

    from .config import UNet3DConfig
    from .unet import UNet3DConditionModel

    with torch.device("meta"):
        model = UNet3DConditionModel(config if config is not None else UNet3DConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k, v in model.named_buffers():
        shapes.setdefault(k, tuple(v.shape))
    return shapes


def shape_problems(expected: dict[str, tuple], got: dict[str, tuple], what: str = "") -> list[str]:
    """Missing, unexpected and wrong-shape keys of a state dict, first five of each named."""
    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")

    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing {what}key(s): {listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected {what}key(s): {listed(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} {what}shape mismatch(es): "
                        + ", ".join(f"{k} {got[k]} != {expected[k]}" for k in wrong[:5]))
    return problems


def check_unet_state_dict(sd: dict[str, Any], config: Any = None) -> list[str]:
    """Problems of a UNet state dict against the architecture (exact names and shapes; 1246 for the official one)."""
    problems: list[str] = []
    expected = expected_unet_shapes(config)
    got = {k: tuple(v.shape) for k, v in sd.items()}
    problems += shape_problems(expected, got)
    if config is None and len(got) != OFFICIAL_UNET_ENTRIES:
        problems.append(f"{len(got)} entries, the official checkpoint has {OFFICIAL_UNET_ENTRIES}")
    return problems


def expected_whisper_encoder_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """openai-whisper ``encoder.*`` names and shapes implied by ``dims``."""
    d, ctx, mels, n = int(dims["n_audio_state"]), int(dims["n_audio_ctx"]), int(dims["n_mels"]), int(dims["n_audio_layer"])
    out: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (ctx, d),
        "encoder.conv1.weight": (d, mels, 3), "encoder.conv1.bias": (d,),
        "encoder.conv2.weight": (d, d, 3), "encoder.conv2.bias": (d,),
        "encoder.ln_post.weight": (d,), "encoder.ln_post.bias": (d,),
    }
    for i in range(n):
        b = f"encoder.blocks.{i}."
        for name in ("query", "value", "out"):
            out[f"{b}attn.{name}.weight"] = (d, d)
            out[f"{b}attn.{name}.bias"] = (d,)
        out[f"{b}attn.key.weight"] = (d, d)
        for ln in ("attn_ln", "mlp_ln"):
            out[f"{b}{ln}.weight"] = (d,)
            out[f"{b}{ln}.bias"] = (d,)
        out[f"{b}mlp.0.weight"] = (4 * d, d)
        out[f"{b}mlp.0.bias"] = (4 * d,)
        out[f"{b}mlp.2.weight"] = (d, 4 * d)
        out[f"{b}mlp.2.bias"] = (d,)
    return out


def check_whisper_checkpoint(ckpt: Any, cross_attention_dim: int | None = None) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        return ["not an openai-whisper checkpoint (expected a dict with 'dims' and 'model_state_dict')"], {}
    dims = dict(ckpt["dims"])
    need = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_layer")
    if any(k not in dims for k in need):
        return [f"dims lack {[k for k in need if k not in dims]}"], {"dims": dims}
    sd = ckpt["model_state_dict"]
    expected = expected_whisper_encoder_shapes(dims)
    got = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("encoder.")}
    problems += shape_problems(expected, got, what="encoder ")
    if cross_attention_dim is not None and int(dims["n_audio_state"]) != int(cross_attention_dim):
        problems.append(f"whisper width n_audio_state={dims['n_audio_state']} != UNet cross_attention_dim={cross_attention_dim}")
    return problems, {"dims": dims, "encoder_entries": len(got), "entries": len(sd)}


_VAE_REQUIRED = ("encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight")


def check_vae(config_path: Path, weights_path: Path) -> tuple[list[str], dict[str, Any]]:
    """Config is an AutoencoderKL config; the safetensors header parses and holds the core tensors with matching shapes."""
    problems: list[str] = []
    try:
        cfg = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"config.json unreadable: {exc}"], {}
    if cfg.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        problems.append(f"config _class_name is {cfg.get('_class_name')!r}, expected 'AutoencoderKL'")
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="numpy") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # header corrupt / not safetensors
        return problems + [f"weights unreadable as safetensors: {exc}"], {}
    absent = [k for k in _VAE_REQUIRED if k not in shapes]
    if absent:
        problems.append(f"missing VAE tensors: {', '.join(absent)}")
    boc = cfg.get("block_out_channels")
    lat = cfg.get("latent_channels", 4)
    if boc and "encoder.conv_in.weight" in shapes and shapes["encoder.conv_in.weight"][0] != boc[0]:
        problems.append(f"encoder.conv_in.weight {shapes['encoder.conv_in.weight']} does not match block_out_channels {boc}")
    if "quant_conv.weight" in shapes and shapes["quant_conv.weight"][0] != 2 * lat:
        problems.append(f"quant_conv.weight {shapes['quant_conv.weight']} does not match latent_channels {lat}")
    return problems, {"tensors": len(shapes), "block_out_channels": boc}


def check_mask(path: Path) -> tuple[list[str], dict[str, Any]]:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as exc:
        return [f"not a readable image: {exc}"], {}
    problems = []
    if arr.shape[:2] != (MASK_SIZE, MASK_SIZE):
        problems.append(f"size {arr.shape[1]}x{arr.shape[0]}, expected {MASK_SIZE}x{MASK_SIZE}")
    values = sorted(int(v) for v in np.unique(arr))
    if not set(values) <= {0, 255}:
        problems.append(f"values other than 0/255 ({len(values)} distinct)")
    return problems, {"size": [int(arr.shape[1]), int(arr.shape[0])], "zero_fraction": float((arr == 0).mean())}


def verify(version: str = "1.5", cache_dir: str | os.PathLike | None = None, *,
           mask_path: str | os.PathLike | None = None, unet_config: Any = None,
           progress: Callable[[str], None] | None = None) -> list[WeightFile]:
    """Hash (SHA-256, streamed) and check every file of ``version`` found in the local cache.

    Missing files are reported as entries with a problem (not raised). Content checks: the UNet checkpoint has
    exactly the names/shapes of a meta-device `UNet3DConditionModel` built from ``unet_config`` (default: the full
    official `UNet3DConfig()`, which also requires exactly 1246 entries); whisper holds every ``encoder.*`` key for
    its ``dims`` and its width equals the UNet's ``cross_attention_dim``; the VAE config/safetensors parse and
    agree; the mask is a 256x256 0/255 image; a file whose hash differs from the Hub's LFS id (the cache blob
    name) is reported as corrupt.
    """
    cache = _cache_dir(cache_dir)
    spec = version_spec(version)
    results: list[WeightFile] = []
    paths: dict[str, Path] = {}
    for req in required_files(version):
        hit = _find_cached(req.repo_id, req.filename, cache, None)
        if hit is None:
            results.append(WeightFile(req.role, req.ref, None, problems=[f"missing from {cache}; run: {pull_command(version, cache_dir)}"]))
        else:
            paths[req.role] = Path(hit)
            results.append(WeightFile(req.role, req.ref, hit))
    try:
        mask = _find_mask(version, mask_path, paths["unet"].parent if "unet" in paths else None)
    except WeightsNotFound as exc:
        results.append(WeightFile("mask", str(exc.missing[0]), None, problems=[str(exc)]))
        mask = None
    else:
        results.append(WeightFile("mask", str(mask) if mask else "generated (no mask file; see lipline.models.face.mask)",
                                  str(mask) if mask else None,
                                  details={} if mask else {"generated": True, "note": mask_help(version)}))
    cad = None
    if unet_config is not None:
        cad = int(getattr(unet_config, "cross_attention_dim"))
    else:
        cad = 384
    for wf in results:
        if wf.path is None:
            continue
        p = Path(wf.path)
        if progress is not None:
            progress(f"hashing {wf.source}")
        wf.size = p.stat().st_size
        wf.sha256 = sha256_file(p)
        hub = _hub_lfs_sha256(p)
        if hub is not None:
            wf.details["hub_sha256"] = hub
            if hub != wf.sha256:
                wf.problems.append(f"corrupt: SHA-256 {wf.sha256[:12]}... differs from the Hub's {hub[:12]}...; re-run {pull_command(version, cache_dir)}")
        if progress is not None:
            progress(f"checking {wf.source}")
        try:
            if wf.role == "unet":
                ckpt = _load_pickle(p)
                sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
                if not isinstance(sd, dict):
                    wf.problems.append("not a LatentSync UNet checkpoint (no 'state_dict' dict)")
                else:
                    wf.details["entries"] = len(sd)
                    wf.problems.extend(check_unet_state_dict(sd, unet_config))
                del ckpt
            elif wf.role == "whisper":
                probs, det = check_whisper_checkpoint(_load_pickle(p), cad)
                wf.problems.extend(probs)
                wf.details.update(det)
            elif wf.role == "vae_weights" and "vae_config" in paths:
                probs, det = check_vae(paths["vae_config"], p)
                wf.problems.extend(probs)
                wf.details.update(det)
            elif wf.role == "vae_config":
                try:
                    json.loads(p.read_text())
                except ValueError as exc:
                    wf.problems.append(f"not valid JSON: {exc}")
            elif wf.role == "mask":
                probs, det = check_mask(p)
                wf.problems.extend(probs)
                wf.details.update(det)
        except Exception as exc:  # unreadable / truncated pickle etc.
            wf.problems.append(f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return results


__all__ = [
    "MASK_ENV", "OFFICIAL_UNET_ENTRIES", "RequiredFile", "ResolvedWeights", "VERSIONS", "VersionSpec", "WeightFile",
    "WeightsNotFound", "check_unet_state_dict", "default_cache_dir", "expected_unet_shapes", "mask_help", "pull",
    "pull_command", "required_files", "resolve", "sha256_file", "verify", "version_spec",
]
