"""Issue 16 item 9: a subtitle file that validation accepts never fails in the final encode (real ffmpeg/libass).

Validation measures the cue timings from the same parse post renders from (`parse_subtitles`); post hands ffmpeg
only SRT/ASS that pysubs2 wrote itself."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from lipline.records import PostParams
from lipline.tasks.post import finalize
from lipline.tasks.validate import validate_file
from tests import media_factory as mf

ASS_HEAD = ("[Script Info]\nScriptType: v4.00+\nPlayResX: {res}\nPlayResY: {res}\n\n[V4+ Styles]\n"
            "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
            "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
            "MarginR, MarginV, Encoding\nStyle: Default,No Such Font,{size},&H00FFFFFF,&H000000FF,&H00000000,&H00000000,"
            "0,0,0,0,0,0,0,0,1,2,2,2,10,10,10,1\n\n")
EVENTS = "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"


def ass(*dialogue: str, res: int = 384, size: int = 20, extra: str = "") -> str:
    return ASS_HEAD.format(res=res, size=size) + extra + EVENTS + "".join(d + "\n" for d in dialogue)


CASES: dict[str, tuple[str | bytes, str]] = {  # name: (content, expected verdict: 'fail' or 'ok' = pass/warn)
    # a missing blank line: the grammar scan sees one cue, the renderer two (the second one backwards), which the
    # mov_text muxer refuses ("duration ... is invalid") - accepted by validation before the fix
    "no_blank_line.srt": ("1\n00:00:00,000 --> 00:00:01,000\nhi\n2\n00:00:00,500 --> 00:00:00,400\nx\n", "fail"),
    "backwards.ass": (ass("Dialogue: 0,0:00:01.50,0:00:00.50,Default,,0,0,0,,backwards"), "fail"),
    "comments_only.ass": (ass("Comment: 0,0:00:00.00,0:00:01.00,Default,,0,0,0,,x"), "fail"),
    "empty.srt": (b"", "fail"),
    "blank.vtt": ("\n\n  \n", "fail"),
    "odd_styles.ass": (ass("Dialogue: 0,0:00:00.10,0:00:01.00,Undefined,,0,0,0,,{\\fnNowhere\\fs-3}odd",
                           "Dialogue: 0,0:00:01.00,0:00:01.50,Default,,0,0,0,,{\\p1}m 0 0 l 100 0 100 100{\\p0}",
                           "Dialogue: 0,0:00:01.50,0:00:01.80,Default,,0,0,0,,{\\an8}", res=0, size=-5), "ok"),
    "garbage_font.ass": (ass("Dialogue: 0,0:00:00.10,0:00:01.00,Default,,0,0,0,,hi",
                             extra="[Fonts]\nfontname: x.ttf\nnot a font at all!!\n\n"), "ok"),
    "styled.vtt": ("WEBVTT\n\nSTYLE\n::cue { color: red }\n\nNOTE hi\n\nid-1\n00:00.100 --> 00:01.000 align:start "
                   "position:10% line:0\n<c.red><b>hi</b></c> <v Bob>there</v> &amp; <i>you</i>\n", "ok"),
    "bom.vtt": (codecs.BOM_UTF8 + "WEBVTT\n\n00:00.100 --> 00:01.000\n你好\n".encode(), "ok"),
    "utf16.srt": ("1\n00:00:00,100 --> 00:00:01,000\n你好，世界\n".encode("utf-16"), "ok"),
    "gbk.srt": ("1\n00:00:00,100 --> 00:00:01,000\n你好，世界。今天天气很好。\n".encode("gbk"), "ok"),
    "zero_and_late.srt": ("1\n00:00:00,500 --> 00:00:00,500\nzero\n\n2\n00:00:01,000 --> 00:00:30,000\nlate\n\n"
                          "3\n00:00:40,000 --> 00:00:41,000\npast the end\n", "ok"),
    "text_with_arrow.srt": ("1\n00:00:00,100 --> 00:00:01,000\na --> b\n\n2\n00:00:01,000 --> 00:00:01,500\n3\n", "ok"),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("subs-render")
    video = mf.pattern_clip(d / "main.mp4", w=320, h=180, fps=25, dur=2.0)
    audio = mf.write_audio(d / "dub.wav", mf.speech_like(2.0, sr=48000, pauses=()), sr=48000)
    return video, audio


@pytest.mark.parametrize("name", sorted(CASES))
def test_accepted_subtitles_always_encode(name, clip, tmp_path):
    content, expected = CASES[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    report = validate_file(str(path), "subtitles", media_duration_s=2.0)
    assert (report.verdict == "fail") == (expected == "fail"), report.violations
    if report.verdict == "fail":
        return
    out = finalize(str(clip[0]), str(clip[1]), tmp_path / "out", PostParams(), subtitles_uri=str(path))
    assert Path(out.video_path).stat().st_size > 0 and out.frame_count == 50


def test_renderer_disagreement_names_the_cue(tmp_path):
    path = tmp_path / "s.srt"
    path.write_text(CASES["no_blank_line.srt"][0])
    report = validate_file(str(path), "subtitles", media_duration_s=2.0)
    (v,) = [v for v in report.violations if v.severity == "fail"]
    assert v.rule == "subtitles.grammar" and "renderer reads cue 2 of 2 as 0.500 s --> 0.400 s" in v.observed
