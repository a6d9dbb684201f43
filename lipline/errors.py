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

    def __init__(self, message: str) -> None:
        if "No space left on device" in message:  # ffmpeg's words for a full work dir
            message += f"; {_OS_ADVICE['ENOSPC']}"
        super().__init__(message)


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


class JobLocked(LiplineError):
    """Another run of the same job id holds its lock (`lipline.joblock`); refused before anything is written."""


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


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (botocore and pandas messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class UnknownScheme(LiplineError):
    """A URI whose scheme (``gs://``, ``foo://``) has no filesystem here: unknown to fsspec or its package is not
    installed."""

    def __init__(self, uri: str, what: str, cause: BaseException) -> None:
        scheme = str(uri).split("://", 1)[0]
        if isinstance(cause, ImportError):
            reason = f"the {scheme}:// scheme needs a package that is not installed ({one_line(cause)})"
        else:
            reason = f"{scheme}:// is not a known storage scheme"
        super().__init__(f"{what} {uri}: {reason}; use a local path, s3://bucket/key or an installed fsspec scheme")


class ManifestError(LiplineError):
    """A batch manifest that is missing, unreadable or malformed."""


class DeploymentNotFound(EngineError):
    """``LIPLINE_GPU_DEPLOYMENT`` names a deployment the Prefect API does not have."""


class LocalFileError(LiplineError):
    """The operating system refused a local file operation a user can fix (permissions, full disk)."""


_OS_ADVICE = {
    "ENOSPC": "the disk is full: free space there or point LIPLINE_WORK_DIR at a bigger disk",
    "EDQUOT": "the disk quota is exhausted: free space there or point LIPLINE_WORK_DIR at another disk",
    "EACCES": "permission denied: make it readable/writable for this user (chmod) or use another path",
    "EPERM": "operation not permitted: check the file's permissions and owner",
    "EROFS": "the file system is read-only: point LIPLINE_WORK_DIR / --store at a writable place",
}


def user_error(exc: BaseException) -> LiplineError | None:
    """The one-line Lipline error for an exception a user caused and can fix, else None (a bug: traceback).

    Lipline errors as they are; OS errors for permissions, full disks and read-only file systems named with
    their file and what to do."""
    import errno

    if isinstance(exc, LiplineError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        advice = _OS_ADVICE.get(errno.errorcode.get(exc.errno, ""))
        if advice:
            where = exc.filename if exc.filename is not None else "a local file"
            return LocalFileError(f"{where}: {exc.strerror or one_line(exc)}; {advice}")
    return None
