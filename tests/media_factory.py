"""Test media helpers live in `lipline.samples` (the demo and benchmarks use them too)."""

from lipline.samples import *  # noqa: F401,F403
from lipline.samples import SRT_TEXT, bumper, face_png, ffmpeg, speech_like, subtitles, talking_video, write_audio  # noqa: F401
