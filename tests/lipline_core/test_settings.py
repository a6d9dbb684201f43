"""Issue 16 item 6: every LIPLINE_* variable is read by one settings object, and every S3 access (store, input
downloads, the GPU hand-off's `publish`) honours the same endpoint and credentials settings."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
from pathlib import Path

import pytest
import s3fs

from lipline.errors import LiplineError
from lipline.settings import ENV_PREFIX, Settings, SettingsError, get_settings
from lipline.store import Store
from lipline.uris import local_path, publish

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("lipline", "flows", "tasks", "models", "bench")
ENV_READS = {"get", "setdefault", "pop", "__getitem__", "getenv", "__contains__"}


def lipline_env_reads(source: str) -> list[str]:
    """``os.environ`` / ``os.getenv`` reads of ``LIPLINE_*`` names in `source`: literal names, module constants
    and loop variables over literal tuples (``for name in ("LIPLINE_A", "LIPLINE_B")``)."""
    tree = ast.parse(source)
    names: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.For)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value if isinstance(node, ast.Assign) else node.iter
            consts = [c.value for c in ast.walk(value) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            for target in targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, []).extend(consts)

    def ours(arg: ast.AST) -> bool:
        values = [arg.value] if isinstance(arg, ast.Constant) else names.get(getattr(arg, "id", ""), [])
        return any(isinstance(v, str) and v.startswith(ENV_PREFIX) for v in values)

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (isinstance(node, ast.Name)
                                                                                and node.id == "environ")

    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ENV_READS and (is_environ(func.value)
                                                                               or func.attr == "getenv"):
                key = node.args[0]
            elif isinstance(func, ast.Name) and func.id == "getenv":
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            key = node.left
        if key is not None and ours(key):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("snippet", [
    'import os\nx = os.environ.get("LIPLINE_FFMPEG")',
    'import os\nif os.environ.get("LIPLINE_GIT_COMMIT"):\n    y = os.environ["LIPLINE_GIT_COMMIT"]',
    'from os import environ\nMASK_ENV = "LIPLINE_LATENTSYNC_MASK"\nv = environ.get(MASK_ENV) or None',
    'import os\nfor name in ("LIPLINE_WEIGHTS_DIR", "LIPLINE_WEIGHTS_CACHE"):\n    v = os.environ.get(name)',
    'import os\nv = os.getenv("LIPLINE_DEMO_DIR", "demo-media")',
    'import os\nok = "LIPLINE_STORE" in os.environ',
])
def test_the_scan_finds_each_way_the_old_code_read_lipline_variables(snippet):
    assert lipline_env_reads(snippet)


def test_the_scan_leaves_other_variables_alone():
    assert lipline_env_reads('import os\na = os.environ.get("HF_HOME")\nos.environ.setdefault("DO_NOT_TRACK", "1")\n'
                             '"""LIPLINE_FFMPEG in a docstring"""') == []


def source_files() -> list[Path]:
    """The committed Python sources (work in progress in the tree is not the project's yet)."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", *[f"{d}/*.py" for d in SOURCE_DIRS]],
                                capture_output=True, text=True, check=True).stdout.split()
        return [ROOT / name for name in listed if (ROOT / name).is_file()]
    return [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def test_no_lipline_variable_is_read_outside_settings():
    files = source_files()
    assert ROOT / "lipline" / "store.py" in files and ROOT / "models" / "latentsync" / "weights.py" in files
    offenders = {}
    for path in files:
        if path == ROOT / "lipline" / "settings.py":
            continue
        reads = lipline_env_reads(path.read_text(encoding="utf-8"))
        if reads:
            offenders[str(path.relative_to(ROOT))] = reads
    assert offenders == {}, f"read LIPLINE_* through lipline.settings.get_settings(), not os.environ: {offenders}"


def test_settings_are_read_now_not_once_per_process(monkeypatch):
    monkeypatch.setenv("LIPLINE_GPU_DEPLOYMENT", "first/gpu")
    assert get_settings().gpu_deployment == "first/gpu"
    monkeypatch.setenv("LIPLINE_GPU_DEPLOYMENT", "second/gpu")
    assert get_settings().gpu_deployment == "second/gpu"
    monkeypatch.delenv("LIPLINE_GPU_DEPLOYMENT")
    assert get_settings().gpu_deployment is None


@pytest.fixture
def lipline_env_file(tmp_path, monkeypatch):
    """A ``lipline.env`` in the current folder and no LIPLINE_* variable in the environment: whatever a consumer
    sees can only have come through `Settings`."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def write(**values: str) -> None:
        (tmp_path / "lipline.env").write_text("".join(f"{ENV_PREFIX}{k.upper()}={v}\n" for k, v in values.items()))

    return write


def test_ffmpeg_comes_from_the_settings(lipline_env_file, tmp_path):
    from lipline import media

    real = media.ffmpeg_exe()
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "my-ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    lipline_env_file(ffmpeg=str(wrapper))
    assert media.ffmpeg_exe() == str(wrapper)
    media.run_ffmpeg(["-f", "lavfi", "-i", "anullsrc", "-t", "0.1", "-f", "null", "-"], what="a null render")
    assert "anullsrc" in calls.read_text()
    (tmp_path / "lipline.env").unlink()
    assert media.ffmpeg_exe() == real


def test_git_commit_demo_dir_weights_and_mask_come_from_the_settings(lipline_env_file, tmp_path):
    from lipline import provenance
    from lipline.models.latentsync import weights

    mask = tmp_path / "mask.png"
    mask.write_bytes(b"not read here")
    lipline_env_file(git_commit="abc123-image", demo_dir=str(tmp_path / "demo"), weights_dir=str(tmp_path / "w"),
                     latentsync_mask=str(mask))
    assert provenance.lipline_version()["git_commit"] == "abc123-image"
    assert get_settings().demo_dir == tmp_path / "demo"
    assert weights.default_cache_dir() == tmp_path / "w"
    assert weights._find_mask("1.5", None, None) == mask


def test_the_older_weights_cache_name_still_works(monkeypatch, tmp_path):
    monkeypatch.delenv("LIPLINE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("LIPLINE_WEIGHTS_CACHE", "~/older-name")
    assert get_settings().weights_dir == Path("~/older-name").expanduser()
    monkeypatch.setenv("LIPLINE_WEIGHTS_DIR", str(tmp_path / "new"))
    assert get_settings().weights_dir == tmp_path / "new"  # the new name wins


def test_demo_uses_the_demo_dir_setting(monkeypatch, tmp_path):
    from lipline import demo

    class ChoseFolder(Exception):
        pass

    def stop_at_media(folder):  # stops right after choosing the folder: no media, no job
        raise ChoseFolder(folder)

    monkeypatch.setattr(demo, "make_demo_media", stop_at_media)
    monkeypatch.setenv("LIPLINE_DEMO_DIR", str(tmp_path / "samples"))
    with pytest.raises(ChoseFolder) as chosen:
        demo.main()
    assert chosen.value.args[0] == tmp_path / "samples"


# --- S3: one endpoint/credentials setting for the store, input downloads and publish -------------------------------


@pytest.fixture
def lipline_s3_only(s3_server, monkeypatch):
    """The S3 server's endpoint and credentials given ONLY as LIPLINE_S3_* (no AWS_* variable at all)."""
    for key in list(os.environ):
        if key.upper().startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no profile from the machine either
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("LIPLINE_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("LIPLINE_S3_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("LIPLINE_S3_SECRET_ACCESS_KEY", s3_server.secret_key)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_server
    s3fs.S3FileSystem.clear_instance_cache()


def direct_client(server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=server.access_key, secret=server.secret_key,
                             client_kwargs={"endpoint_url": server.endpoint}, skip_instance_cache=True)


def test_store_uses_the_lipline_s3_settings(lipline_s3_only, tmp_path):
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(50_000))
    store = Store.from_settings(f"s3://{lipline_s3_only.bucket}/settings-store")
    store.check_writable("job")
    rec = store.put_file(src, "job/final.mp4")
    store.put_json({"ok": 1}, "job/manifest.json")
    assert store.read_json("job/manifest.json") == {"ok": 1}
    assert direct_client(lipline_s3_only).cat(f"{lipline_s3_only.bucket}/settings-store/job/final.mp4") == src.read_bytes()
    assert rec.uri == f"s3://{lipline_s3_only.bucket}/settings-store/job/final.mp4"


def test_store_root_defaults_to_the_store_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPLINE_STORE", str(tmp_path / "from-env"))
    assert Store.from_settings().root == str(tmp_path / "from-env")
    assert Store.from_settings(str(tmp_path / "given")).root == str(tmp_path / "given")


def test_input_downloads_use_the_lipline_s3_settings(lipline_s3_only, tmp_path):
    data = os.urandom(30_000)
    direct_client(lipline_s3_only).pipe(f"{lipline_s3_only.bucket}/inputs/talk.mp4", data)
    got = local_path(f"s3://{lipline_s3_only.bucket}/inputs/talk.mp4", tmp_path / "work")
    assert got.read_bytes() == data


def test_publish_uses_the_lipline_s3_settings(lipline_s3_only, tmp_path):
    seg = tmp_path / "seg-000.mp4"
    seg.write_bytes(os.urandom(20_000))
    uri = f"s3://{lipline_s3_only.bucket}/handoff/job/seg-000.mp4"
    assert publish(seg, uri) == uri
    assert direct_client(lipline_s3_only).cat(f"{lipline_s3_only.bucket}/handoff/job/seg-000.mp4") == seg.read_bytes()


def test_lipline_s3_settings_win_over_the_aws_variables(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("LIPLINE_S3_ENDPOINT_URL", s3_env.endpoint)
    monkeypatch.setenv("LIPLINE_S3_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("LIPLINE_S3_SECRET_ACCESS_KEY", s3_env.secret_key)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        Store.from_settings(f"s3://{s3_env.bucket}/precedence").check_writable("job")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_s3_options_fall_back_to_the_aws_endpoint(monkeypatch):
    for key in ("LIPLINE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-endpoint:1")
    assert get_settings().s3_options()["client_kwargs"] == {"endpoint_url": "http://aws-endpoint:1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-endpoint:2")
    assert get_settings().s3_options()["client_kwargs"] == {"endpoint_url": "http://s3-endpoint:2"}
    monkeypatch.setenv("LIPLINE_S3_ENDPOINT_URL", "http://ours:3")
    monkeypatch.setenv("LIPLINE_S3_REGION", "eu-west-1")
    assert get_settings().s3_options()["client_kwargs"] == {"endpoint_url": "http://ours:3", "region_name": "eu-west-1"}


def test_half_given_s3_credentials_are_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPLINE_S3_ACCESS_KEY_ID", "only-the-key")
    monkeypatch.delenv("LIPLINE_S3_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(SettingsError, match="LIPLINE_S3_ACCESS_KEY_ID is set but LIPLINE_S3_SECRET_ACCESS_KEY is not"):
        Store.from_settings("s3://bucket/x")
    with pytest.raises(LiplineError) as err:
        local_path("s3://bucket/talk.mp4", tmp_path)
    assert "\n" not in str(err.value)


def test_the_secret_never_shows_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("LIPLINE_S3_SECRET_ACCESS_KEY", "very-secret-value")
    assert "very-secret-value" not in repr(Settings()) and "very-secret-value" not in str(get_settings())


def test_the_readme_settings_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for name, field in Settings.model_fields.items():
        env_names = (field.validation_alias.choices if field.validation_alias is not None
                     else [f"{ENV_PREFIX}{name.upper()}"])
        for env in env_names:
            assert f"`{env}`" in section, f"{env} is missing from the README's Settings table"
