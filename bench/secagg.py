"""SecAgg+ overhead: round time with and without secure aggregation, and client masking throughput.

1. Rounds: the same job (16 clients, a 1,001,000-parameter linear model, one local step on a
   few random rows, mTLS) run by real `fedkube` processes, plain FedAvg and SecAgg+ (on the
   complete graph and on the default O(log n) one) in turn
   (`--pairs` times each, alternating so both see the same background load); the median round
   time of each, and their ratio (target: at most 1.5x).
2. Masking: one client's work to turn its trained update into the vector it sends, over the
   same 1M-parameter update with 15 neighbours: fedkube (self mask and pairwise masks by
   AES-256 in counter mode, which a client expands while it trains, then the fixed-point update added to them)
   against Flower's SecAgg+ client stage (`_collect_masked_vectors` of
   `flwr.client.mod.secaggplus_mod`, numpy's seeded RandomState as its PRG), in MB/s of float32
   update. Flower runs in its own venv (`bench.common.FLOWER_PYTHON`).

Run `python -m bench.secagg [--clients 16] [--rounds 6]`; results are printed and published to
BENCHMARKS.md (bench.common.Report).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from bench.common import FLOWER_PYTHON, Report, trainer_env
from bench.cpu import RoundCpu
from fedkube.secure import default_neighbours

WIDTH = 1000  # Linear(1000, 1000): 1,001,000 parameters


def task(config: dict[str, Any]) -> Any:
    """The bench job's task (imported by the aggregator and client processes as `bench.secagg:task`)."""
    from fedkube.tasks.base import ClassificationTask

    class OneMillion(ClassificationTask):
        name = "one-million"

        def build_model(self) -> torch.nn.Module:
            return torch.nn.Linear(WIDTH, WIDTH)

        def load_partition(self, partition: int, num_partitions: int, partitioner: Any) -> Dataset[Any]:
            g = torch.Generator().manual_seed(partition)
            return TensorDataset(torch.randn(16, WIDTH, generator=g) * 0.01,
                                 torch.randint(0, WIDTH, (16,), generator=g))

    return OneMillion()


def job_manifest(name: str, clients: int, rounds: int, secure: bool, neighbours: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"entrypoint": "bench.secagg:task"},
        "data": {"partitions": clients},
        "rounds": rounds,
        "clients": {"minAvailable": clients, "localEpochs": 1, "batchSize": 16, "roundTimeoutSeconds": 300,
                    "joinTimeoutSeconds": 300, "optimizer": {"name": "sgd", "lr": 0.01}},
        "checkpoint": {"everyRounds": rounds},
    }
    if secure:
        spec["secureAggregation"] = {"mode": "secagg+", **({"neighbours": neighbours} if neighbours else {})}
    return {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": name}, "spec": spec}


def run_job(doc: dict[str, Any], workdir: Path) -> tuple[list[float], float | None]:
    """Seconds of every round but the first (which includes the clients' start-up), and CPU seconds a round of
    every process of the job over the same rounds (bench.cpu: far less noisy on a busy machine), via `fedkube run`.
    """
    import yaml

    path = workdir / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_dir, log = workdir / doc["metadata"]["name"], workdir / f"{doc['metadata']['name']}.log"
    metrics, cpu, seen = run_dir / "metrics.json", RoundCpu(), 0
    deadline = time.monotonic() + 1800
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "fedkube.cli", "run", str(path), "--output-dir",
                                    str(run_dir)], env=trainer_env(), stdout=sink, stderr=subprocess.STDOUT)
    while process.poll() is None and time.monotonic() < deadline:
        try:
            history = json.loads(metrics.read_text())
        except (OSError, ValueError):  # not written yet
            history = []
        if len(history) > seen:
            cpu.round_ended(history[-1]["round"])
            seen = len(history)
        time.sleep(0.01)
    if process.poll() is None:
        process.kill()
    if process.wait() != 0:
        raise RuntimeError(f"{doc['metadata']['name']} failed:\n{log.read_text()[-3000:]}")
    history = json.loads(metrics.read_text())
    if any(h["status"] != "completed" for h in history):
        raise RuntimeError(f"{doc['metadata']['name']}: a round did not complete: {history}")
    return [h["seconds"] for h in history[1:]], cpu.per_round()


def fedkube_masking(clients: int, repeats: int) -> float:
    """Seconds for one client to turn a 1M-parameter update into its masked vector (15 neighbours)."""
    from fedkube.secure import default_bits
    from fedkube.secure.ring import Ring
    from fedkube.secure.secagg import ClientSession, RoundSetup

    ring = Ring(default_bits(clients), 1.0, clients)
    update = np.random.default_rng(0).normal(0, 0.01, WIDTH * WIDTH + WIDTH).astype(np.float32)
    setup = RoundSetup("bench", 1, "n", tuple(range(clients)), None, 0, clients // 2 + 1, ring, update.size + 1)
    sessions = [ClientSession(setup, p) for p in range(clients)]
    keys = {p: s.advert() for p, s in enumerate(sessions)}
    outbox = {p: s.share(keys) for p, s in enumerate(sessions)}
    me = sessions[0]
    me.receive({q: outbox[q][0] for q in range(1, clients)})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ring.encode(update, 16, into=me.mask_vector())  # a client expands the mask while it trains
        times.append(time.perf_counter() - started)
    return statistics.median(times)


FLOWER_MASKING = textwrap.dedent("""
    import statistics, sys, time
    import numpy as np
    from flwr.common import ConfigRecord, ndarrays_to_parameters
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        SecAggPlusState, _collect_masked_vectors, _setup, _share_keys)
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    clients, repeats, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    setup = {Key.SAMPLE_NUMBER: clients, Key.SHARE_NUMBER: clients, Key.THRESHOLD: clients // 2 + 1,
             Key.CLIPPING_RANGE: 1.0, Key.TARGET_RANGE: 1 << 22, Key.MOD_RANGE: 1 << 32, Key.MAX_WEIGHT: 1000.0}
    states = [SecAggPlusState(current_stage="setup", nid=p) for p in range(clients)]
    keys = {p: _setup(s, ConfigRecord(setup)) for p, s in enumerate(states)}
    public = ConfigRecord({str(p): [k[Key.PUBLIC_KEY_1], k[Key.PUBLIC_KEY_2]] for p, k in keys.items()})
    shared = {p: _share_keys(s, public) for p, s in enumerate(states)}
    me = states[0]
    srcs = [p for p in range(1, clients)]
    cts = [shared[p][Key.CIPHERTEXT_LIST][shared[p][Key.DESTINATION_LIST].index(0)] for p in srcs]
    update = [np.random.default_rng(0).normal(0, 0.01, size).astype(np.float32)]
    times = []
    for _ in range(repeats):
        state = SecAggPlusState(**me.to_dict())
        started = time.perf_counter()
        _collect_masked_vectors(state, ConfigRecord({Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: srcs}), 16,
                                ndarrays_to_parameters(update))
        times.append(time.perf_counter() - started)
    import flwr
    print(flwr.__version__, statistics.median(times))
""")


def flower_masking(clients: int, repeats: int) -> tuple[str, float] | None:
    if not FLOWER_PYTHON.exists():
        print(f"Flower's venv not found at {FLOWER_PYTHON}; set FEDKUBE_BENCH_FLOWER_PYTHON", file=sys.stderr)
        return None
    done = subprocess.run([str(FLOWER_PYTHON), "-c", FLOWER_MASKING, str(clients), str(repeats),
                           str(WIDTH * WIDTH + WIDTH)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"Flower's masking failed:\n{done.stderr[-3000:]}")
    version, seconds = done.stdout.split()[-2:]
    return version, float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="rounds a job; 2.. are timed (1 includes start-up)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=2, help="plain/SecAgg+ job pairs, run alternately")
    parser.add_argument("--skip-rounds", action="store_true", help="only the masking comparison")
    args = parser.parse_args()
    mb = (WIDTH * WIDTH + WIDTH) * 4 / 1e6
    report = Report(f"SecAgg+ overhead: {args.clients} clients, 1,001,000 parameters (`python -m bench.secagg`)",
                    ["measurement", "fedkube SecAgg+", "peer", "peer's", "fedkube / peer"])
    if not args.skip_rounds:
        k = default_neighbours(args.clients)
        jobs = {"plain FedAvg": (False, None), "complete graph": (True, args.clients - 1),
                f"default graph: {k} neighbours (SecAgg+'s O(log n))": (True, None)}  # (secure, neighbours)
        runs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in jobs}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.pairs):
                for n, (name, (secure, neighbours)) in enumerate(jobs.items()):
                    times, cpu = run_job(job_manifest(f"bench-{n}-{i}", args.clients, args.rounds, secure, neighbours),
                                         Path(tmp))
                    runs[name][0].extend(times)
                    runs[name][1].extend([] if cpu is None else [cpu])
        p, p_cpu = (statistics.median(x) if x else math.nan for x in runs.pop("plain FedAvg"))
        for graph, (times, cpus) in runs.items():
            s, s_cpu = statistics.median(times), statistics.median(cpus) if cpus else math.nan
            report.add(f"round time (s), {graph}, mTLS", s, "plain FedAvg", p, f"{s / p:.2f}x")
            report.add(f"CPU s a round, all processes, {graph}", s_cpu, "plain FedAvg", p_cpu, f"{s_cpu / p_cpu:.2f}x")
            report.notes.append(f"Round time, {graph}: {args.clients} client processes, median of rounds "
                                f"2..{args.rounds} of {args.pairs} alternating job runs (CPU: user + system seconds "
                                f"of every process from round 1's end to the last's, per round, from /proc). Target "
                                f"at most 1.5x plain FedAvg: {'met' if s / p <= 1.5 else 'MISSED'}.")
    ours = fedkube_masking(args.clients, args.repeats)
    theirs = flower_masking(args.clients, args.repeats)
    what = f"client masking (MB/s of a {mb:.1f} MB float32 update, {args.clients - 1} neighbours)"
    if theirs is None:
        report.add(what, mb / ours, "Flower (not installed)", None, None)
    else:
        version, seconds = theirs
        report.add(what, mb / ours, f"Flower {version} `_collect_masked_vectors`", mb / seconds,
                   f"{seconds / ours:.1f}x faster")
        report.notes.append(f"Masking: median of {args.repeats}, {ours:.3f} s against {seconds:.3f} s; fedkube "
                            "expands masks with AES-256-CTR, Flower with numpy's seeded RandomState. Target "
                            f"faster than Flower's: {'met' if ours < seconds else 'MISSED'}.")
    report.publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
