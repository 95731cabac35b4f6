"""FedAvg, FedProx and SCAFFOLD on strongly non-IID digits: rounds to 90% test accuracy.

Runs the three `examples/digits-noniid-*.yaml` manifests exactly as a user would (`fedkube run`:
a real aggregator and 8 client processes each), reads each run's metrics.json, prints the
comparison, rewrites the README table between its markers and appends the result to
BENCHMARKS.md. The manifests differ only in `spec.strategy`.

    python bench/noniid_digits.py [--no-write]
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


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"| strategy | rounds to {TARGET:.0%} | best accuracy | final accuracy (round {results[0]['rounds']}) |",
             "|---|---|---|---|"]
    for r in results:
        reached = r["rounds_to_target"] if r["rounds_to_target"] is not None else f"not in {r['rounds']}"
        lines.append(f"| {r['strategy']} | {reached} | {r['best']:.3f} | {r['final']:.3f} |")
    return "\n".join(lines) + "\n"


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave README.md and BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(s, Path(tmp) / s) for s in STRATEGIES]
    text = table(results)
    print(text, end="")
    if not args.no_write:
        write_readme(text)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with (ROOT / "BENCHMARKS.md").open("a") as log:
            log.write(f"\n### Non-IID digits (Dirichlet 0.1, 8 clients), {when}\n\n"
                      f"`python bench/noniid_digits.py`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
