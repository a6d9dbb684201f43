"""``lipline sync-offset VIDEO [--audio A] [--json]``: is the audio in sync with the lips?

Prints ``{"offset_frames", "offset_ms", "confidence", "peak_corr", "verdict", "reason", …}`` (see
`lipline.models.sync.offset`). Exit status 0 on ``pass``, 1 on ``fail`` — a video without a face, without audio,
or that cannot be decoded is a ``fail`` with its reason, never a traceback. With SyncNet weights (``--syncnet``
or the ``LIPLINE_SYNCNET_WEIGHTS`` setting) the record also carries SyncNet's LSE-C / LSE-D; only then is torch
imported. Importing this module imports neither MediaPipe nor torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def sync_offset(
    video: Path = typer.Argument(..., help="Video with a visible face (any tool's output)"),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Compare with this audio instead of the video's own"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object"),
    syncnet: Optional[Path] = typer.Option(None, "--syncnet", help="SyncNet weights (syncnet_v2.model) for LSE-C/"
                                           "LSE-D; default: the LIPLINE_SYNCNET_WEIGHTS setting"),
) -> None:
    """Measure the audio-visual offset from the lips (+ = audio late); pass = |offset| ≤ 1 frame, clear peak."""
    from lipline.models.sync.measure import measure_video

    weights = syncnet if syncnet is not None else _weights_setting()
    track = None
    if weights is not None:
        track = _track_or_none(video)
    estimate = measure_video(video, audio, track=track)
    record = estimate.to_dict()
    if weights is not None:
        record["syncnet"] = _syncnet_record(video, audio, weights, track)
        record["metric"] += " + SyncNet LSE-C/LSE-D"
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        typer.echo(f"{video}: {record['verdict']}: {record['reason']}")
        if record["offset_frames"] is not None:
            typer.echo(f"  offset {record['offset_frames']:+d} frames ({record['offset_ms']:+.0f} ms; + = audio late), "
                       f"peak correlation {record['peak_corr']:.2f}, confidence {record['confidence']:.1f}; "
                       f"metric: {record['metric']}")
        if "syncnet" in record:
            typer.echo(f"  SyncNet: {json.dumps(record['syncnet'], ensure_ascii=False)}")
    raise typer.Exit(0 if estimate.passed else 1)


def _weights_setting() -> Path | None:
    from lipline.settings import get_settings

    return getattr(get_settings(), "syncnet_weights", None)


def _track_or_none(video: Path):
    """The face track, computed once for both metrics; None when the video cannot be tracked (the estimator then
    reports why)."""
    import av

    from lipline.errors import LiplineError
    from lipline.models.face.track import compute_face_track

    if not video.is_file():
        return None
    try:
        track = compute_face_track(video, "largest")
    except (LiplineError, av.FFmpegError, OSError, ValueError):
        return None
    return track if track.frame_count else None


def _syncnet_record(video: Path, audio: Path | None, weights: Path, track) -> dict:
    """SyncNet's LSE-C / LSE-D of the video, or ``{"error": …}`` when they cannot be computed (the weights file
    is refused as a one-line error: it is the user's setting)."""
    from lipline.models.sync.syncnet import load_syncnet, syncnet_scores

    import torch

    model = load_syncnet(weights)  # raises SyncNetWeightsError (a LiplineError) for a wrong file
    if torch.cuda.is_available():
        model = model.to("cuda")
    if track is None or not track.valid.any():
        return {"error": "no usable face: SyncNet needs face crops"}
    try:
        scores = syncnet_scores(model, video, audio if audio is not None else video, track)
    except ValueError as exc:
        return {"error": str(exc)}
    return scores.to_dict()
