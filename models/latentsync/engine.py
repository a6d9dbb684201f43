"""LatentSync as a ``face`` engine: aligned faces + per-frame audio chunks -> generated faces, with an OOM ladder.

`LatentSyncEngine` loads the model once (lazily, on the first `generate`, or with `load`) and reuses it; the
registry (`lipline.models.registry.get_engine`) keeps one instance per process.

Out-of-memory ladder
--------------------
When a run raises ``torch.cuda.OutOfMemoryError`` the engine frees what it can (drops the failed attempt,
``gc.collect()``, ``torch.cuda.empty_cache()`` when CUDA is present) and retries with the next rung, in order:

1. ``window_batch`` - halve the number of 16-frame windows denoised together (repeated until 1);
2. ``vae_slicing`` - decode one frame at a time instead of a whole window;
3. ``fp16`` - cast UNet and VAE from float32 to float16 (halves weights and activations). Skipped when already
   running fp16 **or bf16**: bf16 -> fp16 frees no memory (both 2 bytes) and only changes numerics;
4. ``deepcache_off`` - turn DeepCache off (skipped when already off). DeepCache is on by default and *reduces
   compute*, not memory: to skip the deep layers on 2 of every 3 steps it keeps the output of the last full
   pass alive between steps. In this implementation (`unet.DeepCacheState.hidden`) that is one tensor, the
   hidden state entering the last layer of the last up block, ``[2B, 320, 16, R/8, R/8]`` - about 84 MB per
   window at 512 px in fp16 with CFG (21 MB at 256 px). Turning DeepCache off frees exactly that tensor and
   nothing else, at the cost of ~2x UNet time, so it is the last rung and rarely the one that rescues a run;
   it is kept because it is the only memory DeepCache holds and because the issue asks for it.

Every rung taken is recorded in `FaceEngineResult.rungs_taken` (e.g. ``["window_batch=2", "vae_slicing"]``).
When no rung is left the engine raises `InsufficientGPUMemory` whose ``rungs`` list every rung tried: the job
belongs on a pool with a bigger GPU. Settings reduced by the ladder apply to that call only, except that
weights cast to fp16 stay fp16 until a later call asks for a wider dtype, which reloads them from disk (a
model given to the constructor is cast back instead).

Fault injection (tests, drills on a GPU pool): ``fault_injection="<rung>"`` simulates a GPU on which the job
fits only once the ladder has reached ``<rung>``: every attempt before it raises a synthetic
``torch.cuda.OutOfMemoryError`` (a rung that does not apply counts as reached when a later rung is taken).
``fault_injection="all"`` fails every attempt. Off (None) by default.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from lipline.errors import EngineError, InsufficientGPUMemory

from .model import LatentSyncModel
from .scheduler import SCHEDULERS

RUNGS = ("window_batch", "vae_slicing", "fp16", "deepcache_off")
FAULT_CHOICES = RUNGS + ("all",)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_DTYPE_WIDTH = {"fp16": 2, "bf16": 2, "fp32": 4}
MAX_AUTO_WINDOW_BATCH = 4
# Rough activation memory of one 16-frame window with CFG at 256 px in a 2-byte dtype (x4 at 512, x2 in fp32);
# only used to pick the automatic window batch, the ladder corrects an overestimate of free memory.
_WINDOW_BYTES_256 = 2.5 * 2**30


@dataclass
class EngineParams:
    """Generation settings. Defaults follow the official ``inference.sh`` / Gradio preset (SPEC section 2).

    ``window_batch`` None = automatic (1 on CPU; on CUDA from free memory, at most 4). ``dtype`` "auto" = fp16 on
    Ampere or newer CUDA GPUs, fp32 on older GPUs and CPU ("bf16" is allowed). ``channels_last`` None = on for
    CUDA. ``compile`` wraps the UNet with ``torch.compile`` (first call slower). ``scheduler`` "ddim" (official)
    or "dpmpp" (DPM-Solver++, optional faster sampler: use it with ``steps=10``; off by default until its quality
    difference against DDIM-20 is measured with the official weights, see ``bench/engine_throughput.py``).
    """

    steps: int = 20
    guidance: float = 1.5
    deepcache: bool = True
    seed: int = 1247
    window_batch: int | None = None
    dtype: str = "auto"
    compile: bool = False
    channels_last: bool | None = None
    vae_slicing: bool = False
    window: int = 16
    scheduler: str = "ddim"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise EngineError(f"steps must be >= 1, got {self.steps}")
        if self.guidance < 1.0:
            raise EngineError(f"guidance must be >= 1.0 (1.0 disables classifier-free guidance), got {self.guidance}")
        if self.window_batch is not None and self.window_batch < 1:
            raise EngineError(f"window_batch must be >= 1 or None (auto), got {self.window_batch}")
        if self.dtype not in ("auto", *DTYPES):
            raise EngineError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.scheduler not in SCHEDULERS:
            raise EngineError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}")
        if self.window < 1:
            raise EngineError(f"window must be >= 1, got {self.window}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceEngineResult:
    faces: torch.Tensor  # uint8 [N, 3, R, R]
    faces_float: torch.Tensor | None = None  # float32 [N, 3, R, R] in about [-1, 1] (only with return_float=True)
    init_noise: torch.Tensor | None = None  # the [1, 4, 1, R/8, R/8] initial noise used (pass it to the next call)
    rungs_taken: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    settings_used: dict[str, Any] = field(default_factory=dict)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def auto_dtype(device: torch.device) -> str:
    """fp16 on Ampere+ CUDA (compute capability major >= 8), else fp32 (the official rule, SPEC section 2)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return "fp16"
    return "fp32"


def auto_window_batch(resolution: int, device: torch.device, dtype: str) -> int:
    if device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(device)
    per_window = _WINDOW_BYTES_256 * (resolution / 256) ** 2 * (_DTYPE_WIDTH[dtype] / 2)
    return int(max(1, min(MAX_AUTO_WINDOW_BATCH, (0.8 * free) // per_window)))


def _synthetic_oom(stage: str) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(f"synthetic CUDA out of memory (fault injection, attempt at {stage!r})")


class LatentSyncEngine:
    """Face engine for LatentSync 1.5 (256 px) / 1.6 (512 px); see the module docstring for the OOM ladder."""

    name = "latentsync"
    kind = "face"

    def __init__(self, version: str = "1.5", cache_dir: str | os.PathLike | None = None,
                 device: str | torch.device | None = None, model: LatentSyncModel | None = None,
                 fault_injection: str | None = None, *, mask_path: str | os.PathLike | None = None,
                 unet_config: Any = None) -> None:
        if fault_injection is not None and fault_injection not in FAULT_CHOICES:
            raise EngineError(f"fault_injection must be one of {', '.join(FAULT_CHOICES)} or None; got {fault_injection!r}")
        self.version = str(model.version if model is not None else version)
        if model is None:
            from .weights import version_spec

            version_spec(self.version)  # unknown versions fail at construction, not at first use
        self.cache_dir = cache_dir
        self.mask_path = mask_path
        self.unet_config = unet_config
        self.device = torch.device(device) if device is not None else (model.device if model is not None else default_device())
        self.fault_injection = fault_injection
        self._model = model
        self._owns_model = model is None
        self._lock = threading.RLock()
        self._compiled = False
        self._channels_last = False
        self._weights_reduced = False  # weights were cast down by the ladder (a wider dtype needs a reload)
        self.load_count = 0
        self.last_load_s = 0.0
        if model is not None and model.device != self.device:
            model.to(device=self.device)

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> LatentSyncModel | None:
        return self._model

    @property
    def resolution(self) -> int:
        from .weights import version_spec

        return self._model.resolution if self._model is not None else version_spec(self.version).resolution

    def load(self, dtype: str | torch.dtype | None = None) -> LatentSyncModel:
        """Load the model now (idempotent): weights in ``dtype`` (default: auto for the device)."""
        with self._lock:
            if self._model is None:
                name = dtype if isinstance(dtype, str) else (_DTYPE_NAMES.get(dtype) if dtype is not None else None)
                name = auto_dtype(self.device) if name in (None, "auto") else name
                t0 = time.perf_counter()
                self._model = LatentSyncModel.from_pretrained(self.version, self.cache_dir, device=self.device,
                                                              dtype=DTYPES[name], mask_path=self.mask_path,
                                                              unet_config=self.unet_config)
                self.last_load_s = time.perf_counter() - t0
                self.load_count += 1
                self._weights_reduced = False
                self._compiled = self._channels_last = False
            return self._model

    def _set_dtype(self, name: str) -> None:
        model = self._model
        assert model is not None
        want = DTYPES[name]
        have = model.dtype
        if have == want:
            return
        widening = have.itemsize < want.itemsize or (have == torch.bfloat16 and want == torch.float16)
        if self._weights_reduced and widening and self._owns_model:
            self._model = None  # reload the wider weights from disk instead of upcasting rounded ones
            self._free()
            self.load(name)
            return
        model.to(dtype=want)
        if not widening:
            self._weights_reduced = True
        elif want.itemsize >= 4:
            self._weights_reduced = False

    def _prepare(self, params: EngineParams, device: torch.device) -> None:
        model = self._model
        assert model is not None
        if device.type == "cuda" and (params.channels_last if params.channels_last is not None else True) and not self._channels_last:
            for module in (model.unet, model.vae):
                try:
                    module.to(memory_format=torch.channels_last)
                except (RuntimeError, TypeError):  # a 5-D or unsupported parameter: keep the default layout
                    pass
            self._channels_last = True
        if params.compile and not self._compiled:
            model.unet.compile()
            self._compiled = True

    @staticmethod
    def _free() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ ladder
    @staticmethod
    def _next_rung(s: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
        """(rung, label, new settings) of the next rung that applies to settings ``s``, or None."""
        if s["window_batch"] > 1:
            n = max(1, s["window_batch"] // 2)
            return "window_batch", f"window_batch={n}", {**s, "window_batch": n}
        if not s["vae_slicing"]:
            return "vae_slicing", "vae_slicing", {**s, "vae_slicing": True}
        if s["dtype"] == "fp32":
            return "fp16", "fp16", {**s, "dtype": "fp16"}
        if s["deepcache"]:
            return "deepcache_off", "deepcache_off", {**s, "deepcache": False}
        return None

    def _inject(self, reached: set[str], stage: str) -> None:
        fi = self.fault_injection
        if fi is None:
            return
        if fi == "all":
            raise _synthetic_oom(stage)
        floor = RUNGS.index(fi)
        if not any(RUNGS.index(r) >= floor for r in reached):
            raise _synthetic_oom(stage)

    # ------------------------------------------------------------------ generate
    def generate(self, faces: Any, audio_chunks: Any, mask: torch.Tensor | None = None,
                 params: EngineParams | None = None, *, progress: Callable[..., Any] | None = None,
                 generator: torch.Generator | None = None, init_noise: torch.Tensor | None = None,
                 return_float: bool = False) -> FaceEngineResult:
        """Lip-sync aligned faces.

        Args:
            faces: uint8 ``[N, 3, R, R]`` (torch or NumPy), R = the release's resolution.
            audio_chunks: ``[N, 50, d]`` whisper chunks, one per frame (see `LatentSyncModel.audio_chunks`).
            mask: float ``[3, R, R]`` (1 keep, 0 regenerate); default the release's mask.
            params: `EngineParams` (defaults: 20 steps, guidance 1.5, DeepCache on, seed 1247).
            generator, init_noise: continue a segment fed in pieces (see `LatentSyncPipeline.generate`); a retry
                on the OOM ladder restarts from the generator state of the first attempt.
            return_float: also return the float faces that the paste-back into the source frame consumes.

        Returns `FaceEngineResult` with uint8 ``[N, 3, R, R]`` faces, the ladder rungs taken, timings and the
        settings finally used. Raises `InsufficientGPUMemory` when every rung ran out of memory.
        """
        params = params or EngineParams()
        faces_t = torch.as_tensor(faces)
        audio_t = torch.as_tensor(audio_chunks)
        with self._lock:
            t_start = time.perf_counter()
            loads_before = self.load_count
            device = self.device
            dtype_name = auto_dtype(device) if params.dtype == "auto" else params.dtype
            model = self.load(dtype_name)
            load_s = self.last_load_s if self.load_count > loads_before else 0.0
            r = model.resolution
            if faces_t.ndim != 4 or tuple(faces_t.shape[1:]) != (3, r, r):
                raise EngineError(f"faces must be uint8 [N, 3, {r}, {r}] for LatentSync {model.version}, got {tuple(faces_t.shape)}")
            if faces_t.dtype != torch.uint8:
                raise EngineError(f"faces must be uint8, got {faces_t.dtype}")
            if audio_t.ndim != 3 or audio_t.shape[0] != faces_t.shape[0]:
                raise EngineError(f"audio_chunks must be [N, 50, d] with N = {faces_t.shape[0]} faces, got {tuple(audio_t.shape)}")
            mask_t = model.mask if mask is None else torch.as_tensor(mask)
            if tuple(mask_t.shape) != (3, r, r):
                raise EngineError(f"mask must be [3, {r}, {r}], got {tuple(mask_t.shape)}")
            self._set_dtype(dtype_name)
            self._prepare(params, device)
            model = self._model
            assert model is not None

            settings = {
                "window_batch": params.window_batch or auto_window_batch(r, device, dtype_name),
                "vae_slicing": params.vae_slicing,
                "dtype": dtype_name,
                "deepcache": params.deepcache,
            }
            rungs_taken: list[str] = []
            reached: set[str] = set()
            attempts: list[dict[str, Any]] = []
            stage = "initial"
            out = None
            rng_state = generator.get_state() if generator is not None else None
            if init_noise is None and generator is not None:
                lat = r // 8
                init_noise = torch.randn((1, 4, 1, lat, lat), generator=generator, device=device, dtype=DTYPES[dtype_name])
                rng_state = generator.get_state()
            while out is None:
                t0 = time.perf_counter()
                oom: str | None = None
                try:
                    self._set_dtype(settings["dtype"])
                    self._inject(reached, stage)
                    pipe = self._model.pipeline(params.scheduler)  # type: ignore[union-attr]
                    if rng_state is not None:
                        generator.set_state(rng_state)  # type: ignore[union-attr]
                    out = pipe.generate(
                        faces_t, audio_t, mask_t, num_inference_steps=params.steps, guidance_scale=params.guidance,
                        deepcache=settings["deepcache"], seed=params.seed, window=params.window,
                        window_batch=settings["window_batch"], vae_slicing=settings["vae_slicing"],
                        dtype=DTYPES[settings["dtype"]], device=device, progress=progress,
                        generator=generator, init_noise=init_noise, return_float=return_float)
                except torch.cuda.OutOfMemoryError as exc:
                    oom = str(exc).splitlines()[0] if str(exc) else "CUDA out of memory"
                    out = None
                    pipe = None
                attempts.append({"stage": stage, "seconds": round(time.perf_counter() - t0, 4), "ok": oom is None,
                                 **({"error": oom} if oom else {})})
                if oom is None:
                    break
                self._free()  # the failed attempt's tensors are unreachable now that the except block is left
                step = self._next_rung(settings)
                if step is None:
                    raise InsufficientGPUMemory(
                        f"LatentSync {model.version} at {r} px ran out of GPU memory on {device} after every rung of the "
                        f"ladder ({', '.join(rungs_taken) or 'none applicable'}); last error: {oom}. "
                        f"Route the job to a pool with a bigger GPU.", list(rungs_taken))
                rung, label, settings = step
                rungs_taken.append(label)
                reached.add(rung)
                stage = rung

            result_faces = out.faces if hasattr(out, "faces") else out
            total = time.perf_counter() - t_start
            n = int(faces_t.shape[0])
            gen_s = sum(a["seconds"] for a in attempts)
            timings: dict[str, Any] = {
                "load_s": round(load_s, 4), "generate_s": round(gen_s, 4), "total_s": round(total, 4),
                "frames": n, "frames_per_s": round(n / attempts[-1]["seconds"], 3) if attempts[-1]["seconds"] > 0 else None,
                "attempts": attempts,
            }
            if device.type == "cuda":
                timings["peak_vram_bytes"] = int(torch.cuda.max_memory_allocated(device))
            settings_used = {
                "version": model.version, "resolution": r, "device": str(device), "steps": params.steps,
                "guidance": params.guidance, "seed": params.seed, "window": params.window, "scheduler": params.scheduler, **settings,
                "weights_dtype": _DTYPE_NAMES.get(self._model.dtype, str(self._model.dtype)),  # type: ignore[union-attr]
                "compile": self._compiled, "channels_last": self._channels_last,
            }
            return FaceEngineResult(faces=result_faces, faces_float=getattr(out, "faces_float", None),
                                    init_noise=init_noise, rungs_taken=rungs_taken, timings=timings,
                                    settings_used=settings_used)

    def audio_chunks(self, waveform: Any, fps: float = 25.0) -> torch.Tensor:
        """16 kHz waveform -> ``[N, 50, d]`` chunks with this engine's whisper encoder (loads the model)."""
        return self.load().audio_chunks(waveform, fps=fps)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "resolution": self.resolution, "device": str(self.device),
                "loaded": self._model is not None, "fault_injection": self.fault_injection,
                "provenance": self._model.provenance if self._model is not None else None}


__all__ = ["EngineParams", "FaceEngineResult", "LatentSyncEngine", "RUNGS", "auto_dtype", "auto_window_batch"]
