"""`measure_video`: the weight-free AV sync estimate of a video file (any tool's output, any face).

Reuses a `FaceTrack` when the caller has one (the pipeline does: `tasks/faces.py`), else tracks the largest face.
Never raises for a video without a face, without audio, or that cannot be decoded: the estimate's verdict is
``fail`` and its ``reason`` says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipline.models.sync.envelope import speech_envelope
from lipline.models.sync.mouth import track_mouth_opening
from lipline.models.sync.offset import MAX_OFFSET, SyncEstimate, estimate_offset, no_estimate

AUDIO_SR = 16000


def read_mono(path: str | Path, sr: int = AUDIO_SR) -> np.ndarray:
    """The first audio stream of ``path`` (any audio or video file) as (n,) float32 mono at ``sr``.

    Raises ``ValueError`` when the file has no audio stream; PyAV's errors when it cannot be opened.
    """
    from lipline.tasks.audio_stream import iter_audio

    chunks = [chunk.mean(axis=1) for chunk, _ in iter_audio(path, sr=sr)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def measure_track(track, samples: np.ndarray, sr: int = AUDIO_SR, max_offset: int = MAX_OFFSET) -> SyncEstimate:
    """`estimate_offset` of a face track (n frames) against audio samples ((n,) or (n, ch) at ``sr``) that start
    with the track's first frame. For a segment: pass the track's slice and the segment's audio."""
    if not track.valid.any():
        return no_estimate(f"no usable face in any of the {track.frame_count} frames", track.fps)
    if np.asarray(samples).size == 0:
        return no_estimate("the audio track is empty", track.fps)
    envelope = speech_envelope(samples, sr, track.fps, n_frames=track.frame_count)
    return estimate_offset(track_mouth_opening(track), envelope, track.fps, max_offset)


def measure_video(video_path: str | Path, audio_path: str | Path | None = None, track=None, *,
                  max_offset: int = MAX_OFFSET, detect_every: int = 10) -> SyncEstimate:
    """The AV sync of ``video_path`` against its own audio, or against ``audio_path`` (aligned at time 0).

    Args:
        video_path: any video PyAV decodes.
        audio_path: audio (or a video with audio) to compare with; default: the video's own audio.
        track: the video's `FaceTrack`, reused as it is; default: the largest face, tracked now.
        max_offset: frames searched each way.
        detect_every: detector interval when the track is computed here.
    Returns:
        `SyncEstimate` (verdict ``fail`` with a reason for a missing file, no face, no audio or a broken file).
    """
    import av

    from lipline.errors import LiplineError, one_line

    video_path = Path(video_path)
    if not video_path.is_file():
        return no_estimate(f"{video_path}: no such file")
    if audio_path is not None and not Path(audio_path).is_file():
        return no_estimate(f"{audio_path}: no such file")
    if track is None:
        from lipline.models.face.track import compute_face_track

        try:
            track = compute_face_track(video_path, "largest", detect_every=detect_every)
        except LiplineError as exc:  # names the file and what is wrong with it
            return no_estimate(one_line(exc))
        except (av.FFmpegError, OSError, ValueError) as exc:
            return no_estimate(f"{video_path}: the video cannot be decoded ({one_line(exc)})")
        if track.frame_count == 0:
            return no_estimate(f"{video_path}: no video frames could be decoded")
    source = Path(audio_path) if audio_path is not None else video_path
    try:
        samples = read_mono(source)
    except ValueError:
        return no_estimate(f"{source}: no audio stream", track.fps)
    except (av.FFmpegError, OSError) as exc:
        return no_estimate(f"{source}: the audio cannot be decoded ({one_line(exc)})", track.fps)
    return measure_track(track, samples, AUDIO_SR, max_offset)

