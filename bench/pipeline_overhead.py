"""Pipeline overhead: `lipline run --engine passthrough` against one plain ffmpeg encode of the same input, same
run, same preset and CRF 23 on both sides (CRF 23 is ffmpeg's default; the CLI gets `--crf 23`).

Cases (`--cases`, comma-separated):

* `60s`: a 60 s 1080p30 talking clip with subtitles (burnt in), a 3 s intro and a 3 s outro, against
  `ffmpeg -i in.mp4 -c:v libx264 -preset P -c:a aac out.mp4`. Target ≤ 1.3x. The deliverable is longer than the
  plain encode (the bumpers are encoded too) and carries burnt-in subtitles: the comparison favours the plain side.
* `10min`: the same at 600 s (`--ten-minutes` adds it; it takes a while). Target ≤ 1.1x.
* `60s-hevc`: the 60 s case with the clip re-encoded as HEVC (libx265 ultrafast), as phones record it: not H.264,
  so the job conformed it to an intermediate (x264 ultrafast, CRF 10) before the final encode. Target ≤ 1.3x.
* `60s-portrait`: the 60 s case with a 90° display rotation (the same stream; a phone held upright). The plain
  encode rotates it too (ffmpeg's autorotate). Target ≤ 1.3x.
* `60s-vfr`: the 60 s case with every 10th frame dropped (a variable frame rate, 27 fps on average). The plain
  encode keeps its timing; the job delivers CFR at the probed rate. Target ≤ 1.3x.
* `4k-pingpong`: a 5 s 4K (3840x2160, 30 fps) source under a 10.8 s dub (ping-pong), no bumpers or subtitles,
  against a plain encode of the output length (`-stream_loop -1 -t 10.8`). Target ≤ 1.5x.

The talking clips carry camera-like sensor noise (a still image would encode unrealistically fast and make every
fixed cost look large). For each lipline run the peak RSS of the whole job is sampled every 0.1 s from /proc: the
CLI process and all its descendants (ffmpeg, Prefect's embedded server) summed. Target: flat in input length and
≤ 2 GB. The same sampling gives the CPU seconds of each process (job process, validation worker, Prefect server,
ffmpeg): on a small machine their sum over the cores is the floor of the job's wall time. The plain encode runs
again after the job(s) (``--no-bracket`` skips it): on a shared box the encoder's speed drifts by several percent
within minutes, as much as a job's whole overhead, so the ratio is also given against the mean of both plain runs.
Appends each case to bench/RESULTS.md.

``--api temporary`` (default) is a machine with nothing configured: each `lipline run` starts Prefect's temporary
server. ``--api running`` first starts `prefect server start` (own PREFECT_HOME under ``--work``), as an operator
with `lipline stack up` or a Prefect server has, and points the runs at it: the server's start-up is then not the
job's, but the CPU it spends on the job's requests still is (its process tree is sampled over the run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.prefect_server: `prefect server start`
from _common import BENCH_DIR, append_results, talking_inputs  # noqa: E402

from lipline import samples  # noqa: E402
from lipline.media import ffmpeg_exe  # noqa: E402

TARGETS = {"60s": 1.3, "10min": 1.1, "4k-pingpong": 1.5, "60s-hevc": 1.3, "60s-portrait": 1.3, "60s-vfr": 1.3}
LOAD_NOTE = ("- note: load average at start {start:.1f}, at end {end:.1f} ({cores} cores; it includes this bench's own "
             "processes; anything else running on the machine loads both sides of the ratio)")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _kind(pid: int, root: int) -> str:
    """What a process of the job is, for the CPU-seconds breakdown."""
    if pid == root:
        return "job process"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "ffmpeg" in cmd.split(" ")[0]:
        return "ffmpeg"
    if "uvicorn" in cmd:
        return "Prefect server"
    if "multiprocessing" in cmd:
        return "validation worker"
    return "other"


def sample_tree(root: int, cpu: dict[int, tuple[str, float]]) -> int:
    """Resident memory of `root` and all its descendants (VmRSS summed); records each one's CPU seconds so far
    (user + system) in `cpu` (pid -> (kind, seconds))."""
    tree, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        known = cpu.get(pid, ("other", 0.0))[0]
        kind = known if known != "other" else _kind(pid, root)  # a child seen between fork and exec: look again
        cpu[pid] = (kind, max(seconds, cpu.get(pid, ("", 0.0))[1]))
    return total


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its descendants."""
    cpu: dict[int, tuple[str, float]] = {}
    sample_tree(root, cpu)
    return sum(seconds for _kind, seconds in cpu.values())


def timed(cmd: list[str], env: dict | None = None, server_pid: int | None = None) -> tuple[float, int, str, dict[str, float]]:
    """(seconds, peak RSS of the process tree in bytes, stdout, CPU seconds by kind of process) of one command.
    CPU seconds are sampled every 0.1 s: a process that lives less than that is missed. `server_pid`: a running
    Prefect server whose CPU over the command counts too ("Prefect server (running)")."""
    server_before = tree_cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]
    cpu: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sample_tree(proc.pid, cpu))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    by_kind: dict[str, float] = {}
    for kind, used in cpu.values():
        by_kind[kind] = by_kind.get(kind, 0.0) + used
    if server_pid:
        by_kind["Prefect server (running)"] = tree_cpu_seconds(server_pid) - server_before
    return seconds, peak[0], out, by_kind


def cpu_line(job: dict[str, float], plain: dict[str, float]) -> str:
    """The job's CPU seconds by process, against the plain encode's, and the wall time they imply on this box."""
    total, cores = sum(job.values()), os.cpu_count() or 1
    parts = ", ".join(f"{kind} {sec:.1f}" for kind, sec in sorted(job.items(), key=lambda kv: -kv[1]))
    return (f"- CPU seconds (user + system, sampled every 0.1 s): {parts}; total {total:.1f} vs the plain encode's "
            f"{sum(plain.values()):.1f} → on {cores} cores the job cannot take less than {total / cores:.1f} s")


def lipline_cmd(video: Path, audio: Path, work: Path, preset: str, tag: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lipline.cli", "run", str(video), str(audio), *extra, "--engine", "passthrough",
            "--preset", preset, "--crf", "23", "--store", str(work / "store"), "--job-id",
            f"overhead-{tag}-{int(time.time())}", "--quiet"]


def _stages(cli_output: str) -> dict[str, float]:
    """The stage timings of the job whose deliverable path the CLI printed last."""
    return json.loads(Path(cli_output.strip().rsplit("/", 1)[0] + "/manifest.json").read_text())["timings_s"]


def hevc_copy(video: Path) -> Path:
    """`video` re-encoded as HEVC (libx265 ultrafast, CRF 20; the audio copied): what phones record. Not H.264, so the
    job conforms it to an H.264 intermediate before the final encode (`tasks/normalize.py`)."""
    out = video.with_name(video.stem + "-hevc.mp4")
    if not out.exists():
        samples.ffmpeg("-i", video, "-c:v", "libx265", "-preset", "ultrafast", "-crf", "20", "-x265-params",
                       "log-level=error", "-pix_fmt", "yuv420p", "-c:a", "copy", out)
    return out


def portrait_copy(video: Path) -> Path:
    """`video` with a display matrix (a phone held upright): the same stream, shown rotated 90°."""
    out = video.with_name(video.stem + "-portrait.mp4")
    if not out.exists():
        samples.ffmpeg("-display_rotation", "90", "-i", video, "-c", "copy", out)
    return out


def vfr_copy(video: Path) -> Path:
    """`video` with every 10th frame dropped and the others keeping their times (x264 ultrafast, like the clip; the
    audio copied): a variable frame rate, as phones and screen recorders write."""
    out = video.with_name(video.stem + "-vfr.mp4")
    if not out.exists():
        samples.ffmpeg("-i", video, "-vf", "select='not(eq(mod(n,10),9))'", "-fps_mode", "vfr", "-c:v", "libx264",
                       "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "copy", out)
    return out


def run_case(case: str, work: Path, preset: str, api: str = "temporary", again: bool = False,
             bracket: bool = True) -> None:
    load_start = os.getloadavg()[0]
    if case == "4k-pingpong":
        media = talking_inputs(work, 5.0, 3840, 2160, 30, bumpers=False)
        dub = work / "dub-10.8s.wav"
        if not dub.exists():
            samples.write_audio(dub, samples.speech_like(10.8, seed=5))
        plain_cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(media["video"]),
                     "-t", "10.8", "-c:v", "libx264", "-preset", preset, "-c:a", "aac", str(work / "plain-4k.mp4")]
        cmd = lipline_cmd(media["video"], dub, work, preset, case, ["--length-mode", "pingpong"])
        title = f"5 s 4K30 source, 10.8 s dub (ping-pong), preset {preset}"
        note = "- note: the plain side encodes 10.8 s of the source looped (the output length); both CRF 23"
    else:
        seconds = 600.0 if case == "10min" else 60.0
        media = talking_inputs(work, seconds)
        if case == "60s-hevc":
            media["video"] = hevc_copy(media["video"])
        elif case == "60s-portrait":
            media["video"] = portrait_copy(media["video"])
        elif case == "60s-vfr":
            media["video"] = vfr_copy(media["video"])
        plain_cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(media["video"]), "-c:v", "libx264",
                     "-preset", preset, "-c:a", "aac", str(work / "plain.mp4")]
        cmd = lipline_cmd(media["video"], media["audio"], work, preset, case,
                          ["--subtitles", str(media["subtitles"]), "--intro", str(media["intro"]),
                           "--outro", str(media["outro"])])
        kind = {"60s-hevc": " HEVC", "60s-portrait": " with a 90° display rotation (portrait)",
                "60s-vfr": " at a variable frame rate (every 10th frame dropped)"}.get(case, "")
        title = f"{seconds:.0f} s 1080p30{kind}, subtitles + intro + outro, preset {preset}"
        note = ("- note: the deliverable is longer than the plain encode (3 s intro + 3 s outro are encoded too) and "
                "has subtitles burnt in; both encodes use CRF 23")
    plain, plain_rss, _, plain_cpu = timed(plain_cmd)
    # a new, empty probe cache: the job decodes its inputs as a first job does (tasks/probe_cache.py)
    cache = Path(tempfile.mkdtemp(prefix="probe-cache-", dir=work))
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO", "LIPLINE_CACHE_DIR": str(cache)}
    server = None
    if api == "running":
        from tests.prefect_server import start_prefect_server

        (work / "prefect-home").mkdir(parents=True, exist_ok=True)
        server = start_prefect_server(work / "prefect-home", work / "prefect-server.log")
        env["PREFECT_API_URL"] = server.api
        title += ", against a running Prefect server"
    try:
        total, rss, out, job_cpu = timed(cmd, env=env, server_pid=server.process.pid if server else None)
        if again:  # a second job on the same inputs (the batch case: one source, N dubs): its probes are cached
            cmd_again = [*cmd[:cmd.index("--job-id") + 1], cmd[cmd.index("--job-id") + 1] + "-again",
                         *cmd[cmd.index("--job-id") + 2:]]
            again_s, _, out_again, again_cpu = timed(cmd_again, env=env,
                                                     server_pid=server.process.pid if server else None)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(cache, ignore_errors=True)
    # the same plain encode once more: on a shared 2-core box the encoder's speed drifts by several percent within
    # minutes, as much as the job's whole overhead; the ratio against the mean of both is the steadier figure
    plain_after = timed(plain_cmd)[0] if bracket else None
    stages = _stages(out)
    flow_s = sum(stages.values())
    stage_text = ", ".join(f"{k} {v:.1f}s" for k, v in stages.items())
    append_results(
        f"pipeline_overhead [{case}] ({title})",
        "python bench/pipeline_overhead.py " + " ".join(sys.argv[1:]),
        [f"- plain ffmpeg libx264 -preset {preset} + aac: {plain:.1f} s (peak RSS {plain_rss / 2**20:.0f} MB)",
         f"- `lipline run --engine passthrough` ({'a running Prefect server' if server else 'Prefect temporary server'})"
         f", whole CLI call: {total:.1f} s → **{total / plain:.2f}x** "
         f"(target ≤ {TARGETS[case]}x)",
         *([f"- the plain encode again after the job{'s' if again else ''}: {plain_after:.1f} s "
            f"({(plain_after / plain - 1) * 100:+.1f} %); against the mean of both plain runs "
            f"({(plain + plain_after) / 2:.1f} s): job **{2 * total / (plain + plain_after):.2f}x**"
            + (f", again **{2 * again_s / (plain + plain_after):.2f}x**" if again else "")] if bracket else []),
         f"- flow stages only (no process/Prefect start): {flow_s:.1f} s → {flow_s / plain:.2f}x",
         f"- stages: {stage_text}",
         f"- peak RSS of the job, CLI + all child processes summed (sampled every 0.1 s): {rss / 2**20:.0f} MB "
         "(target ≤ 2048 MB, flat in input length)",
         cpu_line(job_cpu, plain_cpu),
         *([f"- the same job again (a new job id; the inputs' probes read from the probe cache, as for the 2nd..Nth "
            f"dub of one source): {again_s:.1f} s → **{again_s / plain:.2f}x**; stages: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in _stages(out_again).items()),
            cpu_line(again_cpu, plain_cpu).replace("- CPU seconds", "- CPU seconds of that job")] if again else []),
         note, LOAD_NOTE.format(start=load_start, end=os.getloadavg()[0], cores=os.cpu_count())])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="60s,4k-pingpong",
                    help="comma-separated: " + ", ".join(TARGETS))
    ap.add_argument("--ten-minutes", action="store_true", help="also run the 10 min case (slow)")
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    ap.add_argument("--api", choices=("temporary", "running"), default="temporary",
                    help="temporary: nothing configured (each run starts Prefect's temporary server); running: the runs "
                         "use a Prefect server started first")
    ap.add_argument("--again", action="store_true",
                    help="also time a second job on the same inputs (their probes cached: the batch case)")
    ap.add_argument("--no-bracket", dest="bracket", action="store_false",
                    help="skip the second plain encode after the job(s) (by default the ratio is also given against "
                         "the mean of a plain encode before and after, the steadier figure on a shared machine)")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.ten_minutes and "10min" not in cases:
        cases.append("10min")
    unknown = [c for c in cases if c not in TARGETS]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {', '.join(TARGETS)}")
    for case in cases:
        run_case(case, args.work, args.preset, args.api, args.again, args.bracket)


if __name__ == "__main__":
    main()
