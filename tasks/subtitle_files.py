"""Subtitle files: decoding (BOMs, strict UTF-8, then charset-normalizer with a CJK tie-break), the one parse
(`parse_subtitles`, pysubs2) whose result post re-writes for ffmpeg/libass, and the per-cue measurements the
subtitles contract checks. Used by validate (stage 2) and post (stage 6): validation measures the timings that parse
gives, so a file it accepts is a file post can render."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

from lipline.errors import InputError, UnknownScheme, one_line
from lipline.uris import local_path


def decode_subtitle_bytes(raw: bytes) -> tuple[str, str]:
    """Text and encoding name of a subtitle file: BOMs first, then strict UTF-8, then charset-normalizer."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            return raw.decode(name), name
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(raw) if m.encoding]
    if not matches:
        raise UnicodeDecodeError("unknown", raw[:1], 0, 1, "no text encoding fits")
    # Short CJK files are ambiguous between the legacy double-byte codecs (GBK bytes also decode as "valid" CP949,
    # as a mix of Hangul and Han): among the least chaotic candidates, prefer the one whose text keeps to one script.
    ranked = sorted(enumerate(matches), key=lambda im: (round(im[1].chaos, 2), _script_mix(str(im[1])), im[0]))
    best = ranked[0][1]
    return str(best), best.encoding


def _script_mix(text: str) -> int:
    """How implausible the mix of scripts in `text` is (0 = plausible): Hangul next to Han/kana, halfwidth kana."""
    hangul = han = kana = halfwidth = odd = False
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            continue
        if 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
            hangul = True
        elif 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
            han = True
        elif 0x3040 <= o <= 0x30FF:
            kana = True
        elif 0xFF61 <= o <= 0xFF9F:
            halfwidth = True
        elif o == 0xFFFD or 0xE000 <= o <= 0xF8FF:
            odd = True
    return int(hangul and (han or kana)) + int(halfwidth) + int(odd)


def parse_subtitles(text: str):
    """The parse post renders from (pysubs2, format detected from the content); validation uses the same."""
    import pysubs2

    return pysubs2.SSAFile.from_string(text.lstrip("\ufeff"))


def _renderer_disagreement(cues: list[dict], subs) -> list[dict]:
    """A failing cue row when the parser post renders from reads other cue timings than the file's timing lines
    (e.g. a missing blank line between cues hides a cue from the grammar scan): what validation measured must be
    what gets rendered."""
    if not all(c["grammar_ok"] for c in cues):
        return []  # already failing, cue by cue
    written = [(round(c["start_s"] * 1000), round(c["end_s"] * 1000)) for c in cues]
    rendered = [(ev.start, ev.end) for ev in subs.events if not ev.is_comment]
    if written == rendered:
        return []
    i = next((k for k, (w, r) in enumerate(zip(written, rendered)) if w != r), min(len(written), len(rendered)))
    shown = (f"{rendered[i][0] / 1000:.3f} s --> {rendered[i][1] / 1000:.3f} s" if i < len(rendered)
             else "no such cue")
    number = cues[i]["cue"] if i < len(cues) else (cues[-1]["cue"] + 1 if cues else 1)
    return [{"cue": number, "grammar_ok": False, "start_s": None, "end_s": None,
             "grammar_error": f"the renderer reads cue {i + 1} of {len(rendered)} as {shown} ({len(written)} cues "
                              "in the file's grammar): separate cues by a blank line, times as HH:MM:SS,mmm"}]


_SRT_TIME = r"(\d{1,3}):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(\s.*)?$")
_VTT_TIME = r"(?:(\d{1,3}):)?(\d{2}):(\d{2})\.(\d{3})"
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TIME}\s+-->\s+{_VTT_TIME}(\s.*)?$")


def _secs(h, m, s, ms) -> float | None:
    h, m, s = int(h or 0), int(m), int(s)
    if m > 59 or s > 59:
        return None
    return h * 3600 + m * 60 + s + int(ms.ljust(3, "0")) / 1000.0


def _decode_text(data: bytes) -> tuple[str | None, str, bool, str]:
    """(text or None, encoding name, is UTF-8, error) for the contract."""
    boms = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    if not data.startswith(boms) and b"\x00" in data[:4096]:
        return None, "binary", False, "binary data, not a text subtitle file"
    try:
        text, encoding = decode_subtitle_bytes(data)
    except UnicodeError as e:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return None, "utf-16", False, f"undecodable UTF-16 ({getattr(e, 'reason', e)})"
        return None, "unknown", False, "binary data or unknown text encoding"
    if encoding == "utf-8-sig":
        text = text.lstrip("\ufeff")
    label = {"utf-16": "utf-16 (with BOM)", "utf-32": "utf-32 (with BOM)"}.get(encoding, encoding)
    return text, label, encoding in ("utf-8", "utf-8-sig"), ""


def _scan_cues(text: str, fmt: str) -> list[dict]:
    """SRT/VTT cues in file order with their grammar status; numbers are the SRT counters where present."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[str]] = []
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    timing_re = _SRT_TIMING if fmt == "srt" else _VTT_TIMING
    cues: list[dict] = []
    for block in blocks:
        if fmt == "vtt":
            head = block[0].strip()
            if head.startswith("WEBVTT") or head.split(" ")[0] in ("NOTE", "STYLE", "REGION"):
                continue
        number = None
        body = block
        if fmt == "srt" and block[0].strip().isdigit():
            number = int(block[0].strip())
            body = block[1:]
        elif fmt == "vtt" and len(block) > 1 and "-->" not in block[0] and "-->" in block[1]:
            body = block[1:]  # cue identifier
        if number is None:
            number = (cues[-1]["cue"] + 1) if cues else 1
        row = {"cue": number, "grammar_ok": True, "grammar_error": "", "start_s": None, "end_s": None}
        match = timing_re.match(body[0]) if body else None
        if not body:
            row.update(grammar_ok=False, grammar_error="counter without timing line or text")
        elif match is None:
            row.update(grammar_ok=False, grammar_error=f"bad timing line {body[0].strip()[:60]!r}")
        else:
            g = match.groups()
            start, end = _secs(*g[0:4]), _secs(*g[4:8])
            if start is None or end is None:
                row.update(grammar_ok=False, grammar_error=f"out-of-range timestamp {body[0].strip()[:60]!r}")
            elif len(body) < 2:
                row.update(grammar_ok=False, grammar_error="cue has no text", start_s=start, end_s=end)
            else:
                row.update(start_s=start, end_s=end)
        cues.append(row)
    return cues


def measure_subtitles(uri: str, workdir: Path, media_duration_s: float | None = None) -> tuple[dict, list[dict]]:
    """(file row, cue rows) for a subtitle file."""
    import pysubs2

    file_row: dict[str, Any] = {"readable": True, "readable_error": "", "encoding": "", "cue_count": None}
    try:
        path = local_path(uri, workdir)
        data = path.read_bytes()
    except (OSError, FileNotFoundError) as e:
        file_row.update(readable=False, readable_error=f"cannot read the file ({e.__class__.__name__})")
        return file_row, []
    except (InputError, UnknownScheme) as e:  # a URI that cannot be fetched
        file_row.update(readable=False, readable_error=str(e))
        return file_row, []
    if not data.strip():
        file_row.update(readable=False, readable_error="the file is empty")
        return file_row, []
    text, encoding, is_utf8, error = _decode_text(data)
    if text is None:
        file_row.update(readable=False, readable_error=error)
        return file_row, []
    file_row["encoding"] = encoding
    file_row["encoding_ok"] = is_utf8
    if "\x00" in text[:4096]:
        file_row.update(readable=False, readable_error="binary data, not a text subtitle file")
        return file_row, []
    try:
        fmt = pysubs2.formats.autodetect_format(text)
    except Exception as e:  # noqa: BLE001 - pysubs2 raises several types
        file_row.update(readable=False, readable_error=f"not SRT/ASS/VTT ({e.__class__.__name__})")
        return file_row, []
    file_row["format"] = fmt
    if fmt not in ("srt", "vtt", "ass", "ssa"):
        file_row.update(readable=False, readable_error=f"{fmt} is not a supported subtitle format (SRT/ASS/VTT)")
        return file_row, []
    try:
        subs = parse_subtitles(text)
    except Exception as e:  # noqa: BLE001 - pysubs2 raises several types; post could not render this file
        file_row.update(readable=False, readable_error=f"unparseable {fmt} ({one_line(e)})")
        return file_row, []
    if fmt in ("srt", "vtt"):
        cues = _scan_cues(text, fmt)
        cues += _renderer_disagreement(cues, subs)
    else:
        cues = [{"cue": i, "grammar_ok": True, "grammar_error": "", "start_s": ev.start / 1000.0,
                 "end_s": ev.end / 1000.0} for i, ev in enumerate((e for e in subs.events if not e.is_comment), 1)]
    latest_end = None
    for row in cues:
        start, end = row["start_s"], row["end_s"]
        row["duration_s"] = (end - start) if start is not None and end is not None else None
        row["overlap_s"] = None
        row["past_end_s"] = None
        if start is None or end is None:
            continue
        if latest_end is not None:
            row["overlap_s"] = round(latest_end - start, 6)
        if end >= start:
            latest_end = end if latest_end is None else max(latest_end, end)
        if media_duration_s is not None:
            row["past_end_s"] = round(end - media_duration_s, 6)
    file_row["cue_count"] = len(cues)
    return file_row, cues


