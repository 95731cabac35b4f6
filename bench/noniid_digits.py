"""FedAvg, FedProx and SCAFFOLD on strongly non-IID digits: rounds to 90% test accuracy.

Runs the three `examples/digits-noniid-*.yaml` manifests exactly as a user would (`fedkube run`:
a real aggregator and 8 client processes each), reads each run's metrics.json, prints the
comparison, rewrites the README table between its markers and publishes the result to
BENCHMARKS.md. The manifests differ only in `spec.strategy`.

    python -m bench.noniid_digits [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Report

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("fedavg", "fedprox", "scaffold")
TARGET = 0.9
START, END = "<!-- noniid-digits:start -->", "<!-- noniid-digits:end -->"


def manifest(strategy: str) -> Path:
    return ROOT / "examples" / f"digits-noniid-{strategy}.yaml"


def rounds_to(history: list[dict[str, Any]], target: float) -> int | None:
    """The first round whose global model reached `target` test accuracy, if any did."""
    return next((h["round"] for h in history if (h.get("accuracy") or 0) >= target), None)


def run(strategy: str, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(manifest(strategy)),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{strategy} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    history = json.loads((out / "metrics.json").read_text())
    return {"strategy": strategy, "rounds_to_target": rounds_to(history, TARGET),
            "best": max(h["accuracy"] or 0 for h in history), "final": history[-1]["accuracy"],
            "rounds": len(history), "seconds": round(time.monotonic() - started, 1)}


def report(results: list[dict[str, Any]]) -> Report:
    rounds = results[0]["rounds"]
    out = Report("Non-IID digits (Dirichlet 0.1, 8 clients): rounds to 90%",
                 ["strategy", f"rounds to {TARGET:.0%}", "best accuracy", f"final accuracy (round {rounds})",
                  "seconds"])
    for r in results:
        reached = r["rounds_to_target"] if r["rounds_to_target"] is not None else f"not in {r['rounds']}"
        out.add(r["strategy"], reached, f"{r['best']:.3f}", f"{r['final']:.3f}", r["seconds"])
    out.notes.append("`python -m bench.noniid_digits`: the three examples/digits-noniid-*.yaml, run with "
                     "`fedkube run`, differing only in spec.strategy.")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave README.md and BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(s, Path(tmp) / s) for s in STRATEGIES]
    report(results).record(not args.no_write, readme=(START, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
