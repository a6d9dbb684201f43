"""The wheels that let `bench/gpu_suite.sh` run on the lent GPU machine in one device call.

The lent machine (an H200 here) has Python 3.12 with PyTorch, transformers, numpy, scipy and more preinstalled
(`bench/gpu_device_packages.txt`, read off the device tool's page), reaches no package registry, and receives the
working tree plus at most 64 MiB in all. It lacks what the suite's model steps import: diffusers, pydantic (+ core,
settings), soundfile, soxr and a few small pure-Python packages — and this project, which is a package (`models/` is
`lipline.models` only once installed). This script, run here where pip reaches PyPI, puts into `.whl/` (git-ignored):

* the Python 3.12 manylinux wheels of `CARRY`, each at its pin in `requirements-lock.txt` (the versions CI tests);
* a wheel of this project, built from the working tree (installed on the device with ``--no-deps``).

It then checks that every requirement of every carried wheel (markers evaluated for Linux / CPython 3.12, extras
ignored) is either carried or on the device at a version the requirement admits (where the page gives one), and that
the bundle and the working tree fit one call. What it cannot carry in one call — PyAV, MediaPipe and imageio-ffmpeg
(about 140 MB of wheels), which the whole-engine step (`bench/video_engine.py`) needs — is left out: the suite
records that step as not run on such a machine (`gpu_suite.sh`), and the model steps give the model-time figures.

    python bench/gpu_bundle.py                 # download + build into .whl/, check, print the device call
    python bench/gpu_bundle.py --check-only    # check the wheels already in .whl/
    python bench/gpu_bundle.py --python 3.11   # the same set for another Python (to rehearse it on this machine)

Then, on the lent machine: ``run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=600)``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / ".whl"
LOCK = REPO / "requirements-lock.txt"
DEVICE_PACKAGES = Path(__file__).resolve().parent / "gpu_device_packages.txt"
CALL_LIMIT_BYTES = 64 * 2**20  # the device tool: working tree + carried paths per call
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")

# What the suite's model steps (engine_throughput, its bf16 and compiled runs, gpu_numerics) import and the device
# lacks, found by running them with an import hook (README "GPU figures"); their own requirements come along below.
CARRY = ("diffusers", "importlib-metadata", "zipp", "lazy-importer", "pydantic", "pydantic-core", "pydantic-settings",
         "python-dotenv", "annotated-types", "typing-inspection", "typing-extensions", "soundfile", "cffi", "pycparser",
         "soxr")


class BundleError(RuntimeError):
    """The bundle is incomplete, inconsistent or too large; the message says what to change."""


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of the lock file."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def device_packages(path: Path = DEVICE_PACKAGES) -> dict[str, Version | None]:
    """The device image's packages: ``name`` or ``name==version`` per line (``#`` comments)."""
    found: dict[str, Version | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = Version(version) if version else None
    return found


def carried_pins(pins: dict[str, str]) -> list[str]:
    missing = [name for name in CARRY if canonicalize_name(name) not in pins]
    if missing:
        raise BundleError(f"{LOCK.name} pins no version of {', '.join(missing)}: "
                          "add them there or drop them from CARRY")
    return [f"{name}=={pins[canonicalize_name(name)]}" for name in CARRY]


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(zf.read(meta).decode("utf-8"))
    return [Requirement(text) for text in headers.get_all("Requires-Dist") or []]


def unmet_requirements(wheels: list[Path], device: dict[str, Version | None], python: str) -> list[str]:
    """Every requirement of the wheels that neither the bundle nor the device meets (one line each)."""
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    carried = {canonicalize_name(parse_wheel_filename(w.name)[0]): parse_wheel_filename(w.name)[1] for w in wheels}
    problems = []
    for wheel in wheels:
        for req in wheel_requirements(wheel):
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # another platform/Python, or an extra
            name = canonicalize_name(req.name)
            have = carried.get(name, device.get(name, "absent"))
            if have == "absent":
                problems.append(f"{wheel.name} needs {req}: neither carried nor on the device (add it to CARRY)")
            elif have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
                where = "carried" if name in carried else "on the device"
                problems.append(f"{wheel.name} needs {req}: {req.name} {have} is {where}")
    return problems


def tree_bytes() -> int:
    """Bytes of what the device tool sends besides the carried paths: tracked + untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def download(requirements: list[str], dest: Path, python: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", *platforms, "--dest", str(dest),
                    *requirements], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dest), str(REPO)], check=True)


def check(dest: Path, python: str) -> list[Path]:
    wheels = sorted(dest.glob("*.whl"))
    if not any(canonicalize_name(parse_wheel_filename(w.name)[0]) == "lipline" for w in wheels):
        raise BundleError(f"{dest} holds no lipline wheel: run python bench/gpu_bundle.py")
    problems = unmet_requirements([w for w in wheels if not w.name.startswith("lipline-")], device_packages(), python)
    if problems:
        raise BundleError("the bundle would not import on the device:\n  " + "\n  ".join(problems))
    size, tree = sum(w.stat().st_size for w in wheels), tree_bytes()
    if size + tree > CALL_LIMIT_BYTES:
        raise BundleError(f"{size / 2**20:.1f} MiB of wheels + {tree / 2**20:.1f} MiB of working tree is over the "
                          f"{CALL_LIMIT_BYTES / 2**20:.0f} MiB one device call carries")
    print(f"gpu_bundle: {len(wheels)} wheels, {size / 2**20:.1f} MiB (+ {tree / 2**20:.1f} MiB of working tree) "
          f"in {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}; every requirement met")
    return wheels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="3.12", help="the device's Python (default 3.12)")
    ap.add_argument("--dest", type=Path, default=BUNDLE, help="where the wheels go (default .whl/)")
    ap.add_argument("--check-only", action="store_true", help="check the wheels already there, download nothing")
    args = ap.parse_args(argv)
    try:
        if not args.check_only:
            shutil.rmtree(args.dest, ignore_errors=True)
            args.dest.mkdir(parents=True)
            download(carried_pins(lock_pins()), args.dest, args.python)
        check(args.dest, args.python)
    except (BundleError, subprocess.CalledProcessError) as exc:
        print(f"gpu_bundle: {exc}", file=sys.stderr)
        return 1
    if args.dest == BUNDLE:
        print('on the lent GPU machine: run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=600)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
