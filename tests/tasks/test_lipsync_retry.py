"""The lip-sync task's retry rule (`tasks/lipsync.py: _transient`), run by Prefect's real task engine: network and
storage hiccups are retried, bad input and an exhausted out-of-memory ladder never are."""

from __future__ import annotations

import pytest
from prefect import flow

from lipline.errors import InputError, InsufficientGPUMemory
from lipline.tasks import lipsync


def test_the_lipsync_task_uses_the_rule():
    assert lipsync.lipsync_segment.retries == 2
    assert lipsync.lipsync_segment.retry_condition_fn is lipsync._transient


@pytest.mark.parametrize("errors,attempts", [
    ([ConnectionError("connection reset by peer"), TimeoutError("read timed out")], 3),  # retried, then succeeds
    ([ConnectionError("reset"), ConnectionError("reset"), ConnectionError("reset")], 3),  # retries run out
    ([InsufficientGPUMemory("every rung tried", ["window_batch", "vae_slicing"])], 1),
    ([InputError("seg.mp4", "video.readable", "not media", "provide a video")], 1),
    ([ValueError("frame size 0x0")], 1),
])
def test_retried_only_when_transient(monkeypatch, errors, attempts):
    calls = []

    def engine_run(*args, **kwargs):
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "segment-0000.mp4"

    monkeypatch.setattr(lipsync, "sync_segment", engine_run)
    task = lipsync.lipsync_segment.with_options(retry_delay_seconds=0)  # the same rule, no waiting

    @flow
    def one_segment():
        return task(None, "passthrough", None)

    if len(errors) < attempts:
        assert one_segment() == "segment-0000.mp4"
    else:
        with pytest.raises(type(errors[-1])):
            one_segment()
    assert len(calls) == attempts
