"""One settings object for the whole system: every ``LIPLINE_*`` environment variable (and an optional
``lipline.env`` file in the current folder) is read here and nowhere else.

S3 settings apply to every ``s3://`` access — the store, input downloads and the GPU hand-off — through
`Settings.s3_options`. Precedence: ``LIPLINE_S3_*`` first, then the standard AWS variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``; credentials and region from botocore's own chain:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ...).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lipline.errors import LiplineError

ENV_PREFIX = "LIPLINE_"
ENV_FILE = "lipline.env"
S3_SCHEMES = ("s3", "s3a")


class SettingsError(LiplineError):
    """A combination of settings that cannot work (named, with what to set)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore",
                                      env_ignore_empty=True, populate_by_name=True)

    store: str = Field("./lipline-store", description="Object store root: a folder or any fsspec URI (s3://bucket/prefix)")
    work_dir: Path | None = Field(None, description="Parent of per-run temp dirs (default: the system temp dir)")
    cache_dir: str | None = Field(None, description="What Lipline remembers by content, e.g. probe results (default "
                                                    "$XDG_CACHE_HOME/lipline or ~/.cache/lipline; 'off' = nothing)")
    gpu_deployment: str | None = Field(None, description="Deployment that runs lip-sync on the GPU pool, e.g. "
                                                         "lipsync-segments/gpu; empty = in-process")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server (else "
                                                          "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)")
    s3_access_key_id: str | None = Field(None, description="S3 access key (else AWS_ACCESS_KEY_ID, profiles, ...)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key (else AWS_SECRET_ACCESS_KEY, ...)")
    s3_region: str | None = Field(None, description="S3 region (else AWS_DEFAULT_REGION, AWS_REGION, ...)")
    ffmpeg: str | None = Field(None, description="ffmpeg binary (default: imageio-ffmpeg's bundled one, then PATH)")
    git_commit: str | None = Field(None, description="Commit recorded in manifests (default: `git rev-parse HEAD`)")
    demo_dir: Path = Field(Path("demo-media"), description="Where `make demo` writes its sample media")
    syncnet_weights: Path | None = Field(None, description="SyncNet syncnet_v2.model: `lipline sync-offset` adds "
                                                           "LSE-C/LSE-D (default: the weight-free estimate only)")
    weights_dir: Path | None = Field(None, validation_alias=AliasChoices("LIPLINE_WEIGHTS_DIR", "LIPLINE_WEIGHTS_CACHE"),
                                     description="LatentSync weights cache (older name LIPLINE_WEIGHTS_CACHE; "
                                                 "default: the Hugging Face cache, HF_HUB_CACHE / HF_HOME)")
    latentsync_mask: Path | None = Field(None, description="The official LatentSync mask.png (default: mask.png in "
                                                           "the Hub snapshot, else the generated mask)")
    checkout: Path | None = Field(None, description="Lipline source checkout holding deployments/prefect.yaml "
                                                    "(workers' pull step, `lipline stack`)")
    stack_dir: Path = Field(Path(".lipline-stack"), description="State folder of the local stack (`lipline stack`)")
    preview_max_slowdown: float = Field(4.0, gt=0, description="`preview` flow: wall seconds of lip-sync allowed per "
                                                               "second of video before it resubmits itself to the "
                                                               "gpu pool")
    preview_fallback_deployment: str = Field("preview/preview-gpu", description="`preview` flow: the deployment a "
                                                                               "preview resubmits itself to (out of "
                                                                               "GPU memory or too slow)")
    gpu_backend: Literal["auto", "in-process", "task-workers", "deployment"] = Field(
        "auto", description="How segments reach the engine: in-process; task-workers (one background task per "
                            "segment, served by warm `lipline gpu-worker` processes); deployment (one child run of "
                            "LIPLINE_GPU_DEPLOYMENT); auto = deployment when that is set, else in-process")
    gpu_large: bool = Field(False, description="Large-GPU workers (`lipline gpu-worker --large`) exist: a segment "
                                               "whose out-of-memory ladder ran out is sent to them")
    gpu_wait_s: float = Field(600.0, gt=0, description="task-workers: a job whose segments no `lipline gpu-worker` "
                                                       "has served for this many seconds fails")
    bench_seconds_per_frame: float = Field(0.02, ge=0, description="Cost per frame of the bench-only "
                                                                   "`bench-fixed-cost` engine (orchestration benches)")
    bench_oom_above_frames: int | None = Field(None, ge=0, description="Bench/test only: the `bench-fixed-cost` "
                                                                       "engine acts out of GPU memory on segments "
                                                                       "longer than this (a small GPU)")
    local_api_url: str = Field("http://127.0.0.1:4200/api", description="`lipline run` with no Prefect API "
                                                                     "configured: reuse a Prefect server answering "
                                                                     "here (`prefect server start`, `lipline stack "
                                                                     "up`); `off` = never, always start Prefect's "
                                                                     "temporary server")
    portal_users: Path = Field(Path("portal-users.txt"), description="`lipline portal`: users file, one "
                                                                      "`name:scrypt$...` line each (`lipline portal "
                                                                      "add-user NAME` writes it)")
    portal_secret: SecretStr | None = Field(None, description="`lipline portal`: key that signs session cookies "
                                                              "(default: random per start, sessions end on restart)")
    portal_max_upload_mb: float = Field(20000.0, gt=0, description="`lipline portal`: largest video/audio upload "
                                                                   "in MB (subtitles: at most 5 MB)")
    portal_runner: Literal["auto", "in-process", "deployment"] = Field(
        "auto", description="`lipline portal`: how jobs start: deployment (localize/localize through "
                            "PREFECT_API_URL), in-process (a background thread); auto = deployment when "
                            "PREFECT_API_URL is set")
    portal_s3_public_url: str | None = Field(None, description="`lipline portal`: the S3 endpoint as browsers reach "
                                                               "it, for presigned download links (default: the "
                                                               "store's endpoint)")

    @field_validator("weights_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()

    def s3_options(self) -> dict:
        """fsspec/s3fs options for every ``s3://`` access. ``LIPLINE_S3_*`` win; what they leave unset comes
        from the AWS variables (the endpoint here, credentials and region from botocore itself)."""
        options: dict = {}
        client_kwargs: dict = {}
        endpoint = self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if self.s3_region:  # only when asked for: a fixed region_name breaks bucket creation on some servers
            client_kwargs["region_name"] = self.s3_region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        key, secret = self.s3_access_key_id, self.s3_secret_access_key
        if (key is None) != (secret is None):
            given, missing = (("LIPLINE_S3_ACCESS_KEY_ID", "LIPLINE_S3_SECRET_ACCESS_KEY") if secret is None
                              else ("LIPLINE_S3_SECRET_ACCESS_KEY", "LIPLINE_S3_ACCESS_KEY_ID"))
            raise SettingsError(f"{given} is set but {missing} is not: set both, or neither to use the AWS "
                                "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        if key is not None and secret is not None:
            options["key"] = key
            options["secret"] = secret.get_secret_value()
        return options


def get_settings() -> Settings:
    """The settings as the environment and ``lipline.env`` are *now*; one object per distinct environment, so
    repeated calls are cheap and a changed variable is seen at once."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith((ENV_PREFIX, "AWS_"))))
    try:
        stamp = os.stat(ENV_FILE).st_mtime_ns
    except OSError:
        stamp = None
    return _settings_for(os.getcwd(), stamp, env)


@functools.lru_cache(maxsize=16)
def _settings_for(cwd: str, env_file_stamp: int | None, env: tuple) -> Settings:  # noqa: ARG001 - cache keys
    return Settings()
