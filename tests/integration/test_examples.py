"""The shipped examples, run exactly as a user would: `fedkube run FILE`, to their targets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(example: str, out: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(ROOT / "examples" / example),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "final test accuracy" in done.stdout
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("example, target", [
    ("digits-fedavg.yaml", 0.95),          # the `make demo` job
    ("medical-breast-cancer.yaml", 0.93),  # four hospitals
    ("finance-credit-risk.yaml", 0.93),    # five banks, synthetic borrowers, int8 updates
])
def test_example_reaches_its_accuracy(tmp_path, example, target):
    history = run_example(example, tmp_path / "run")
    assert history[-1]["accuracy"] >= target, [h["accuracy"] for h in history]


def test_traffic_forecast_beats_yesterdays_counts_by_half(tmp_path):
    history = run_example("traffic-flow.yaml", tmp_path / "run")
    last = history[-1]
    assert last["accuracy"] is None and last["mae"] <= 0.5 * last["naive_mae"], [
        (h["mae"], h["naive_mae"]) for h in history]
