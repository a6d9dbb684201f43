"""``lipline faces VIDEO``: the face track of a video as an operator sees it.

``--out track.mp4`` writes the video (upright, no audio) with every detected face boxed in grey, the chosen
face in green with its landmarks and the three alignment anchors (red), interpolated frames marked, and a
banner over the frames the engine will pass through untouched ("no face" / "too small" / "too turned").
``--json`` prints the spans and a summary. Importing this module imports neither MediaPipe nor torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lipline.errors import InputError, MediaToolError

CHOSEN = (40, 220, 80)
OTHER = (200, 200, 200)
ANCHOR = (255, 40, 40)
BANNER = (200, 30, 30)


def faces(
    video: Path = typer.Argument(..., help="Video to analyse"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the debug view (MP4, H.264, no audio) here"),
    face: str = typer.Option("largest", "--face", help="largest | index=K (K-th from the left) | bbox=x,y,w,h"),
    detect_every: int = typer.Option(10, "--detect-every", min=1, help="Run the detector every N frames"),
    as_json: bool = typer.Option(False, "--json", help="Print the spans and summary as JSON"),
) -> None:
    """Track the speaker's face: spans without a usable face, and (with --out) a debug video."""
    from lipline.models.face.choice import FaceChoice
    from lipline.models.face.detect import FaceAnalyzer
    from lipline.models.face.track import compute_face_track
    from lipline.models.face.video import read_header

    choice = FaceChoice.parse(face)
    if not video.is_file():
        raise InputError(str(video), "video", "no such file", "Check the path.")
    read_header(video)  # a file that is not a video fails here, before the models load
    with FaceAnalyzer() as analyzer:
        track = compute_face_track(video, choice, detect_every=detect_every, analyzer=analyzer)
        if out is not None:
            write_debug_view(video, track, out, analyzer)
    if as_json:
        print(json.dumps(track.summary(), ensure_ascii=False))
    else:
        summary = track.summary()
        typer.echo(f"{video}: {summary['valid']}/{summary['frames']} frames with a usable face "
                   f"({summary['interpolated']} interpolated), choice {summary['choice']}, "
                   f"detector ran on {summary['frames_detected']} frames")
        for span in summary["spans"]:
            typer.echo(f"  frames {span['start']}-{span['end'] - 1} ({span['start_s']:.2f}-{span['end_s']:.2f} s): "
                       f"{span['reason']}")
        if out is not None:
            typer.echo(f"debug view: {out}")


def write_debug_view(video: Path, track, out: Path, analyzer) -> None:
    """Draw the track (and every face the detector sees) on each upright frame of ``video`` into ``out``."""
    import av

    from lipline.models.face.video import iter_frames

    reason_at = {i: s.reason for s in track.spans for i in range(s.start, s.end)}
    try:
        container = av.open(str(out), "w")
    except (av.FFmpegError, OSError) as exc:
        raise MediaToolError(f"{out}: cannot be written ({exc}). Choose a writable path ending in .mp4.") from None
    with container:
        stream = container.add_stream("libx264", rate=round(track.fps) or 25)
        stream.width, stream.height = track.width - track.width % 2, track.height - track.height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for index, (_, rgb) in enumerate(iter_frames(video)):
            if index >= track.frame_count:
                break
            draw_frame(rgb, index, track, analyzer.detect(rgb), reason_at.get(index))
            frame = av.VideoFrame.from_ndarray(rgb[:stream.height, :stream.width], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def draw_frame(rgb, index: int, track, detections, reason: str | None) -> None:
    """Draw on ``rgb`` (H, W, 3) uint8 in place: detections, the chosen face, anchors, gap banner."""
    import cv2
    import numpy as np

    thick = max(1, round(min(rgb.shape[:2]) / 360))
    for det in detections:
        b = det.box
        cv2.rectangle(rgb, (round(b.x), round(b.y)), (round(b.x + b.w), round(b.y + b.h)), OTHER, thick)
        cv2.putText(rgb, f"{det.score:.2f}", (round(b.x), max(12, round(b.y) - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, OTHER, thick, cv2.LINE_AA)
    if track.valid[index]:
        x, y, w, h = track.boxes[index]
        cv2.rectangle(rgb, (round(x), round(y)), (round(x + w), round(y + h)), CHOSEN, thick + 1)
        for px, py in track.landmarks[index][::4]:
            cv2.circle(rgb, (round(px), round(py)), 1, CHOSEN, -1)
        for ax, ay in track.anchors[index]:
            cv2.drawMarker(rgb, (int(ax), int(ay)), ANCHOR, cv2.MARKER_CROSS, 6 * thick + 4, thick + 1)
        label = "chosen (interpolated)" if track.interpolated[index] else "chosen"
        cv2.putText(rgb, label, (round(x), round(y + h) + 14 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick,
                    CHOSEN, thick, cv2.LINE_AA)
    if reason is not None:
        bar = 26 * thick
        rgb[:bar] = (0.4 * rgb[:bar] + 0.6 * np.array(BANNER)).astype(np.uint8)
        cv2.putText(rgb, f"{reason} - frame passes through untouched", (8, bar - 8 * thick),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55 * thick, (255, 255, 255), thick, cv2.LINE_AA)
    cv2.putText(rgb, f"#{index}", (8, rgb.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (255, 255, 255),
                thick, cv2.LINE_AA)
