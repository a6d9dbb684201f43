"""Post-processing: the one final encode (bumpers, delivery audio, burn-in + soft subtitles, sidecars)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import numpy as np
import pysubs2
import pytest

from lipline.errors import InputError
from lipline.records import PostParams
from lipline.tasks.post import decode_subtitle_bytes, finalize, load_subtitles, post
from lipline.tasks.probe import probe_media
from tests import media_factory as mf

FAST = PostParams(preset="ultrafast", crf=23)
MAIN_S = 2.4          # 60 frames at 25 fps
SRT = """1
00:00:00,200 --> 00:00:01,200
你好世界

2
00:00:01,400 --> 00:00:02,200
Hello こんにちは 안녕하세요
"""


def one_cue(text: str, start: str = "00:00:00,100", end: str = "00:00:01,100") -> str:
    return f"1\n{start} --> {end}\n{text}\n"


@pytest.fixture(scope="module")
def src(media, tmp_path_factory):
    """Short inputs: a 2.4 s main at 25 fps, a 48 kHz dub, a 1.2 s main for burn-in comparisons."""
    d = tmp_path_factory.mktemp("post-src")
    return {
        "main": mf.talking_video(d / "main.mp4", media.face, MAIN_S),
        "short": mf.talking_video(d / "short.mp4", media.face, 1.2),
        "dub": mf.write_audio(d / "dub.wav", mf.speech_like(MAIN_S, sr=48000, pauses=()), sr=48000),
        "subs": mf.subtitles(d / "subs.srt", SRT),
        "intro": media.intro,   # 1.5 s, 1280x720, 30 fps, no audio
        "outro": media.outro,   # 1.0 s, 320x240, 25 fps, 440 Hz tone
    }


def frame_at(path: str | Path, t: float) -> np.ndarray:
    with av.open(os.fspath(path)) as c:
        for f in c.decode(video=0):
            if f.time is not None and f.time >= t - 1e-3:
                return f.to_ndarray(format="rgb24").astype(np.int16)
    raise AssertionError(f"no frame at {t}s in {path}")


def audio_samples(path: str | Path) -> np.ndarray:
    with av.open(os.fspath(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # (channels, n) fltp


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ------------------------------------------------------------------------------------- full deliverable, odd names

ODD = {
    "main": "-main video $HOME; 'q'.mp4",
    "dub": "配音 🎧 dub's \"x\".wav",
    "subs": "-subs [1],a=b:c;$x 字幕 😀.srt",
    "intro": "intro 'x' ;$(echo hi).mp4",
    "outro": os.fsdecode(b"-outro \xff \xe7\x89\x87\xe5\xb0\xbe.mp4"),  # not valid UTF-8
}


@pytest.fixture(scope="module")
def deliverable(src, tmp_path_factory):
    d = tmp_path_factory.mktemp("post-odd") / "in 'dir' $; 目录 🚀"
    d.mkdir()
    paths = {k: d / ODD[k] for k in ODD}
    for k, p in paths.items():
        shutil.copyfile(src[k], p)
    out_dir = d / "-out 'dir' $x;y 出力 ✨"
    seen: list[float] = []
    result = finalize(str(paths["main"]), str(paths["dub"]), out_dir, FAST, subtitles_uri=str(paths["subs"]),
                      intro_uri=str(paths["intro"]), outro_uri=str(paths["outro"]), progress=seen.append)
    return result, out_dir, seen


def test_deliverable_layout_and_timing(deliverable):
    result, out_dir, seen = deliverable
    assert Path(result.video_path) == out_dir / "final.mp4"
    assert sorted(p.name for p in out_dir.iterdir()) == ["final.mp4", "final.srt", "final.vtt"]
    intro_frames = round(1.5 * 25)       # 30 fps intro conformed to 25 fps
    assert result.intro_offset_s == pytest.approx(intro_frames / 25)
    expected_frames = intro_frames + round(MAIN_S * 25) + 25
    assert result.frame_count == expected_frames and result.fps == 25

    probe = probe_media(result.video_path)
    v, a = probe.video, probe.audio
    assert (v.width, v.height, v.codec, v.pix_fmt) == (640, 360, "h264", "yuv420p")
    assert v.fps == pytest.approx(25, abs=0.01) and v.constant_fps
    assert v.frame_count == expected_frames
    assert v.duration_s == pytest.approx(1.5 + MAIN_S + 1.0, abs=1 / 25)
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 48000, 2)
    assert a.duration_s == pytest.approx(v.duration_s, abs=1 / 25)
    assert seen and seen[-1] == 1.0 and all(0 <= x <= 1 for x in seen) and seen == sorted(seen)


def test_soft_subtitles_and_sidecars_are_shifted(deliverable):
    result, _, _ = deliverable
    with av.open(result.video_path) as c:
        subs = [s for s in c.streams if s.type == "subtitle"]
        assert [s.codec_context.name for s in subs] == ["mov_text"]
        packets = [p for p in c.demux(subs[0]) if p.size > 2]  # 2-byte empty samples fill gaps
        first = float(packets[0].pts * packets[0].time_base)
        assert first == pytest.approx(result.intro_offset_s + 0.2, abs=0.01)
        payload = bytes(packets[0])
        assert payload[2:2 + int.from_bytes(payload[:2], "big")].decode("utf-8") == "你好世界"
    offset_ms = round(result.intro_offset_s * 1000)
    for sidecar in (result.srt_path, result.vtt_path):
        raw = Path(sidecar).read_bytes()
        raw.decode("utf-8")  # UTF-8, no BOM needed
        loaded = pysubs2.load(sidecar)
        assert [(e.start, e.end) for e in loaded] == [(200 + offset_ms, 1200 + offset_ms),
                                                      (1400 + offset_ms, 2200 + offset_ms)]
        assert [e.plaintext for e in loaded] == ["你好世界", "Hello こんにちは 안녕하세요"]
    assert Path(result.vtt_path).read_text(encoding="utf-8").startswith("WEBVTT")


def test_bumper_without_audio_gets_silence(deliverable):
    """The intro has no audio: the track still spans the whole video, silent in the intro, then the dub, the tone."""
    result, _, _ = deliverable
    samples = audio_samples(result.video_path)
    sr, offset = 48000, result.intro_offset_s
    assert samples.shape[0] == 2
    assert samples.shape[1] / sr == pytest.approx(result.duration_s, abs=1 / 25)
    intro = samples[:, int(0.05 * sr):int((offset - 0.05) * sr)]
    main = samples[:, int((offset + 0.1) * sr):int((offset + MAIN_S - 0.1) * sr)]
    outro = samples[:, int((offset + MAIN_S + 0.1) * sr):int((result.duration_s - 0.1) * sr)]
    assert rms(intro) < 1e-4
    assert rms(main) > 0.02 and rms(outro) > 0.05


def test_bumpers_are_conformed(deliverable, src):
    """Intro (16:9, 30 fps) fills the frame; the 4:3 outro is pillarboxed, not stretched."""
    result, _, _ = deliverable
    intro = frame_at(result.video_path, 0.5)
    outro = frame_at(result.video_path, result.duration_s - 0.5)
    assert intro.shape == outro.shape == (360, 640, 3)
    assert intro[:, :40].mean() > 40            # test pattern reaches the left edge
    assert outro[:, :70].max() < 30 and outro[:, -70:].max() < 30   # black bars of (640-480)/2 = 80 px
    assert outro[:, 100:540].mean() > 40


# ---------------------------------------------------------------------------------------------------- burn-in

@pytest.fixture(scope="module")
def burned(src, tmp_path_factory):
    """Frames at 0.6 s of the 1.2 s main, without subtitles and with several one-cue files."""
    d = tmp_path_factory.mktemp("burn")
    files = {
        "hello": mf.subtitles(d / "hello.srt", one_cue("你好世界")),
        "thanks": mf.subtitles(d / "thanks.srt", one_cue("谢谢大家")),
        "hello_gbk": mf.subtitles(d / "hello-gbk.srt", one_cue("你好世界"), encoding="gbk"),
        "hello_vtt16": mf.subtitles(d / "hello.vtt", "WEBVTT\n\n00:00:00.100 --> 00:00:01.100\n你好世界\n",
                                    encoding="utf-16"),
        "hello_ass": d / "hello.ass",
    }
    ass = pysubs2.SSAFile()
    ass.append(pysubs2.SSAEvent(start=100, end=1100, text="你好世界"))
    ass.save(str(files["hello_ass"]))
    frames = {}
    plain = finalize(str(src["short"]), str(src["dub"]), d / "plain", FAST.model_copy(update={"burn_subtitles": False}),
                     subtitles_uri=str(files["hello"]))
    frames["none"] = frame_at(plain.video_path, 0.6)
    for name, path in files.items():
        out = finalize(str(src["short"]), str(src["dub"]), d / name, FAST, subtitles_uri=str(path))
        frames[name] = frame_at(out.video_path, 0.6)
    return frames


def lower_diff(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Pixels that differ clearly in the bottom third, and the largest difference in the top half."""
    h = a.shape[0]
    lower = np.abs(a[2 * h // 3:] - b[2 * h // 3:]).max(axis=2)
    upper = np.abs(a[: h // 2] - b[: h // 2]).max(axis=2)
    return int((lower > 60).sum()), int(np.percentile(upper, 99))


def test_burn_in_renders_glyphs(burned):
    changed, upper = lower_diff(burned["hello"], burned["none"])
    assert changed > 150, "no subtitle pixels: libass drew nothing (font not found?)"
    assert upper < 40


def test_ass_subtitles_burn_with_the_cjk_font(burned):
    """An ASS file keeps its own styles; force_style still swaps in the bundled CJK font."""
    assert lower_diff(burned["hello_ass"], burned["none"])[0] > 150


def test_different_cjk_strings_render_differently(burned):
    """With a missing font both would be the same row of empty boxes (pixel-identical)."""
    changed, _ = lower_diff(burned["hello"], burned["thanks"])
    assert changed > 100
    assert lower_diff(burned["thanks"], burned["none"])[0] > 150


def test_legacy_encodings_render_the_same_text(burned):
    """GBK SRT and UTF-16 WebVTT are decoded and render exactly like the UTF-8 SRT."""
    assert lower_diff(burned["hello_gbk"], burned["hello"])[0] == 0
    assert lower_diff(burned["hello_vtt16"], burned["hello"])[0] == 0


# -------------------------------------------------------------------------------------------- no extras, errors

def test_main_only_without_subtitles(src, tmp_path):
    """No intro/outro/subtitles: frames and rate of the main kept; the dub (longer here) trimmed to the video."""
    out = finalize(str(src["short"]), str(src["dub"]), tmp_path / "o", FAST)
    assert (out.srt_path, out.vtt_path, out.intro_offset_s) == (None, None, 0.0)
    probe = probe_media(out.video_path)
    assert probe.video.frame_count == 30 and probe.video.fps == pytest.approx(25, abs=0.01)
    assert probe.audio.duration_s == pytest.approx(1.2, abs=1 / 25)
    with av.open(out.video_path) as c:
        assert not [s for s in c.streams if s.type == "subtitle"]


def test_ntsc_rate_is_kept(media, tmp_path):
    """29.97 fps main + 25 fps intro: delivered at 30000/1001, the intro resampled to whole frames."""
    main = mf.talking_video(tmp_path / "ntsc.mp4", media.face, 1.0, fps="30000/1001", width=320, height=180)
    intro = mf.bumper(tmp_path / "i.mp4", 0.6, 320, 240, 25, with_audio=True)
    dub = mf.write_audio(tmp_path / "d.wav", mf.speech_like(1.0, sr=48000, pauses=()), sr=48000)
    out = finalize(str(main), str(dub), tmp_path / "o", FAST, intro_uri=str(intro))
    probe = probe_media(out.video_path)
    assert probe.video.nominal_fps == pytest.approx(30000 / 1001, abs=1e-3)
    assert probe.video.frame_count == out.frame_count == 18 + 30
    assert out.intro_offset_s == pytest.approx(18 * 1001 / 30000)
    assert probe.audio.duration_s == pytest.approx(48 * 1001 / 30000, abs=1 / 30)


def test_soft_subtitles_off_burn_on(src, tmp_path):
    params = FAST.model_copy(update={"soft_subtitles": False})
    out = finalize(str(src["short"]), str(src["dub"]), tmp_path / "o", params, subtitles_uri=str(src["subs"]))
    assert out.srt_path is None and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["final.mp4"]


def test_subtitle_formats_and_encodings(tmp_path):
    ass = pysubs2.SSAFile()
    ass.append(pysubs2.SSAEvent(start=100, end=900, text="ありがとう"))
    ass.save(str(tmp_path / "a.ass"))
    (tmp_path / "u16.srt").write_bytes(one_cue("감사합니다").encode("utf-16"))  # with BOM
    (tmp_path / "gbk.srt").write_bytes(one_cue("谢谢大家，欢迎收看我们的节目").encode("gbk"))
    assert [e.plaintext for e in load_subtitles(tmp_path / "a.ass")] == ["ありがとう"]
    assert [e.plaintext for e in load_subtitles(tmp_path / "u16.srt")] == ["감사합니다"]
    assert [e.plaintext for e in load_subtitles(tmp_path / "gbk.srt")] == ["谢谢大家，欢迎收看我们的节目"]
    assert decode_subtitle_bytes("é".encode("utf-8"))[1] == "utf-8"
    (tmp_path / "junk.srt").write_bytes(b"\x00\x01 not subtitles at all \x02" * 10)
    with pytest.raises(InputError):
        load_subtitles(tmp_path / "junk.srt")


@pytest.mark.parametrize("encoding,text", [("gbk", "你好世界"), ("big5", "謝謝大家"), ("shift_jis", "ありがとう"),
                                           ("euc-kr", "감사합니다"), ("utf-16", "你好世界"), ("utf-8-sig", "谢谢")])
def test_short_legacy_cjk_files_are_decoded(encoding, text):
    assert decode_subtitle_bytes(one_cue(text).encode(encoding))[0].lstrip("\ufeff") == one_cue(text)


def test_prefect_task_wrapper():
    assert post.name == "post" and post.fn.__name__ == "post"


@pytest.fixture(scope="module")
def counter_main(tmp_path_factory) -> Path:
    """50 frames at 25 fps whose luma is 4 * frame index (short GOP: the reversed run seeks)."""
    path = tmp_path_factory.mktemp("post-counter") / "counter.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "color=c=black:size=64x48:rate=25:duration=2", "-vf",
              "geq=lum='N*4':cb=128:cr=128", "-c:v", "libx264", "-preset", "veryfast", "-qp", "0", "-g", "12",
              "-pix_fmt", "yuv420p", path)
    return path


@pytest.mark.parametrize("spill", [True, False], ids=["reversed-through-a-file", "reversed-in-chunks"])
def test_main_runs_are_encoded_in_plan_order(counter_main, tmp_path, monkeypatch, spill):
    """Ping-pong without an intermediate encode: the one final encode gets the frames in the plan's order (the
    reversed run decoded once into a raw temp file, or, over the spill budget, in chunks of 8), exact frame count,
    audio as long as the picture."""
    import lipline.frames as frames
    from lipline.tasks.segment import FrameRun

    monkeypatch.setattr(frames, "REVERSE_BUDGET_BYTES", 64 * 48 * 3 // 2 * 8)
    spilled = []
    real = frames.forward_then_reversed
    monkeypatch.setattr(frames, "forward_then_reversed", lambda *a, **k: spilled.append(1) or real(*a, **k))
    decoded = []
    real_frames = frames.FrameReader.frames
    monkeypatch.setattr(frames.FrameReader, "frames",
                        lambda self, a, b: (decoded.append(1) or f for f in real_frames(self, a, b)))
    if not spill:
        monkeypatch.setattr(frames, "SPILL_BUDGET_BYTES", 0)
    runs = [FrameRun(out_start=0, out_end=50, src_start=0, step=1), FrameRun(out_start=50, out_end=80, src_start=49,
                                                                               step=-1),
            FrameRun(out_start=80, out_end=85, src_start=20, step=0)]
    dub = mf.write_audio(tmp_path / "d.wav", mf.speech_like(3.4, sr=48000, pauses=()), sr=48000)
    out = finalize(str(counter_main), str(dub), tmp_path / "o", PostParams(preset="ultrafast", crf=0),
                   main_runs=runs)
    with av.open(out.video_path) as c:
        got = [int(round(f.to_ndarray()[: f.height].mean() / 4)) for f in c.decode(video=0)]
    assert got == [*range(50), *range(49, 19, -1), *[20] * 5]
    assert spilled == ([1] if spill else [])
    # through the file, the reversed run's frames come from the forward run's decode: 50 + the held frame
    assert len(decoded) == (51 if spill else 81)
    assert out.frame_count == 85 and probe_media(out.video_path).audio.duration_s == pytest.approx(3.4, abs=1 / 25)


def test_a_reversed_run_with_no_forward_run_before_it_is_decoded_once_through_a_file(counter_main, tmp_path,
                                                                                   monkeypatch):
    import lipline.frames as frames
    from lipline.tasks.segment import FrameRun

    monkeypatch.setattr(frames, "REVERSE_BUDGET_BYTES", 64 * 48 * 3 // 2 * 8)
    alone = []
    real = frames.reversed_through_file
    monkeypatch.setattr(frames, "reversed_through_file", lambda *a, **k: alone.append(1) or real(*a, **k))
    runs = [FrameRun(out_start=0, out_end=30, src_start=49, step=-1), FrameRun(out_start=30, out_end=40, src_start=0)]
    dub = mf.write_audio(tmp_path / "d.wav", mf.speech_like(1.6, sr=48000, pauses=()), sr=48000)
    out = finalize(str(counter_main), str(dub), tmp_path / "o", PostParams(preset="ultrafast", crf=0), main_runs=runs)
    with av.open(out.video_path) as c:
        got = [int(round(f.to_ndarray()[: f.height].mean() / 4)) for f in c.decode(video=0)]
    assert got == [*range(49, 19, -1), *range(10)] and alone == [1]


def test_main_runs_past_the_source_are_refused(counter_main, tmp_path):
    from lipline.errors import MediaToolError
    from lipline.tasks.segment import FrameRun

    dub = mf.write_audio(tmp_path / "d.wav", mf.speech_like(1.0, sr=48000, pauses=()), sr=48000)
    with pytest.raises(MediaToolError, match="has 50 frames"):
        finalize(str(counter_main), str(dub), tmp_path / "o", FAST,
                 main_runs=[FrameRun(out_start=0, out_end=60, src_start=0, step=1)])
    assert not list((tmp_path / "o").glob("final.mp4*"))


def test_contact_sheet_times_become_keyframes_of_the_deliverable(src, tmp_path):
    """`keyframes_at` (main-part seconds): the frame at intro offset + t is a keyframe; nothing else changes."""
    from lipline.tasks.qc_plots import keyframe_times

    times = [0.4, 1.2, 2.0]  # frames 10, 30, 50 of the 25 fps main
    out = finalize(str(src["main"]), str(src["dub"]), tmp_path / "o", FAST, intro_uri=str(src["intro"]),
                   keyframes_at=times)
    keys = keyframe_times(Path(out.video_path))
    for t in times:
        assert any(abs(k - (out.intro_offset_s + t)) < 1e-3 for k in keys), (t, out.intro_offset_s, keys)
    assert out.frame_count == probe_media(out.video_path).video.frame_count
