"""One settings object for the whole system: env vars `LIPLINE_*` and an optional `lipline.env` file."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIPLINE_", env_file="lipline.env", extra="ignore")

    store: str = Field("./lipline-store", description="Object store root: a folder or any fsspec URI (s3://bucket/prefix)")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible store (else AWS_ENDPOINT_URL)")
    work_dir: Path | None = Field(None, description="Parent of per-run temp dirs (default: the system temp dir)")
    gpu_deployment: str | None = Field(None, description="Deployment that runs lip-sync on the GPU pool, e.g. lipsync-segments/gpu; empty = in-process")


@functools.cache
def get_settings() -> Settings:
    return Settings()
