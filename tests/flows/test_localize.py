"""Helpers of the `localize` flow that need no job around them."""

from __future__ import annotations

import os

from lipline import uris
from lipline.flows import localize


def test_an_input_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"frames" * 1000)
    reads = []
    real = uris.sha256_file
    monkeypatch.setattr(uris, "sha256_file", lambda path: reads.append(path) or real(path))
    first = localize.input_sha256(str(video), tmp_path)
    # the faces cache, the segment keys and the manifest each ask
    assert localize.input_sha256(str(video), tmp_path) == localize.input_sha256(video.as_uri(), tmp_path) == first
    assert len(reads) == 1
    video.write_bytes(b"other frames" * 1000)  # changed in place: hashed again
    os.utime(video, ns=(1, 1))
    second = localize.input_sha256(str(video), tmp_path)
    assert second != first and second == real(video) and len(reads) == 2
