"""The shipped examples, run exactly as a user would: `fedkube run FILE`, to their target accuracy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("example, target", [
    ("digits-fedavg.yaml", 0.95),          # the `make demo` job
    ("medical-breast-cancer.yaml", 0.93),  # four hospitals
])
def test_example_reaches_its_accuracy(tmp_path, example, target):
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(ROOT / "examples" / example),
                           "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert history[-1]["accuracy"] >= target, [h["accuracy"] for h in history]
    assert "succeeded" in done.stdout and "final test accuracy" in done.stdout
