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
from bench.peers import PEERS, failure

TARGETS = {"flower (default: process per message)": 20, "flower (long-running clients)": 3}


def run(clients_list: list[int], rounds: int, default_rounds: int, default_clients: list[int]) -> Report:
    report = Report("Per-round overhead, near-zero-work model",
                    ["clients", "peer", "rounds", "s / round", "start-up s", "peer / fedkube", "target"])
    for clients in clients_list:
        ours = None
        for peer, launch in PEERS.items():
            if peer.startswith("flower (default") and clients not in default_clients:
                report.add(clients, peer, 0, None, None, None, "not run in this profile")
                continue
            n = default_rounds if peer.startswith("flower (default") else rounds
            try:
                timeline = launch("tiny", clients, n, 1800.0)
            except (RuntimeError, TimeoutError) as exc:
                if peer == "fedkube":
                    raise
                report.add(clients, peer, n, None, None, None, f"did not finish: {failure(exc)}")
                continue
            per_round = timeline.per_round()
            first = next(t for r, t, _ in timeline.rounds if r >= 1) - timeline.started
            ours = ours or per_round
            target = TARGETS.get(peer)
            ratio = per_round / ours
            verdict = "" if target is None else f">= {target}x: {'met' if ratio >= target else 'MISSED'}"
            report.add(clients, peer, n, per_round, first, ratio, verdict)
    report.notes += [
        "s / round: mean time per round from the end of round 1 to the end of the last (FedAvg over every client, "
        "no evaluation, no checkpoint until the last round); start-up: launch to the end of round 1.",
        "Target (issue #13): fedkube's round overhead <= 1/20 of Flower's default and <= 1/3 of Flower's "
        "long-running configuration, i.e. peer / fedkube >= 20 and >= 3.",
        "fedkube runs with its defaults (mutual TLS); Flower with `--insecure`. Flower's default mode starts a "
        "SuperLink and one SuperNode per client and submits the run with `flwr run` once every SuperNode has "
        "registered; its per-message ClientApp processes import numpy only (bench/flower_app), not torch.",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--default-rounds", type=int, default=3, help="rounds for Flower's default (slow) mode")
    parser.add_argument("--default-clients", type=int, nargs="*", default=[8, 32],
                        help="client counts at which Flower's default mode runs")
    args = parser.parse_args(argv)
    run(args.clients, args.rounds, args.default_rounds, args.default_clients).publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
