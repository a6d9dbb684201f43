"""Test media helpers live in `lipline.samples` (the demo and benchmarks use them too)."""

from lipline.samples import *  # noqa: F401,F403
from lipline.samples import (SRT_TEXT, bumper, face_png, ffmpeg, pattern_clip, speech_like, subtitles,  # noqa: F401
                             talking_video, write_audio)
