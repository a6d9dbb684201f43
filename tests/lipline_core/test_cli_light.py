"""The CLI stays light: `lipline engines` and `lipline validate` work without importing torch (an operator's
laptop has no GPU stack to wait for), each checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers")

SCRIPT = """
import json, sys
from typer.testing import CliRunner
from lipline.cli import app
runner = CliRunner()
codes = {{}}
for name, args in {commands!r}.items():
    result = runner.invoke(app, args)
    codes[name] = [result.exit_code, result.output]
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def run_fresh(commands: dict[str, list[str]]) -> dict:
    script = SCRIPT.format(commands=commands, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_import_and_validation_load_no_torch(media):
    result = run_fresh({
        "audio": ["validate", str(media.dub), "--role", "audio", "--json"],
        "video": ["validate", str(media.video), "--role", "video", "--json"],
        "subtitles": ["validate", str(media.subtitles), "--role", "subtitles", "--json"],
    })
    for name, (code, output) in result["codes"].items():
        assert code == 0, (name, output)
        assert json.loads(output)["verdict"] in ("pass", "warn"), output
    assert result["heavy"] == [], f"validation imported {result['heavy']}"


def test_lipline_engines_lists_the_registry_without_torch():
    from lipline.models.registry import engine_specs

    result = run_fresh({"engines": ["engines"]})
    code, output = result["codes"]["engines"]
    assert code == 0, output
    lines = output.strip().splitlines()
    specs = engine_specs()
    assert len(lines) == len(specs) and {"passthrough", "latentsync"} <= {s.name for s in specs}
    for line, spec in zip(lines, specs):
        assert line.split()[:2] == [spec.name, spec.kind] and line.endswith(spec.summary)
    assert "dry run" in next(line for line in lines if line.startswith("passthrough"))
    assert result["heavy"] == [], f"`lipline engines` imported {result['heavy']}"
