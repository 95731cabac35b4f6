"""Per-round orchestration overhead: a model that does no work, fedkube against Flower.

Each peer runs the same job (every client in every round, FedAvg, no evaluation) as its users
would start it, and the round time is the mean time per round after the first round ends, so process
start-up is reported apart. Flower runs in its default configuration (a
ClientApp process per message) and with long-running client processes.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import Report
from bench.peers import PEERS, failure, run_fedkube

TARGETS = {"flower (default: process per message)": 20, "flower (long-running clients)": 3}
# Flower runs `--insecure`; fedkube's default is mutual TLS, so fedkube runs both ways and the
# like-for-like ratio (both in clear text) is the one the target is judged on.
PLAINTEXT = "fedkube (transport.tls: false)"
LAUNCHERS = {PLAINTEXT: lambda *a: run_fedkube(*a, spec={"transport": {"tls": False}}),
             "fedkube": PEERS["fedkube"],
             **{k: v for k, v in PEERS.items() if k != "fedkube"}}


def run(clients_list: list[int], rounds: int, default_rounds: int, default_clients: list[int]) -> Report:
    report = Report("Per-round overhead, near-zero-work model",
                    ["clients", "peer", "rounds", "s / round", "CPU s / round", "start-up s", "peer / fedkube clear",
                     "CPU peer / fedkube clear", "peer / fedkube mTLS", "target"])
    for clients in clients_list:
        timed: dict[str, tuple[float, float | None]] = {}
        for peer, launch in LAUNCHERS.items():
            if peer.startswith("flower (default") and clients not in default_clients:
                report.add(clients, peer, 0, None, None, None, None, None, None, "not run in this profile")
                continue
            n = default_rounds if peer.startswith("flower (default") else rounds
            try:
                timeline = launch("tiny", clients, n, 1800.0)
            except (RuntimeError, TimeoutError) as exc:
                if peer.startswith("fedkube"):
                    raise
                report.add(clients, peer, n, None, None, None, None, None, None, f"did not finish: {failure(exc)}")
                continue
            wall, cpu = timed[peer] = timeline.per_round(), timeline.cpu_per_round
            first = next(t for r, t, _ in timeline.rounds if r >= 1) - timeline.started
            clear, mtls = timed.get(PLAINTEXT), timed.get("fedkube")
            ratio = None if clear is None else wall / clear[0]
            cpu_ratio = None if clear is None or cpu is None or not clear[1] else cpu / clear[1]
            target = TARGETS.get(peer)
            verdict = ("" if target is None or ratio is None
                       else f">= {target}x: {'met' if ratio >= target else 'MISSED'}")
            report.add(clients, peer, n, wall, cpu, first, ratio, cpu_ratio,
                       None if mtls is None else wall / mtls[0], verdict)
    report.notes += [
        "s / round: mean time per round from the end of round 1 to the end of the last (FedAvg over every client, "
        "no evaluation, no checkpoint until the last round); start-up: launch to the end of round 1.",
        "CPU s / round: user + system CPU seconds of every process of the run (fedkube: launcher, aggregator and "
        "clients; Flower: server or SuperLink, clients or SuperNodes and their app processes) over the same rounds, "
        "read from /proc when each round's end is seen; far less noisy than wall time on a busy machine.",
        "Target (issue #13): fedkube's round overhead <= 1/20 of Flower's default and <= 1/3 of Flower's "
        "long-running configuration, i.e. peer / fedkube >= 20 and >= 3, judged like for like: against fedkube "
        "with `transport.tls: false`, since Flower runs `--insecure`.",
        "fedkube runs with its defaults (mutual TLS) and in clear text; Flower with `--insecure`. Flower's default "
        "mode starts a SuperLink and one SuperNode per client and submits the run with `flwr run` once every "
        "SuperNode has registered; its per-message ClientApp processes import numpy only (bench/flower_app), "
        "not torch.",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    # Rounds are timed by the stamps each peer's server puts on them; the CPU readings come from watching the
    # processes every 50 ms (bench/peers.py), which 40 rounds of a few milliseconds span several times.
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--default-rounds", type=int, default=3, help="rounds for Flower's default (slow) mode")
    parser.add_argument("--default-clients", type=int, nargs="*", default=[8, 32],
                        help="client counts at which Flower's default mode runs")
    args = parser.parse_args(argv)
    run(args.clients, args.rounds, args.default_rounds, args.default_clients).publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
