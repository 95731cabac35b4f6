"""Accuracy against epsilon: the README's utility table, measured by running real private jobs.

Each row is one `fedkube run` of a digits example (real aggregator and client processes over
gRPC) with one privacy setting; the table gives the epsilon the accountant reports at the end
and the final test accuracy. The peer row is the same job without privacy. The table replaces
the one between the README's `privacy-utility` markers and is appended to BENCHMARKS.md.

    python -m bench.privacy_utility [--rounds 10] [--no-record]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bench.common import ROOT, Report
from fedkube.launcher import run_local
from fedkube.spec import parse_manifest

START, END = "<!-- privacy-utility:start -->", "<!-- privacy-utility:end -->"
SAMPLE = ROOT / "examples" / "digits-private.yaml"
CLIENT = ROOT / "examples" / "digits-fedavg.yaml"
# (label, example, privacy or None): sample level on the private example, client level on the
# 8-client FedAvg example, each against the same example without privacy.
SETTINGS: list[tuple[str, Path, dict[str, Any] | None]] = [
    ("none", SAMPLE, None),
    ("sample, sigma 0.8, C 1", SAMPLE, {"level": "sample", "noiseMultiplier": 0.8, "clippingNorm": 1.0}),
    ("sample, sigma 1.5, C 1", SAMPLE, {"level": "sample", "noiseMultiplier": 1.5, "clippingNorm": 1.0}),
    ("none", CLIENT, None),
    ("client, central, sigma 0.05, C 1", CLIENT, {"noiseMultiplier": 0.05, "clippingNorm": 1.0}),
    ("client, central, sigma 0.2, C 1, adaptive", CLIENT,
     {"noiseMultiplier": 0.2, "clippingNorm": 1.0, "adaptiveClipping": {"targetQuantile": 0.5}}),
]


def run_one(example: Path, privacy: dict[str, Any] | None, rounds: int, workdir: Path) -> dict[str, Any]:
    doc = yaml.safe_load(example.read_text())
    doc = copy.deepcopy(doc)
    doc["spec"]["rounds"] = rounds
    doc["spec"].pop("privacy", None)
    if privacy is not None:
        doc["spec"]["privacy"] = privacy
    job = parse_manifest(doc)
    run_dir = workdir / f"{job.name}-{len(list(workdir.iterdir()))}"
    started = time.monotonic()
    code = run_local(job, run_dir, console=Console(quiet=True))
    status = json.loads((run_dir / "status.json").read_text())
    if code != 0:
        raise RuntimeError(f"{example.name} with privacy {privacy} failed: {status.get('message')}")
    return {"accuracy": status["metrics"]["accuracy"], "epsilon": (status.get("privacy") or {}).get("epsilon"),
            "rounds": len(status["history"]), "seconds": time.monotonic() - started}


def report(rows: list[tuple[str, Path, dict[str, Any]]], rounds: int) -> Report:
    out = Report(f"Privacy utility ({rounds} rounds)",
                 ["example", "privacy", "rounds", "epsilon (delta 1e-5)", "test accuracy"])
    for label, example, result in rows:
        epsilon = "-" if result["epsilon"] is None else f"{result['epsilon']:.3g}"
        out.add(f"`{example.name}`", label, result["rounds"], epsilon, f"{result['accuracy']:.3f}")
    out.notes.append("`python -m bench.privacy_utility`: one `fedkube run` per row; epsilon is what the "
                     "accountant reports at the end.")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="print the table only")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, example, privacy in SETTINGS:
            result = run_one(example, privacy, args.rounds, Path(tmp))
            print(f"{example.name:24} {label:42} eps={result['epsilon']} acc={result['accuracy']:.4f} "
                  f"({result['seconds']:.0f}s)", flush=True)
            rows.append((label, example, result))
    report(rows, args.rounds).record(not args.no_record, readme=(START, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
