"""Session-wide fixtures: media generated once per test session, isolated Prefect/HF environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lipline  # noqa: E402,F401 - sets Prefect's startup timeout and analytics defaults before Prefect is imported

import tempfile  # noqa: E402

# One private Prefect home per test session (per xdist worker under `pytest -n`): its own SQLite API database,
# nothing shared with the user's or with another worker's.
if os.environ.get("PYTEST_XDIST_WORKER") or "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"lipline-test-prefect-{os.environ.get('PYTEST_XDIST_WORKER', '')}")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# `lipline run` never reuses a Prefect server a developer happens to run at 127.0.0.1:4200 (tests/lipline_core/
# test_local_api.py checks reuse with its own server).
os.environ.setdefault("LIPLINE_LOCAL_API_URL", "off")
# No probe cache (tasks/probe_cache.py) unless a test turns it on: tests that damage or patch the decoding of the
# session's shared media must see it decoded, and nothing is written to the user's ~/.cache.
os.environ.setdefault("LIPLINE_CACHE_DIR", "off")

from tests import media_factory as mf  # noqa: E402


@dataclass(frozen=True)
class MediaSet:
    face: Path
    video: Path          # 12 s, 640x360, 25 fps, H.264 + AAC
    dub: Path            # 12.4 s, 44.1 kHz stereo WAV, speech-like with pauses, about -20 LUFS
    subtitles: Path      # SRT with CJK + Latin cues
    intro: Path          # 1.5 s, 1280x720 30 fps, no audio
    outro: Path          # 1 s, 320x240 25 fps, with a tone


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> MediaSet:
    d = tmp_path_factory.mktemp("media")
    face = mf.face_png(d / "face.png")
    dub = mf.write_audio(d / "dub.wav", mf.speech_like(12.4))
    video = mf.talking_video(d / "talk.mp4", face, 12.0, audio=mf.write_audio(d / "orig.wav", mf.speech_like(12.0, seed=3)))
    return MediaSet(
        face=face,
        video=video,
        dub=dub,
        subtitles=mf.subtitles(d / "subs.srt"),
        intro=mf.bumper(d / "intro.mp4", 1.5, 1280, 720, 30, with_audio=False),
        outro=mf.bumper(d / "outro.mp4", 1.0, 320, 240, 25, with_audio=True),
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS on loopback with enforced credentials; one per test session."""
    from tests.s3server import start_seaweedfs

    server = start_seaweedfs(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS_* variables pointing at the loopback S3 server (what an operator would export)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def pytest_collection_modifyitems(config, items):
    """The tests on the shared Prefect stack (`tests/integration/`: a server, three workers and a deploy; about 11
    minutes on two loaded cores) go first, in their own order: under `make test` (two workers) the rest of the suite
    then fills the other worker around them instead of leaving one worker alone with them at the end."""
    items.sort(key=lambda item: "prefect_stack" not in getattr(item, "fixturenames", ()))  # stable: order kept


def pytest_sessionfinish(session, exitstatus):
    """Stop Prefect's temporary API server if a test of this process started one (a flow run in-process with no
    API set). Prefect stops it at interpreter exit (atexit), which an xdist worker does not always reach: execnet
    ends a worker that is slow to exit with `os._exit`, and its server ran on after `make test`, orphaned."""
    import sys

    server_module = sys.modules.get("prefect.server.api.server")  # never imported here just to look
    if server_module is not None:
        for server in list(server_module.SubprocessASGIServer._instances.values()):
            server.stop()


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs pytest-xdist with ``--dist loadfile``: each test file runs whole on one worker (its module
    fixtures made once), and here all of `tests/integration/` counts as one file, so that one worker starts the
    Prefect stack (a session fixture) and the other never does. Other modes keep pytest-xdist's own scheduler."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class IntegrationTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/integration/" if path.startswith("tests/integration/") else path

    return IntegrationTogether(config, log)
