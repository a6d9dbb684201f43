"""tasks/probe_cache.py: the same bytes are decoded once; anything else that decides a probe is a miss."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lipline.errors import InputError
from lipline.tasks import probe as probe_module
from lipline.tasks import probe_cache
from lipline.tasks.validate import validate_inputs
from tests import media_factory as mf


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LIPLINE_CACHE_DIR", str(root))
    return root / "probe"


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The URIs `probe_media` really decoded (the real function runs)."""
    seen: list[str] = []
    real = probe_module.probe_media

    def counting(uri, workdir=None):
        seen.append(str(uri))
        return real(uri, workdir)

    monkeypatch.setattr(probe_module, "probe_media", counting)
    return seen


def test_the_same_bytes_under_another_name_are_not_decoded_again(media, tmp_path, cache, decodes):
    first = probe_cache.probe_media_cached(str(media.video), tmp_path)
    copy = shutil.copy(media.video, tmp_path / "renamed copy.mp4")
    second = probe_cache.probe_media_cached(str(copy), tmp_path)
    assert decodes == [str(media.video)]
    assert second.uri == str(copy)  # the record names the file asked for
    assert second.model_dump(exclude={"uri"}) == first.model_dump(exclude={"uri"})
    assert len(list(cache.rglob("*.json"))) == 1


def test_changed_bytes_are_a_miss(media, tmp_path, cache, decodes):
    path = Path(shutil.copy(media.outro, tmp_path / "outro.mp4"))
    probe_cache.probe_media_cached(str(path), tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut in half: a truncated upload
    cut = probe_cache.probe_media_cached(str(path), tmp_path)
    assert decodes == [str(path), str(path)]
    assert cut.decode_error and "truncated" in cut.decode_error


def test_a_damaged_verdict_is_remembered_like_any_other(media, tmp_path, cache, decodes):
    path = tmp_path / "cut.mp4"
    path.write_bytes(media.video.read_bytes()[: media.video.stat().st_size // 3])
    first = probe_cache.probe_media_cached(str(path), tmp_path)
    again = probe_cache.probe_media_cached(str(path), tmp_path)
    assert first.decode_error and again.decode_error == first.decode_error
    assert decodes == [str(path)]


def test_another_probe_code_or_ffmpeg_is_a_miss(media, tmp_path, cache, decodes, monkeypatch):
    probe_cache.probe_media_cached(str(media.outro), tmp_path)
    monkeypatch.setattr(probe_cache, "code_key", lambda: "another-build")
    probe_cache.probe_media_cached(str(media.outro), tmp_path)
    assert decodes == [str(media.outro)] * 2


def test_a_broken_entry_is_a_miss_and_is_written_again(media, tmp_path, cache, decodes):
    probe_cache.probe_media_cached(str(media.outro), tmp_path)
    entry = next(cache.rglob("*.json"))
    entry.write_text("{not json")
    probe = probe_cache.probe_media_cached(str(media.outro), tmp_path)
    assert decodes == [str(media.outro)] * 2
    assert probe.video is not None and '"video"' in entry.read_text()


def test_off_decodes_every_time_and_writes_nothing(media, tmp_path, monkeypatch, decodes):
    monkeypatch.setenv("LIPLINE_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for _ in range(2):
        probe_cache.probe_media_cached(str(media.outro), tmp_path)
    assert decodes == [str(media.outro)] * 2
    assert not (tmp_path / "xdg").exists()


def test_default_folder_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("LIPLINE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probe_cache.cache_root() == tmp_path / "xdg" / "lipline" / "probe"


def test_a_cache_that_cannot_be_written_only_costs_time(media, tmp_path, monkeypatch, decodes):
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    monkeypatch.setenv("LIPLINE_CACHE_DIR", str(blocker))
    for _ in range(2):
        assert probe_cache.probe_media_cached(str(media.outro), tmp_path).video is not None
    assert decodes == [str(media.outro)] * 2


def test_refused_inputs_raise_as_before_and_are_not_remembered(tmp_path, cache):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe_cache.probe_media_cached(str(empty), tmp_path)
    with pytest.raises(InputError, match="not found"):
        probe_cache.probe_media_cached(str(tmp_path / "missing.mp4"), tmp_path)
    assert not cache.exists()


def test_a_second_job_validating_the_same_source_decodes_only_its_new_dub(media, tmp_path, cache, decodes):
    """The batch case: one reference video, intro and outro; each job brings its own dub."""
    dub2 = mf.write_audio(tmp_path / "dub-fr.wav", mf.speech_like(12.4, seed=11))
    job = {"video": str(media.video), "intro": str(media.intro), "outro": str(media.outro)}
    first = validate_inputs({**job, "audio": str(media.dub)}, workdir=tmp_path / "v1")
    second = validate_inputs({**job, "audio": str(dub2)}, workdir=tmp_path / "v2")
    assert sorted(decodes) == sorted([str(media.video), str(media.intro), str(media.outro), str(media.dub),
                                      str(dub2)])
    verdicts = lambda reports: {r.role: (r.verdict, r.violations) for r in reports if r.role != "audio"}  # noqa: E731
    assert verdicts(second) == verdicts(first)
