"""Stage 2, validate: measure each input and check it against its data contract (a great-expectations suite).

Flow per file::

    probe / decode / parse  ->  measurements (pandas DataFrame)  ->  GX suite data_contracts/<role>.json
                            ->  every failed expectation becomes a `Violation(rule, severity, observed, expected, hint)`

* **Contracts** are GX 1.x suite JSON files (`data_contracts/{video,audio,subtitles,intro,outro}.json`), loaded
  with ``gx.ExpectationSuite(**json)``. Each expectation's ``meta`` carries the Lipline rule name, our severity
  (``fail`` stops the job, ``fixable`` is repaired by normalize, ``warn`` is reported only), a one-line hint, and
  ``expected`` / ``observed`` text templates (``str.format`` over the expectation kwargs / the measured row).
* **Scopes.** Media roles measure one row. Subtitles measure one file row plus one row per cue; expectations with
  ``meta.scope == "cue"`` run on the cue rows and their violations name the cue numbers (``Violation.cues``).
* **Unknown = not checked.** A measurement that cannot be made (no video stream, so no fps) is null; GX skips
  nulls, so only the rule that explains why fires (e.g. ``video.has_video_stream``).
* **Overrides** (per run): keys are ``<rule>.<bound>``, listed in each expectation's ``meta.overrides`` with the GX
  kwarg they replace, e.g. ``{"audio.loudness.min_lufs": -35, "video.fps.min_fps": 15}``. Values are numbers. A key
  that belongs to another role's contract is accepted and ignored for this file (one dict serves a whole run);
  a key in no contract raises `InputError` listing every valid key (`override_keys()`).
* **Cue numbers** are the SRT counters (or the position of the cue for VTT/ASS / SRT blocks without a counter).
* **Subtitles vs media end**: `validate_inputs` takes the media duration from the dub audio (the deliverable
  follows the dub's length under the default length modes), else from the video.
* GX is imported lazily and its ephemeral context, data source and batch definition are built once per process
  (`_gx`), so validating a file costs ~20 ms of GX time on top of the measurements.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import string
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from lipline.errors import InputError, UnknownScheme
from lipline.lazy import lazy_attributes
from lipline.records import LoudnessMeasure, MediaProbe, Role, ValidationReport, Violation
from lipline.tasks import prefetch
from lipline.tasks.subtitle_files import measure_subtitles
from lipline.uris import known_digests, local_path, remember_digests

__all__ = [
    "ROLES",
    "validate_file",
    "validate_inputs",
    "prefetch_inputs",
    "override_keys",
    "load_contract",
    "measure_media",
    "measure_subtitles",
]

ROLES: tuple[str, ...] = ("video", "audio", "subtitles", "intro", "outro")
MEDIA_ROLES = ("video", "audio", "intro", "outro")
_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------------- contracts

@functools.cache
def _contract_json(role: str) -> dict:
    text = resources.files("lipline.data_contracts").joinpath(f"{role}.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def override_keys() -> dict[str, tuple[str, str, str]]:
    """Every valid override key -> (role, rule, GX kwarg), over all contracts."""
    keys: dict[str, tuple[str, str, str]] = {}
    for role in ROLES:
        for exp in _contract_json(role)["expectations"]:
            for key, kwarg in exp.get("meta", {}).get("overrides", {}).items():
                keys[key] = (role, exp["meta"]["rule"], kwarg)
    return keys


def _check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, float]:
    if not overrides:
        return {}
    valid = override_keys()
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise InputError("overrides", "contracts.override_key", f"unknown override key(s) {', '.join(unknown)}",
                         "valid keys: " + ", ".join(sorted(valid)))
    clean: dict[str, float] = {}
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise InputError("overrides", "contracts.override_value", f"{key}={value!r} is not a number",
                             "override values are numbers (thresholds)")
        clean[key] = value
    return clean


def load_contract(role: str, overrides: Mapping[str, Any] | None = None):
    """The GX `ExpectationSuite` for `role`, with threshold overrides applied (validated by key)."""
    if role not in ROLES:
        raise InputError(role, "contracts.role", f"unknown role {role!r}", "roles: " + ", ".join(ROLES))
    overrides = _check_overrides(overrides)
    gx, _ = _gx()
    data = copy.deepcopy(_contract_json(role))
    for exp in data["expectations"]:
        for key, kwarg in exp.get("meta", {}).get("overrides", {}).items():
            if key in overrides:
                exp["kwargs"][kwarg] = overrides[key]
    data.pop("id", None)
    return gx.ExpectationSuite(**data)


_GX_LOCK = threading.Lock()


def _gx():
    """(gx module, batch definition) on a cached ephemeral context; built once even when warmed in a thread."""
    with _GX_LOCK:
        return _gx_context()


@functools.cache
def _gx_context():
    """(gx module, batch definition) on an ephemeral context without progress bars."""
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # The ephemeral docs-site INFO line is noise on every CLI call and in every flow run log.
    # (that module pins its own logger to INFO, so the parent's level is not enough).
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    source = context.data_sources.add_pandas("lipline")
    asset = source.add_dataframe_asset("measurements")
    return gx, asset.add_batch_definition_whole_dataframe("whole")


# ------------------------------------------------------------------------------------------------- measurements

def _streams_text(probe: MediaProbe | None) -> str:
    if probe is None:
        return "unknown"
    parts = []
    if probe.video:
        parts.append(f"video {probe.video.codec}")
    if probe.audio:
        parts.append(f"audio {probe.audio.codec}")
    return ", ".join(parts) or "none"


def measure_media(uri: str, role: str, workdir: Path, faces: str | None = None) -> tuple[dict, MediaProbe | None]:
    """One row of measurements for a media role (None where a value cannot be measured). ``faces`` = the face
    choice in force: the talking-head video is also sampled for faces (None: faces are not checked)."""
    from lipline.tasks.probe_cache import probe_media_cached

    row: dict[str, Any] = {"readable": True, "readable_error": "", "decode_error": ""}
    try:
        probe = probe_media_cached(uri, workdir)  # the same bytes are decoded once (tasks/probe_cache.py)
    except InputError as e:
        row.update(readable=False, readable_error=f"{e.rule}: {e.observed}")
        return row, None
    except UnknownScheme as e:  # an input URI no filesystem here can fetch: a failed report like any unreadable file
        row.update(readable=False, readable_error=str(e))
        return row, None
    opened = probe.video is not None or probe.audio is not None or probe.decode_error is None
    row["decodes_to_end"] = probe.decode_error is None
    row["decode_error"] = probe.decode_error or ""
    row["streams"] = _streams_text(probe)
    row["duration_s"] = probe.duration_s if opened else None
    row["has_video_stream"] = (probe.video is not None) if opened else None
    row["has_audio_stream"] = (probe.audio is not None) if opened else None
    row.update(_header_measures(probe))
    v = probe.video
    if v is not None:
        still = _still_picture(probe)
        row.update(
            width=v.width, height=v.height, display_width=v.display_width, display_height=v.display_height,
            short_side_px=min(v.display_width, v.display_height), fps=round(v.fps, 3) if v.fps else None,
            constant_fps=v.constant_fps, even_dimensions=(v.width % 2 == 0 and v.height % 2 == 0),
            rotation=v.rotation, duration_s=v.duration_s, still_image=still is not None, picture=still or "",
        )
        if still:  # a picture has no frame rate: the demuxer's default 25 fps would only add noise
            row.update(fps=None, constant_fps=None)
        elif role == "video" and faces is not None:
            from lipline.tasks.face_contract import measure_faces

            row.update(measure_faces(local_path(uri, workdir), faces))
    if role == "audio":
        a = probe.audio
        row["duration_s"] = None  # only the audio stream's own duration counts for the dub
        if a is not None:
            row.update(sample_rate=a.sample_rate, channels=a.channels, channel_layout=a.channel_layout or "?",
                       duration_s=a.duration_s)
            row.update(_audio_measures(local_path(uri, workdir)))
    return row, probe


def _still_picture(probe: MediaProbe) -> str | None:
    """What makes `probe` a still picture rather than a video (an image file under any name, or one frame), or None."""
    v = probe.video
    if v is None:
        return None
    fmt = (probe.container or "").split(",")[0]
    if fmt == "image2" or fmt.endswith("_pipe"):
        kind = fmt.removesuffix("_pipe") if fmt != "image2" else v.codec
        return f"a {kind} image ({v.frame_count} frame{'s' if v.frame_count != 1 else ''}, {v.width}x{v.height})"
    if v.frame_count <= 1:
        return f"{v.frame_count} frame of {v.codec} video ({v.width}x{v.height})"
    return None


def _header_measures(probe: MediaProbe) -> dict:
    """How far the header's duration claim is from the decoded one (None: no claim, or decoding already failed)."""
    claimed = probe.header_duration_s
    if claimed is None or probe.decode_error:
        return {"header_duration_s": claimed, "header_gap_s": None}
    return {"header_duration_s": claimed, "header_gap_s": abs(claimed - probe.duration_s),
            "decoded_duration_s": probe.duration_s}


def _audio_measures(path: Path) -> dict:
    from lipline.tasks.audio_stream import measure_file

    m = measure_file(path)  # one streaming pass, constant memory
    out: dict[str, Any] = {}
    if m is None:
        return out
    lufs = m.integrated_lufs
    if math.isnan(lufs):
        out["integrated_lufs_text"] = "too short to measure"
    else:
        out["integrated_lufs"] = max(lufs, -200.0)  # -inf (silence) kept finite for GX, text says "silent"
        out["integrated_lufs_text"] = "silent (-inf LUFS)" if math.isinf(lufs) else f"{lufs:.1f} LUFS"
    out["true_peak_dbtp"] = max(m.true_peak_dbtp, -200.0)
    out["clipping_runs"] = m.clipping_runs
    if m.channels == 2:
        out["phase_correlation"] = None if math.isnan(m.phase_correlation) else m.phase_correlation
    out["leading_silence_s"], out["trailing_silence_s"] = m.leading_silence_s, m.trailing_silence_s
    return out


# --------------------------------------------------------------------------------------------------- validation

class _SafeDict(dict):
    def __missing__(self, key):
        return "?"


class _Formatter(string.Formatter):
    def format_field(self, value, format_spec):
        if value is None or value == "?" or (isinstance(value, float) and math.isnan(value)):
            return "?"
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


_FMT = _Formatter()


def _fill(template: str, values: Mapping[str, Any]) -> str:
    try:
        return _FMT.vformat(template, (), _SafeDict(values))
    except (IndexError, KeyError, ValueError, AttributeError):
        return template


def _run_suite(suite, rows: list[dict]) -> list:
    import pandas as pd

    gx, batch_definition = _gx()
    frame = pd.DataFrame(rows)
    with _LOCK:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return list(batch.validate(suite, result_format="COMPLETE").results)


def _violations(suite, file_row: dict, cue_rows: list[dict]) -> list[Violation]:
    gx, _ = _gx()
    meta_of = lambda e: e.meta or {}  # noqa: E731
    by_scope = {"file": [e for e in suite.expectations if meta_of(e).get("scope", "file") == "file"],
                "cue": [e for e in suite.expectations if meta_of(e).get("scope") == "cue"]}
    out: list[Violation] = []
    for scope, expectations in by_scope.items():
        rows = [file_row] if scope == "file" else cue_rows
        if not expectations or not rows:
            continue
        for e in expectations:  # a column no row measured = nothing to check
            for row in rows:
                row.setdefault(e.column, None)
        part = gx.ExpectationSuite(name=f"{suite.name}.{scope}", expectations=expectations)
        for result in _run_suite(part, rows):
            if result.success:
                continue
            cfg = result.expectation_config
            meta = cfg.meta or {}
            kwargs = dict(cfg.kwargs)
            expected = _fill(meta.get("expected", str(kwargs)), kwargs)
            rule, severity, hint = meta.get("rule", cfg.type), meta.get("severity", "fail"), meta.get("hint", "")
            if result.exception_info and result.exception_info.get("raised_exception"):
                out.append(Violation(rule=rule, severity="fail", expected=expected, hint=hint,
                                     observed="could not be evaluated: "
                                              + str(result.exception_info.get("exception_message"))[:200]))
                continue
            template = meta.get("observed", "{" + kwargs.get("column", "") + "}")
            if scope == "file":
                out.append(Violation(rule=rule, severity=severity, expected=expected, hint=_fill(hint, file_row),
                                     observed=_fill(template, file_row)))
            else:
                idx = list(result.result.get("unexpected_index_list") or [])
                bad = [rows[i] for i in idx if isinstance(i, int) and i < len(rows)]
                shown = "; ".join(_fill(template, r) for r in bad[:20])
                if len(bad) > 20:
                    shown += f"; ... and {len(bad) - 20} more"
                numbers = [int(r["cue"]) for r in bad]
                out.append(Violation(rule=rule, severity=severity, expected=expected, hint=hint,
                                     observed=f"cues {', '.join(map(str, numbers))}: {shown}", cues=numbers))
    return out


def validate_file(uri: str, role: Role, overrides: Mapping[str, float | int] | None = None, *,
                  media_duration_s: float | None = None, workdir: Path | None = None,
                  faces: str | None = None) -> ValidationReport:
    """Measure `uri` as `role` and check it against ``data_contracts/<role>.json``; every violation is listed.

    Bad input never raises: an empty, missing, non-media or mislabelled file yields a ``fail`` report. Raises
    `InputError` only for an unknown role or unknown/non-numeric override keys (a caller error).
    `media_duration_s` (subtitles only) enables the ``subtitles.past_media_end`` rule. ``faces`` (video only): the
    face choice the face rules report; None skips the face rules (an engine that does not work on faces).
    """
    if workdir is None:  # a private temp dir for downloads, removed before returning
        with tempfile.TemporaryDirectory(prefix="lipline-validate-") as tmp:
            return validate_file(uri, role, overrides, media_duration_s=media_duration_s, workdir=Path(tmp),
                                 faces=faces)
    suite = load_contract(role, overrides)
    probe = None
    if role == "subtitles":
        file_row, cue_rows = measure_subtitles(uri, workdir, media_duration_s)
    else:
        file_row, probe = measure_media(uri, role, workdir, faces)
        cue_rows = []
    violations = _violations(suite, file_row, cue_rows)
    loudness = None
    if role == "audio" and file_row.get("integrated_lufs") is not None:
        loudness = LoudnessMeasure(integrated_lufs=round(file_row["integrated_lufs"], 3),
                                   true_peak_dbtp=round(file_row["true_peak_dbtp"], 3))
    return ValidationReport(file=str(uri), role=role, verdict=ValidationReport.verdict_of(violations),
                            violations=violations, probe=probe, loudness=loudness)


def validate_inputs(files: Mapping[str, str], overrides: Mapping[str, float | int] | None = None, *,
                    workdir: Path | None = None, faces: str | None = None) -> list[ValidationReport]:
    """Validate every input of a job (`files`: role -> URI); media first, then subtitles against the media end.
    Takes the result `prefetch_inputs` started for exactly this request, when there is one."""
    early = prefetch.take(files, overrides, faces)
    if early is not None:
        try:
            reports, digests = early.result()
        except Exception:  # noqa: BLE001 - measured again here: a real problem is raised again, with its own type
            pass
        else:
            remember_digests(digests)  # the worker hashed the inputs for the probe cache: not read again here
            return reports
    return _validate_inputs(files, overrides, workdir=workdir, faces=faces)


def prefetch_inputs(files: Mapping[str, str], overrides: Mapping[str, float | int] | None = None, *,
                    faces: str | None = None) -> bool:
    """Start `validate_inputs` of local inputs in a background process (`tasks/prefetch.py`); False if remote."""
    files, overrides = dict(files), dict(overrides or {})
    return prefetch.start(files, overrides, faces, _validate_and_hand_digests, files, overrides, faces=faces)


def _validate_and_hand_digests(files: Mapping[str, str], overrides: Mapping[str, float | int] | None = None, *,
                               faces: str | None = None) -> tuple[list[ValidationReport], dict]:
    """The prefetch worker's job: the reports, and the inputs' SHA-256 it read (probe cache) for the job's process."""
    reports = _validate_inputs(files, overrides, faces=faces)
    return reports, known_digests()


def _validate_inputs(files: Mapping[str, str], overrides: Mapping[str, float | int] | None = None, *,
                     workdir: Path | None = None, faces: str | None = None) -> list[ValidationReport]:
    _check_overrides(overrides)
    unknown = [r for r in files if r not in ROLES]
    if unknown:
        raise InputError(", ".join(unknown), "contracts.role", f"unknown role(s) {unknown}",
                         "roles: " + ", ".join(ROLES))
    if workdir is None:  # a private temp dir for downloads, removed before returning
        with tempfile.TemporaryDirectory(prefix="lipline-validate-") as tmp:
            return _validate_inputs(files, overrides, workdir=Path(tmp), faces=faces)
    media = [role for role in MEDIA_ROLES if files.get(role)]
    for role in media:  # remote inputs fetched one by one first (two roles may name one URI); failures are reported
        with contextlib.suppress(InputError, UnknownScheme):  # by the measurement, as a failed report
            local_path(files[role], workdir)
    # The media are measured at the same time (the video's full decode, the dub's loudness pass and the bumpers
    # use different cores); the great-expectations checks stay serialized (`_run_suite`).
    with ThreadPoolExecutor(max_workers=max(1, len(media)), thread_name_prefix="lipline-validate") as pool:
        futures = {role: pool.submit(validate_file, files[role], role, overrides, workdir=workdir, faces=faces)
                   for role in media}
        reports: dict[str, ValidationReport] = {role: future.result() for role, future in futures.items()}
    if files.get("subtitles"):
        duration = None
        for role in ("audio", "video"):
            p = reports[role].probe if role in reports else None
            if p is not None and p.duration_s > 0:
                duration = p.duration_s
                break
        reports["subtitles"] = validate_file(files["subtitles"], "subtitles", overrides,
                                             media_duration_s=duration, workdir=workdir)
    return [reports[r] for r in ROLES if r in reports]


def _make_task():
    from prefect import task

    @task(name="validate", retries=0)
    def validate(files: dict[str, str], overrides: dict[str, float] | None = None,
                 workdir: Path | None = None, faces: str | None = None) -> list[ValidationReport]:
        """Prefect task: `validate_inputs` (the flow decides what to do with a ``fail`` verdict)."""
        return validate_inputs(files, overrides, workdir=workdir, faces=faces)

    return validate


# the Prefect task `validate`, built on first use: measuring and checking files never imports Prefect
__getattr__ = lazy_attributes(globals(), validate=_make_task)
