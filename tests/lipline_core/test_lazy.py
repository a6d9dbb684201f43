"""lipline/lazy.py: attributes built on first use, and imports warmed in the background."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from lipline.flows.localize import LATER_STAGE_IMPORTS


def test_import_in_background_loads_the_modules_and_skips_one_that_fails():
    code = ("import json, sys; from lipline.lazy import import_in_background;"
            "before = [m for m in ('colorsys', 'wave') if m in sys.modules];"
            "t = import_in_background(['colorsys', 'no_such_module_here', 'wave']); t.join(60);"
            "print(json.dumps({'before': before, 'after': [m for m in ('colorsys', 'wave') if m in sys.modules],"
            " 'daemon': t.daemon, 'alive': t.is_alive()}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"before": [], "after": ["colorsys", "wave"], "daemon": True,
                                                         "alive": False}


def test_the_flows_warm_up_names_modules_that_exist():
    """A misspelt name would be skipped silently by the warm-up (and the import paid later again)."""
    for name in LATER_STAGE_IMPORTS:
        assert importlib.util.find_spec(name) is not None, name
