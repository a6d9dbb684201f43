"""`lipline` command line: validate inputs, run the `localize` flow in-process, manage model weights.

Nothing here imports torch, diffusers or transformers: `lipline --help` stays fast on an operator's laptop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lipline.errors import user_error

app = typer.Typer(help="Lipline: lip-synced, loudness-normalized, subtitled deliverables.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ROLES = ("video", "audio", "subtitles", "intro", "outro")


def _parse_overrides(items: list[str]) -> dict[str, float]:
    overrides: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            overrides[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: expected RULE=NUMBER, e.g. audio.loudness.min_lufs=-35") from None
    return overrides


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., readable=False,  # an unreadable file is a failed report, exit 1
                                       help="Files to check against the contract of --role"),
    role: str = typer.Option(..., "--role", help="video | audio | subtitles | intro | outro"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file"),
    override: list[str] = typer.Option([], "--set", help="Override a contract threshold: RULE=NUMBER (repeatable)"),
    face: Optional[str] = typer.Option("largest", help="Face choice the face rules report (video); 'none' skips "
                                                       "the face rules (a passthrough dry run needs no face)"),
) -> None:
    """Check media files against the data contract of a role. Exit 0 when no file fails, 1 otherwise."""
    if role not in ROLES:
        raise typer.BadParameter(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    from lipline.tasks.validate import validate_file

    overrides = _parse_overrides(override)
    failed = False
    for file in files:
        report = validate_file(str(file.absolute()), role, overrides=overrides,
                               faces=None if face in (None, "none") else face)
        report = report.model_copy(update={"file": str(file)})
        failed |= report.verdict == "fail"
        if as_json:
            print(json.dumps(report.cli_dict(), ensure_ascii=False))
        else:
            _print_report(report)
    raise typer.Exit(1 if failed else 0)


def _print_report(report) -> None:
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}[report.verdict]
    out.print(f"[bold {colour}]{report.verdict.upper()}[/] {report.file} ({report.role})", highlight=False)
    for v in report.violations:
        out.print(f"  - [{v.severity}] {v.rule}: observed {v.observed}, expected {v.expected}. {v.hint}",
                  highlight=False, markup=False)


@app.command()
def run(
    video: str = typer.Argument(..., help="Talking-head video (path or URI)"),
    audio: str = typer.Argument(..., help="Dubbed speech track (path or URI)"),
    subtitles: Optional[str] = typer.Option(None, help="SRT/ASS/VTT subtitles to burn in and attach"),
    intro: Optional[str] = typer.Option(None, help="Intro bumper video"),
    outro: Optional[str] = typer.Option(None, help="Outro bumper video"),
    engine: str = typer.Option("auto", help="Lip-sync engine: auto (latentsync when its weights are cached, else a "
                                            "labelled passthrough dry run), latentsync, passthrough"),
    model_version: str = typer.Option("1.5", "--model-version", help="LatentSync release: 1.5 (256 px) or 1.6 (512 px)"),
    weights: Optional[str] = typer.Option(None, "--weights", envvar="LIPLINE_WEIGHTS_DIR",
                                          help="Weights cache folder (`lipline weights pull --cache-dir` or "
                                               "`lipline weights smoke`); default: the Hugging Face cache"),
    steps: int = typer.Option(20, help="Denoising steps (20 for ddim; dpmpp is meant for 10)"),
    sampler: str = typer.Option("ddim", help="ddim (official) or dpmpp (DPM-Solver++, experimental: use --steps 10)"),
    guidance: float = typer.Option(1.5, help="Audio guidance scale (1.0 = off)"),
    seed: int = typer.Option(1247, help="Random seed"),
    face: str = typer.Option("largest", help="Which face: largest | index=K (K-th from the left) | bbox=x,y,w,h"),
    precision: str = typer.Option("auto", help="auto | fp32 | fp16 | bf16"),
    keep_mouth_in_silence: bool = typer.Option(True, "--keep-mouth-in-silence/--animate-silence",
                                               help="Keep the original mouth during dub silences of 0.5 s or more"),
    window_overlap: int = typer.Option(2, help="Frames shared by consecutive 16-frame windows (0 = official)"),
    store: Optional[str] = typer.Option(None, help="Store root: folder or fsspec URI (default ./lipline-store or LIPLINE_STORE)"),
    job_id: Optional[str] = typer.Option(None, help="Job id (default: generated); the deliverable goes to STORE/JOB_ID/"),
    loudness: float = typer.Option(-16.0, help="Delivery loudness target in LUFS (-23 broadcast, -14 streaming)"),
    length_mode: Optional[str] = typer.Option(None, help="Audio longer: pingpong|loop|freeze|fail; video longer: trim|pad-silence"),
    max_segment_s: float = typer.Option(20.0, help="Longest segment in seconds (at most 30)"),
    preset: str = typer.Option("veryfast", help="libx264 preset of the one final encode"),
    crf: int = typer.Option(20, help="libx264 CRF of the final encode (lower = better quality, larger file)"),
    override: list[str] = typer.Option([], "--set", help="Override a contract threshold: RULE=NUMBER (repeatable)"),
    replace: bool = typer.Option(False, "--replace", help="Replace an already completed job with the same --job-id"),
    recompute: bool = typer.Option(False, "--recompute", help="Recompute every segment instead of reusing finished "
                                                              "results from the store's cache"),
    qc: bool = typer.Option(True, "--qc/--no-qc", help="Quality gate: measure each generated segment's AV offset"),
    qc_retries: int = typer.Option(2, help="Re-runs of a segment that fails the quality gate, each with the next seed"),
    qc_on_fail: str = typer.Option("flag", help="After the retries: flag (deliver, segment marked 'needs review') "
                                                "or fail (the job fails)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
) -> None:
    """Run the `localize` flow in this process and print the deliverable's URI (Prefect API: the configured one, a
    server running at LIPLINE_LOCAL_API_URL, else Prefect's temporary server, started early)."""
    from pydantic import ValidationError

    from lipline.params import LocalizeParams, parse_length_mode
    from lipline.records import LipsyncOptions, QualityGateParams

    try:
        params = LocalizeParams(
            video_uri=_absolute(video), audio_uri=_absolute(audio), subtitles_uri=_absolute(subtitles),
            intro_uri=_absolute(intro), outro_uri=_absolute(outro), engine=engine, job_id=job_id, replace=replace,
            recompute=recompute, store=store, loudness_lufs=loudness, max_segment_s=max_segment_s,
            x264_preset=preset, crf=crf,
            quality_gate=QualityGateParams(enabled=qc, retries=qc_retries, on_fail=qc_on_fail),
            contract_overrides=_parse_overrides(override), **parse_length_mode(length_mode),
            lipsync=LipsyncOptions(model_version=model_version, weights_dir=weights, steps=steps, sampler=sampler, guidance=guidance,
                                   seed=seed, face=face, precision=precision,
                                   keep_mouth_in_silence=keep_mouth_in_silence, window_overlap=window_overlap))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from lipline import local_api
    from lipline.settings import get_settings

    api = local_api.prepare(get_settings().local_api_url)  # Prefect's API boots on the other core from here on
    try:
        from lipline.runner import check_store, run_localize

        check_store(params)  # an unusable store is refused before the flow starts
        from lipline.engine_choice import choose_engine

        choose_engine(params)  # latentsync without its weights: refused now, before the flow starts
        result = run_localize(params, show_progress=not quiet, console=err,
                              before_flow=api.wait_ready if api is not None else None)
    finally:
        if api is not None:
            api.stop()
    for notice in result.notices:
        err.print(notice, style="yellow", markup=False, highlight=False)
    if result.dry_run:
        err.print(f"[yellow]engine {result.engine!r} is a dry run: original frames under the new audio, no lip-sync[/]")
    print(result.final_uri)
    local_api.exit_now(0)


@app.command()
def engines() -> None:
    """List the registered lip-sync engines."""
    from lipline.models.registry import engine_specs

    for spec in engine_specs():
        out.print(f"{spec.name:12} {spec.kind:6} {spec.summary}", highlight=False)


def _absolute(value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    from lipline.uris import path_to_uri

    return path_to_uri(value)


try:
    from lipline.weights_cli import app as weights_app

    app.add_typer(weights_app, name="weights", help="Download and verify LatentSync weights (Hugging Face cache)")
except ImportError:  # pragma: no cover - weights CLI not installed
    pass

from lipline.sync_cli import sync_offset as sync_offset_command  # noqa: E402 - light: no torch, no MediaPipe

app.command(name="sync-offset")(sync_offset_command)

try:
    from lipline.faces_cli import faces as faces_command

    app.command(name="faces")(faces_command)
except ImportError:  # pragma: no cover - faces CLI not installed
    pass


from lipline.stack_cli import app as stack_app, deploy_command  # noqa: E402 - registered after the core commands

app.add_typer(stack_app, name="stack")
app.command(name="deploy")(deploy_command)

from lipline.portal.cli import app as portal_app  # noqa: E402 - light: FastAPI is imported by `portal serve` only

app.add_typer(portal_app, name="portal")


@app.command(name="gpu-worker")
def gpu_worker(large: bool = typer.Option(False, "--large", help="Serve the segments that ran out of memory on the "
                                                                  "normal GPU workers (start it on a bigger GPU)")) -> None:
    """Serve lip-sync segments from the Prefect API, one at a time, the model kept loaded (LIPLINE_GPU_BACKEND=
    task-workers). Start one per GPU, pinned with CUDA_VISIBLE_DEVICES; stop with Ctrl-C."""
    from lipline.gpu_worker import serve_segments

    serve_segments(large=large)


def main() -> None:
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - errors a user caused: one line; anything else keeps its traceback
        problem = user_error(exc)
        if problem is None:
            raise
        err.print(f"error: {problem}", style="red", highlight=False, markup=False)
        sys.exit(problem.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", style="red")
        sys.exit(130)


if __name__ == "__main__":
    main()
