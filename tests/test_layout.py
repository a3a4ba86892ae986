"""The layout shows what the Space needs: importing the app never imports timm or the training subpackage."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
sys.path.insert(0, {root!r})
import runpy
runpy.run_path({app!r}, run_name="not_main")   # app.py's imports, without launch()
import flowerdemo.cli, flowerdemo.serve.predict, flowerdemo.ui
loaded = sorted(m for m in sys.modules if m == "timm" or m.startswith(("timm.", "flowerdemo.training")))
print(json.dumps(loaded))
"""


def modules_loaded_by(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_app_never_imports_timm_or_the_trainer():
    assert modules_loaded_by(PROBE.format(root=str(ROOT), app=str(ROOT / "app.py"))) == []


def test_the_probe_sees_the_trainer_when_it_is_imported():
    # The same probe must be able to fail: importing the trainer is seen.
    code = PROBE.format(root=str(ROOT), app=str(ROOT / "app.py")).replace(
        "import flowerdemo.cli,", "import flowerdemo.training.train, flowerdemo.cli,")
    assert "flowerdemo.training.train" in modules_loaded_by(code)
