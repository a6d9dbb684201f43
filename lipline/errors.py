"""Specific exception types. Anything a user can cause is a `LiplineError` and is shown without a traceback."""

from __future__ import annotations


class LiplineError(Exception):
    """Base class for errors the CLI reports as a one-line message (exit status 1 or 2)."""

    exit_code = 1


class InputError(LiplineError):
    """A user-supplied file cannot be used: names the file, the rule, what was seen and what to do."""

    def __init__(self, file: str, rule: str, observed: str, hint: str) -> None:
        self.file, self.rule, self.observed, self.hint = file, rule, observed, hint
        super().__init__(f"{file}: {rule}: {observed}. {hint}")


class MediaToolError(LiplineError):
    """ffmpeg (or a decoder) failed on a file that passed validation."""


class StoreError(LiplineError):
    """The object store refused a read or write, or a checksum did not match after upload."""


class ValidationFailed(LiplineError):
    """At least one input failed its data contract; the report lists every violation."""

    def __init__(self, reports: list) -> None:  # list[ValidationReport]
        self.reports = reports
        lines = [f"  {r.file} ({r.role}) {v.rule}: observed {v.observed}; expected {v.expected}. {v.hint}"
                 for r in reports if r.verdict == "fail" for v in r.violations if v.severity == "fail"]
        super().__init__("validation failed, nothing was processed:\n" + "\n".join(lines))


class JobExists(LiplineError):
    """A job id that already has a complete deliverable was given again without asking to replace it."""


class EngineError(LiplineError):
    """The lip-sync engine could not run (unknown name, missing weights, wrong kind)."""


class InsufficientGPUMemory(EngineError):
    """Every rung of the out-of-memory ladder was tried; route the job to a pool with a bigger GPU."""

    def __init__(self, message: str, rungs: list[str]) -> None:
        self.rungs = rungs
        super().__init__(message)


class FaceChoiceError(LiplineError, ValueError):
    """A face choice (``--face``) that is not one of the accepted spellings."""

    def __init__(self, given: str, syntax: str) -> None:
        self.given, self.syntax = given, syntax
        super().__init__(f"face choice {given!r} is not understood; use {syntax}")
