"""Session fixtures of the sync tests: the talking clip (built once) and its face track (tracked once)."""

from __future__ import annotations

import pytest

from tests.models.sync import clips as C


@pytest.fixture(scope="session")
def talking(tmp_path_factory) -> C.ClipSet:
    return C.clip_set(tmp_path_factory.mktemp("sync-clips"))


@pytest.fixture(scope="session")
def talking_track(talking):
    from lipline.models.face.track import compute_face_track

    return compute_face_track(talking.silent)
