"""CKKS overhead: the same digits job with plain FedAvg, SecAgg+ and CKKS, side by side.

Each job runs as real `fedkube run` processes (mTLS on) with the same seed, data and rounds.
Measured from metrics.json: the median round time (rounds after the first, which includes the
clients' start-up), the bytes on the wire per round in each direction, and the final model's
test accuracy (for CKKS, the final model decrypted with the job's key, which only the clients
and this launcher hold). Ratios are against plain FedAvg in the same run.

    python -m bench.he [--clients 8] [--rounds 5] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.common import MB, ROOT, Report, machine_facts, trainer_env

MODES: dict[str, dict[str, Any]] = {
    "plain FedAvg": {"mode": "none"},
    "SecAgg+": {"mode": "secagg+", "clipRange": 1.0, "bits": 32},
    "CKKS (N=8192)": {"mode": "ckks"},
}


def manifest(name: str, clients: int, rounds: int, secure: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": name},
            "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"},
                     "data": {"partitions": clients, "partitioner": {"kind": "dirichlet", "alpha": 0.5}},
                     "rounds": rounds,
                     "clients": {"minAvailable": clients, "localEpochs": 1, "roundTimeoutSeconds": 300,
                                 "joinTimeoutSeconds": 300, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
                     "secureAggregation": secure}}


def final_accuracy(run_dir: Path, doc: dict[str, Any], history: list[dict[str, Any]]) -> float | None:
    if doc["spec"]["secureAggregation"]["mode"] != "ckks":
        return history[-1]["accuracy"]
    from fedkube.he.session import decrypted_final_model, evaluate_model
    from fedkube.spec import parse_manifest
    from fedkube.stores import open_store

    weights = decrypted_final_model(open_store(f"file://{run_dir}/checkpoints"), run_dir / "keys" / "ckks-secret.ctx")
    return evaluate_model(parse_manifest(doc).spec.task, weights).get("accuracy")


def run(doc: dict[str, Any], workdir: Path) -> dict[str, float | None]:
    path = workdir / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_dir = workdir / doc["metadata"]["name"]
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(path), "--output-dir", str(run_dir)],
                          env=trainer_env(), cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{doc['metadata']['name']} failed:\n{done.stdout[-3000:]}")
    history = json.loads((run_dir / "metrics.json").read_text())
    later = history[1:] or history
    return {"seconds": statistics.median(h["seconds"] for h in later),
            "mb_in": statistics.median(h["bytes_in"] for h in later) / MB,
            "mb_out": statistics.median(h["bytes_out"] for h in later) / MB,
            "accuracy": final_accuracy(run_dir, doc, history)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    report = Report(f"Homomorphic encryption: digits, {args.clients} clients, {args.rounds} rounds, mTLS",
                    ["aggregation", "round (s)", "x plain", "MB in / round", "x plain", "MB out / round",
                     "x plain", "final accuracy"])
    results = {}
    with tempfile.TemporaryDirectory(prefix="fedkube-bench-he-") as tmp:
        for label, secure in MODES.items():
            name = "he-" + secure["mode"].replace("+", "plus")
            results[label] = run(manifest(name, args.clients, args.rounds, secure), Path(tmp))
    base = results["plain FedAvg"]
    for label, r in results.items():
        report.add(label, r["seconds"], r["seconds"] / base["seconds"], r["mb_in"], r["mb_in"] / base["mb_in"],
                   r["mb_out"], r["mb_out"] / base["mb_out"], r["accuracy"])
    report.notes += [
        "CKKS: each client sends its example-weighted model as packed ciphertexts (4,096 values each); the "
        "aggregator adds them with a parameters-only context and sends the encrypted sum back, which clients "
        "decrypt. Time goes to encryption, decryption and ciphertext expansion on the wire.",
        "SecAgg+: masked fixed-point vectors plus the key-agreement and unmasking messages.",
    ]
    if args.no_record:
        print(report.markdown(machine_facts()))
    else:
        report.publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
