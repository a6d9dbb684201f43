"""The job's parameter model refuses what a worker could only fail on: unknown engines, override keys, face choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lipline.params import LocalizeParams
from lipline.records import LipsyncOptions

BASE = {"video_uri": "talk.mp4", "audio_uri": "dub.wav"}


def test_defaults_pick_the_engine_automatically():
    p = LocalizeParams(**BASE)
    assert p.engine == "auto" and p.lipsync == LipsyncOptions()
    assert (p.lipsync.steps, p.lipsync.guidance, p.lipsync.seed, p.lipsync.face) == (20, 1.5, 1247, "largest")


@pytest.mark.parametrize("field, value, words", [
    ("engine", "wav2lip", "unknown engine 'wav2lip'; choose one of: auto, bench-fixed-cost, latentsync, passthrough"),
    ("engine", "latentsync-faces", "unknown engine"),  # a face engine cannot run on video
    ("contract_overrides", {"audio.loudnes.min_lufs": -35}, "unknown contract override key(s) audio.loudnes.min_lufs"),
])
def test_unknown_names_are_refused_by_the_model(field, value, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        LocalizeParams(**BASE, **{field: value})


def test_lipsync_options_are_checked():
    with pytest.raises(ValidationError, match="face choice 'biggest' is not understood"):
        LipsyncOptions(face="biggest")
    with pytest.raises(ValidationError):
        LipsyncOptions(model_version="2.0")
    with pytest.raises(ValidationError):
        LipsyncOptions(steps=0)
    assert LipsyncOptions(face=" index = 1 ").face == "index=1"


def test_the_ui_form_shows_the_lipsync_settings():
    from lipline.flows.localize import localize

    schema = localize.parameters.model_dump()
    props = schema["definitions"]["LipsyncOptions"]["properties"]
    assert {"model_version", "steps", "guidance", "seed", "precision", "face", "weights_dir"} <= set(props)
    assert all(p.get("description") for p in props.values())
