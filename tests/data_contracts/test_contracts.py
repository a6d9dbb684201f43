"""The contract files themselves: valid GX suites, complete Lipline meta, documented rules and override keys."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from lipline.tasks.validate import ROLES, load_contract, override_keys

CONTRACTS = Path(resources.files("lipline.data_contracts"))
README = (Path(__file__).resolve().parents[2] / "data_contracts" / "README.md").read_text(encoding="utf-8")
SEVERITIES = {"fail", "fixable", "warn"}
GX_SEVERITY = {"fail": "critical", "fixable": "warning", "warn": "info"}


def raw(role: str) -> dict:
    return json.loads((CONTRACTS / f"{role}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("role", ROLES)
def test_suite_loads_with_gx_and_round_trips(role):
    suite = load_contract(role)
    data = raw(role)
    assert suite.name == data["name"] == f"lipline.{role}"
    assert len(suite.expectations) == len(data["expectations"]) > 0
    dumped = suite.to_json_dict()
    assert [e["type"] for e in dumped["expectations"]] == [e["type"] for e in data["expectations"]]
    assert [e["kwargs"] for e in dumped["expectations"]] == [e["kwargs"] for e in data["expectations"]]
    assert [e["meta"] for e in dumped["expectations"]] == [e["meta"] for e in data["expectations"]]


@pytest.mark.parametrize("role", ROLES)
def test_every_expectation_has_lipline_meta(role):
    data = raw(role)
    assert "override_keys" in data["meta"]["lipline"]
    seen = set()
    for exp in data["expectations"]:
        meta = exp["meta"]
        assert re.fullmatch(rf"{role}\.[a-z_]+", meta["rule"]), meta["rule"]
        assert meta["rule"] not in seen
        seen.add(meta["rule"])
        assert meta["severity"] in SEVERITIES and exp["severity"] == GX_SEVERITY[meta["severity"]]
        assert meta["hint"] and "\n" not in meta["hint"]
        assert meta["expected"] and meta["observed"]
        for key, kwarg in meta.get("overrides", {}).items():
            assert key.startswith(meta["rule"] + ".") and key.count(".") == 2
            assert kwarg in exp["kwargs"]
        assert meta.get("scope", "file") in ("file", "cue")


def test_required_rules_present():
    rules = {e["meta"]["rule"]: e["meta"]["severity"] for r in ROLES for e in raw(r)["expectations"]}
    expected = {
        "video.has_video_stream": "fail", "video.decodes_to_end": "fail", "video.short_side": "fail",
        "video.fps": "fail", "video.constant_fps": "fixable", "video.even_dimensions": "fixable",
        "video.rotation": "fixable", "audio.sample_rate": "fail", "audio.duration": "fail",
        "audio.no_speech": "fail", "audio.clipping": "fail", "audio.phase_cancelling": "fail",
        "audio.leading_silence": "warn", "audio.trailing_silence": "warn", "subtitles.encoding": "warn",
        "subtitles.grammar": "fail", "subtitles.overlap": "warn", "subtitles.negative_duration": "fail",
        "subtitles.past_media_end": "warn", "intro.has_video_stream": "fail", "outro.decodes_to_end": "fail",
        "video.still_image": "fail", "video.header_duration": "warn", "audio.header_duration": "warn",
        "intro.header_duration": "warn", "outro.header_duration": "warn",
    }
    for rule, severity in expected.items():
        assert rules.get(rule) == severity, rule


def test_default_thresholds_from_the_issue():
    by_rule = {e["meta"]["rule"]: e["kwargs"] for r in ROLES for e in raw(r)["expectations"]}
    assert by_rule["audio.sample_rate"]["min_value"] == 16000
    assert (by_rule["audio.channels"]["min_value"], by_rule["audio.channels"]["max_value"]) == (1, 2)
    assert (by_rule["audio.duration"]["min_value"], by_rule["audio.duration"]["max_value"]) == (5, 600)
    assert (by_rule["audio.loudness"]["min_value"], by_rule["audio.loudness"]["max_value"]) == (-30, -10)
    assert by_rule["audio.no_speech"]["min_value"] == -50
    assert by_rule["audio.leading_silence"]["max_value"] == 2
    assert by_rule["video.short_side"]["min_value"] == 360
    assert (by_rule["video.fps"]["min_value"], by_rule["video.fps"]["max_value"]) == (23.976, 60)


def test_overrides_apply_to_the_loaded_suite():
    suite = load_contract("audio", {"audio.loudness.min_lufs": -35, "video.fps.min_fps": 12})
    loud = next(e for e in suite.expectations if e.meta["rule"] == "audio.loudness")
    assert loud.min_value == -35 and loud.max_value == -10
    assert next(e for e in load_contract("audio").expectations
                if e.meta["rule"] == "audio.loudness").min_value == -30  # cached defaults untouched


def test_readme_documents_every_rule_and_key():
    for role in ROLES:
        for exp in raw(role)["expectations"]:
            assert f"`{exp['meta']['rule']}`" in README
    for key in override_keys():
        assert f"`{key}`" in README
