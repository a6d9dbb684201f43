"""``lipline weights``: fetch and check the LatentSync weights in the Hugging Face cache.

Importing this module does not import torch, diffusers or transformers (everything heavy is imported inside
the commands), so ``lipline --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lipline.errors import LiplineError

app = typer.Typer(help="Fetch (pull) and check (verify) the LatentSync 1.5 / 1.6 weights in the Hugging Face cache.",
                  no_args_is_help=True, add_completion=False)

_VERSION_HELP = "LatentSync release: 1.5 (256 px) or 1.6 (512 px)."
_CACHE_HELP = "Hugging Face hub cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
    raise typer.Exit(getattr(exc, "exit_code", 1))


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@app.command()
def pull(
    version: str = typer.Option("1.5", "--version", "-v", help=_VERSION_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=_CACHE_HELP),
) -> None:
    """Download the UNet, whisper and VAE files (honours HF_ENDPOINT mirrors, HF_TOKEN and HF_HUB_OFFLINE)."""
    from lipline.models.latentsync import weights

    def progress(event: str, req: "weights.RequiredFile", path: str | None) -> None:
        if event == "start":
            typer.echo(f"fetching {req.ref} ...", err=True)
        else:
            typer.echo(f"  {req.ref} -> {path}")

    try:
        rw = weights.pull(version, cache_dir, progress=progress)
    except LiplineError as exc:
        _fail(exc)
        return
    typer.echo(f"LatentSync {rw.version} ({rw.resolution} px) weights are in {rw.cache_dir}")
    if rw.mask_path is None:
        typer.echo(f"note: {weights.mask_help(version)}", err=True)
    else:
        typer.echo(f"mask: {rw.mask_path}")


@app.command()
def smoke(
    cache_dir: Path = typer.Argument(..., help="Folder to write the smoke model into (a Hugging Face cache layout)."),
    version: str = typer.Option("1.5", "--version", "-v", help=_VERSION_HELP),
) -> None:
    """Write a random-weight LatentSync of the reduced configuration in the official file layout, for pipeline QA:
    `lipline run --engine latentsync --weights DIR` then runs the real loading code and the whole face path on a
    CPU in seconds. Its output is NOT a real lip-sync and is labelled so."""
    from lipline.models.latentsync import weights
    from lipline.models.latentsync.smoke import SMOKE_NOTE, write_smoke_release

    try:
        weights.version_spec(version)
        snapshot = write_smoke_release(cache_dir, version)
    except LiplineError as exc:
        _fail(exc)
        return
    except OSError as exc:
        typer.echo(f"error: cannot write the smoke model into {cache_dir}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"LatentSync {version} smoke model in {snapshot} ({SMOKE_NOTE})")
    typer.echo(f"use it with: lipline run VIDEO AUDIO --engine latentsync --weights {cache_dir} --model-version {version}")


@app.command()
def verify(
    version: str = typer.Option("1.5", "--version", "-v", help=_VERSION_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=_CACHE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="mask.png to check (default: $LIPLINE_LATENTSYNC_MASK or the snapshot)."),
    unet_config: Optional[Path] = typer.Option(None, "--unet-config", help="JSON UNet config for a non-official (e.g. reduced) checkpoint; default: the official one (1246 entries)."),
) -> None:
    """Hash every file (SHA-256, size) and check its content; exit 1 if any file is missing or wrong."""
    from lipline.models.latentsync import weights

    try:
        cfg = None
        if unet_config is not None:
            from lipline.models.latentsync.config import UNet3DConfig

            try:
                cfg = UNet3DConfig.from_dict(json.loads(unet_config.read_text()))
            except (OSError, ValueError) as exc:
                raise LiplineError(f"{unet_config}: not a usable UNet config: {exc}") from exc
        files = weights.verify(version, cache_dir, mask_path=mask, unet_config=cfg)
    except LiplineError as exc:
        _fail(exc)
        return
    bad = [f for f in files if not f.ok]
    if as_json:
        typer.echo(json.dumps({"version": version, "ok": not bad, "files": [f.to_dict() for f in files]}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"LatentSync {version} weights")
        for col in ("role", "file", "size", "sha256", "status"):
            table.add_column(col, overflow="fold")
        for f in files:
            table.add_row(f.role, f.source, _human(f.size), f.sha256 or "-",
                          "OK" if f.ok else "; ".join(f.problems))
        Console(width=200).print(table)
    if bad:
        typer.echo(f"error: {len(bad)} of {len(files)} LatentSync {version} files have problems: "
                   + ", ".join(f"{f.role} ({f.problems[0]})" for f in bad), err=True)
        raise typer.Exit(1)


__all__ = ["app"]
