"""`lipline stack up|down|status|webhook` and `lipline deploy` (the logic is in `lipline.stack`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lipline import stack

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="The whole deployment on one machine: Prefect server, workers, S3 store, deployments")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

STATE_DIR = typer.Option(None, "--state-dir", help="Where the stack keeps pids, ports, credentials, logs and data "
                                                   "[default: LIPLINE_STACK_DIR or ./.lipline-stack]")


def _dir(state_dir: Optional[Path]) -> Path:
    return (state_dir or stack.default_state_dir()).absolute()


def _summary(state: stack.StackState) -> None:
    where = f"CUDA_VISIBLE_DEVICES=0..{state.gpu_workers - 1}" if state.gpus else "no GPU found: on CPU"
    if state.gpu_workers == 0:
        gpu = "no GPU workers (lip-sync in the cpu worker's flow runs)"
    elif state.gpu_backend == "task-workers":
        gpu = f"{state.gpu_workers} x lipline gpu-worker (warm model, one segment at a time each, {where})"
    else:
        gpu = f"{state.gpu_workers} x gpu pool process worker (--limit 1 each, {where})"
    out.print(f"Prefect UI    {state.ui_url}")
    out.print(f"Prefect API   {state.api_url}")
    out.print(f"store         {state.store}  (SeaweedFS S3 API {state.s3_endpoint}, bucket {stack.BUCKET})")
    out.print(f"workers       cpu (pool cpu), {gpu}")
    out.print(f"environment   source {state.env_file()}   (PREFECT_API_URL, LIPLINE_STORE, AWS_*)")
    out.print(f"logs          {state.dir / 'logs'}/")
    if state.samples:
        out.print("start a job on the sample inputs (deliverable: s3://lipline/jobs/<job id>/final.mp4):")
    else:
        out.print("start a job (upload the inputs to the store first):")
    out.print(f"  {state.curl}", markup=False)


@app.command()
def up(
    state_dir: Optional[Path] = STATE_DIR,
    gpu_workers: int = typer.Option(1, "--gpu-workers", min=0, help="GPU workers: one per GPU; on CPU when there "
                                                                    "is no GPU"),
    gpu_backend: str = typer.Option("task-workers", "--gpu-backend",
                                    help="task-workers: warm `lipline gpu-worker` processes (model loaded once per "
                                         "worker); deployment: process workers on the gpu pool (a fresh process per "
                                         "run)"),
    cpu_jobs: int = typer.Option(4, "--cpu-jobs", min=1, help="Concurrent jobs on the cpu pool (its limit)"),
    port: int = typer.Option(4200, "--port", help="Prefect API/UI port on 127.0.0.1"),
    s3_port: int = typer.Option(8333, "--s3-port", help="S3 API port of the SeaweedFS store on 127.0.0.1"),
    checkout: Optional[Path] = typer.Option(None, "--checkout", help="Lipline source checkout the workers run "
                                                                     "[default: this installation]"),
    samples: bool = typer.Option(True, "--samples/--no-samples", help="Put small sample inputs in the store"),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="Also POST a JSON notice to this URL when a "
                                                                  "localize run completes or fails"),
) -> None:
    """Start Prefect server, a cpu worker, N gpu workers and a SeaweedFS S3 store; apply the deployments."""
    opts = stack.UpOptions(state_dir=_dir(state_dir), port=port, s3_port=s3_port, gpu_workers=gpu_workers,
                           cpu_jobs=cpu_jobs, checkout=str(checkout) if checkout else None, samples=samples,
                           gpu_backend=gpu_backend)
    state, started = stack.up(opts, say=lambda msg: err.print(msg, markup=False))
    out.print(f"stack {'up' if started else 'already up'} (state dir {state.dir})")
    if webhook:
        stack.add_webhook_automation(webhook, state.api_url)
        out.print(f"webhook       {webhook} (automation lipline-localize-webhook)")
    _summary(state)


@app.command()
def down(state_dir: Optional[Path] = STATE_DIR,
         timeout: float = typer.Option(20.0, "--timeout", help="Seconds per signal before the next one")) -> None:
    """Stop the workers (SIGINT, then SIGTERM/SIGKILL), then the server and the store. Data stays in the state dir."""
    folder = _dir(state_dir)
    if not stack.down(folder, timeout=timeout, say=lambda msg: out.print(msg, markup=False)):
        out.print(f"no stack in {folder} (nothing to stop)")
        return
    out.print("stack down")


@app.command()
def status(state_dir: Optional[Path] = STATE_DIR,
           as_json: bool = typer.Option(False, "--json", help="One JSON object")) -> None:
    """Each process alive or dead, the API's health and the pools' workers. Exit 1 unless all is up."""
    folder = _dir(state_dir)
    st = stack.status(folder)
    if st is None:
        if as_json:
            out.print(json.dumps({"state_dir": str(folder), "up": False}), markup=False)
        else:
            out.print(f"no stack in {folder} (lipline stack up starts one)")
        raise typer.Exit(1)
    if as_json:
        out.print(json.dumps({"state_dir": str(folder), "up": st.ok, "api_url": st.state.api_url,
                              "api_healthy": st.healthy, "processes": st.processes, "pools": st.pools,
                              "task_workers": st.task_workers, "gpu_backend": st.state.gpu_backend,
                              "store": st.state.store, "s3_endpoint": st.state.s3_endpoint,
                              "curl": st.state.curl}), markup=False)
    else:
        for p in st.state.processes:
            out.print(f"{p.name:14} pid {p.pid:<7} {'alive' if st.processes[p.name] else 'DEAD'}   log {p.log}")
        out.print(f"API           {st.state.api_url} {'healthy' if st.healthy else 'NOT ANSWERING'}")
        for pool, workers in st.pools.items():
            names = ", ".join(f"{w['name']} {w['status']}" for w in workers) or "no workers"
            out.print(f"pool {pool:8} {names}")
        serving = ", ".join(f"{w['identifier']} ({', '.join(k.rsplit('-', 1)[0] for k in w['task_keys'])})"
                            for w in st.task_workers) or "none connected"
        out.print(f"task workers  {serving}")
        out.print(f"store         {st.state.store} ({st.state.s3_endpoint})")
    if not st.ok:
        raise typer.Exit(1)


@app.command()
def webhook(url: str = typer.Argument(..., help="Where to POST the JSON notice"),
            api: Optional[str] = typer.Option(None, "--api", envvar="PREFECT_API_URL", help="Prefect API URL"),
            flow: str = typer.Option("localize", "--flow", help="Flow whose runs are watched"),
            state_dir: Optional[Path] = STATE_DIR) -> None:
    """A Prefect automation that POSTs to URL when a run of FLOW completes, fails or crashes."""
    api_url = api
    if api_url is None:
        state = stack.StackState.load(_dir(state_dir))
        api_url = state.api_url if state else None
    automation = stack.add_webhook_automation(url, api_url, flow=flow)
    out.print(f"automation {automation}: POST {url} when a {flow!r} run ends (Completed, Failed, Crashed)")


def deploy_command(
    api: Optional[str] = typer.Option(None, "--api", envvar="PREFECT_API_URL",
                                      help="Prefect API URL, e.g. http://prefect.internal:4200/api"),
    checkout: Optional[Path] = typer.Option(None, "--checkout", help="Lipline source checkout [default: this one]"),
    prefect_file: str = typer.Option("deployments/prefect.yaml", "--prefect-file"),
) -> None:
    """Apply deployments/prefect.yaml (`prefect deploy --all`) against a Prefect API; creates missing pools."""
    if not api:
        raise stack.StackError("no Prefect API: pass --api http://HOST:4200/api or set PREFECT_API_URL")
    if not stack.api_healthy(api):
        raise stack.StackError(f"the Prefect API at {api} does not answer /health: start the server or fix the URL")
    stack.ensure_pools(api, {**dict.fromkeys(stack.yaml_pools(checkout, prefect_file)), "cpu": None, "gpu": None})
    names = stack.deploy(api, checkout, prefect_file)
    out.print(f"deployed to {api}: {', '.join(names)}")
