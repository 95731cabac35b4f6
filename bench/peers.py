"""Run one job on each peer and return its timeline: when each round ended, and the accuracy.

fedkube runs as users run it (`fedkube run job.yaml`), each round timed by the end the aggregator
stamps on its metrics.json entry (the file, rewritten after each round, is watched for the CPU
readings); Flower runs through bench/flower_peer.py in its own venv, its server stamping each round's
end as it records it. Timelines use the wall clock of this one machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, python_for, run_json, trainer_env
from bench.cpu import RoundCpu
from bench.workload import manifest


@dataclass(frozen=True)
class Timeline:
    started: float
    rounds: list[tuple[int, float, float | None]]  # (round, wall time it ended, accuracy)
    history: tuple[dict[str, Any], ...] = ()  # fedkube's metrics.json entries
    aggregator_peak_rss: int = 0  # fedkube's aggregator process, sampled while it ran
    cpu_per_round: float | None = None  # CPU seconds of every process of the run, after round 1 (bench.cpu)

    def startup(self) -> float:
        """Seconds from launch to the end of round 1: imports, connections and the first round."""
        return self.rounds[0][1] - self.started

    def per_round(self) -> float:
        """Mean seconds per round after round 1 (start-up excluded): from round 1's end to the last's."""
        ends = [t for r, t, _ in self.rounds if r >= 1]
        return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else float("nan")

    def time_to(self, accuracy: float) -> tuple[int, float] | None:
        """(round, seconds since launch) of the first round whose global model reaches `accuracy`."""
        for r, t, a in self.rounds:
            if r >= 1 and a is not None and a >= accuracy:
                return r, t - self.started
        return None


# As often as bench/flower_peer.py watches Flower: each watcher (a CPU snapshot of the process tree is about
# 1 ms) takes the same share of the cores from the peer it watches. Rounds are timed by their stamps.
POLL_SECONDS = 0.05


def run_fedkube(task: str, clients: int, rounds: int, timeout: float, config: dict[str, Any] | None = None,
                spec: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Timeline:
    with tempfile.TemporaryDirectory(prefix="fedkube-bench-") as tmp:
        job, out = Path(tmp) / "job.yaml", Path(tmp) / "run"
        job.write_text(yaml.safe_dump(manifest(f"bench-{task}", task, clients, rounds, config, spec), sort_keys=False))
        started = time.time()
        log = Path(tmp) / "launcher.log"
        with log.open("wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "fedkube.cli", "run", str(job), "--output-dir", str(out)],
                                       stdout=sink, stderr=subprocess.STDOUT, env=trainer_env(**(env or {})), cwd=ROOT)
        deadline = time.monotonic() + timeout
        metrics, peak, seen, polls, cpu = out / "metrics.json", 0, 0, 0, RoundCpu()
        while process.poll() is None and time.monotonic() < deadline:
            history = _read(metrics)
            if len(history) > seen:  # a round ended since the last look: a CPU reading for it
                seen = len(history)
                cpu.round_ended(history[-1]["round"])
            if polls % 2 == 0:  # psutil's walk of the process tree costs more than reading metrics.json
                peak = max(peak, _aggregator_rss(process.pid))
            polls += 1
            time.sleep(POLL_SECONDS)
        if process.poll() is None:
            process.kill()
            raise TimeoutError(f"fedkube did not finish {rounds} rounds within {timeout:g}s")
        if process.returncode != 0:
            raise RuntimeError(f"fedkube run failed:\n{log.read_text()[-3000:]}")
        history = _read(metrics)
        ends = [(h["round"], h["ended"], h.get("accuracy")) for h in history]  # the aggregator's own stamps
        return Timeline(started, ends, tuple(history), peak, cpu.per_round())


def _aggregator_rss(launcher: int) -> int:
    import psutil

    try:
        return max((c.memory_info().rss for c in psutil.Process(launcher).children(recursive=True)
                    if c.name() == "aggregator" or "aggregator" in c.cmdline()), default=0)
    except psutil.Error:
        return 0


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        history: list[dict[str, Any]] = json.loads(path.read_text())
        return history
    except (OSError, ValueError):
        return []


def run_flower(mode: str, task: str, clients: int, rounds: int, timeout: float) -> Timeline:
    with tempfile.TemporaryDirectory(prefix="flower-bench-") as tmp:
        doc = run_json([python_for("flower"), "-m", "bench.flower_peer", mode, "--task", task, "--clients",
                        str(clients), "--rounds", str(rounds), "--workdir", tmp, "--timeout", str(timeout)],
                       timeout=timeout + 120)
    return Timeline(doc["started"], [tuple(r) for r in doc["rounds"]], cpu_per_round=doc.get("cpu_per_round"))


def failure(exc: Exception) -> str:
    """A peer's failed run as one table cell: the last line of its error that names a cause."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Flower colours its log lines
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__).replace("|", "/")[:160]


PEERS = {"fedkube": lambda *a: run_fedkube(*a),
         "flower (long-running clients)": lambda *a: run_flower("legacy", *a),
         "flower (default: process per message)": lambda *a: run_flower("deployment", *a)}
