"""1,000 clients on one aggregator: per-round time with 100 sampled a round, and the aggregator's peak RSS.

Lightweight clients (grpc.aio, one connection each, spread over a few worker processes) speak the
real protocol to one real `fedkube aggregator` process on 127.0.0.1: join, wait for a round,
receive the model, stream back an update. The model is small (a NoWorkTask of `--params` float32
values), so what is timed is the aggregator's sampling, fan-out, folding and bookkeeping. The peer
is the same aggregator with only as many clients joined as it samples: the ratios say what the
other idle, joined clients cost in round time and memory. mTLS is off here (the handshake is
the TLS library's, not the aggregator's, work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MB, ROOT, Report, rss_bytes, trainer_env

CLIENT_PROCESSES = 4
JOIN_TIMEOUT = 300.0
ROUND_TIMEOUT = 120.0


def job_manifest(clients: int, per_round: int, rounds: int, params: int) -> dict[str, Any]:
    """A job whose quorum is the round's sample, so rounds run as soon as enough clients join."""
    return {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": f"many-{clients}"},
            "spec": {"task": {"entrypoint": "bench.tasks:blob", "config": {"params": params}}, "rounds": rounds,
                     "data": {"partitions": clients},
                     "clients": {"minAvailable": per_round, "perRound": per_round, "joinTimeoutSeconds": JOIN_TIMEOUT,
                                 "roundTimeoutSeconds": ROUND_TIMEOUT},
                     "transport": {"tls": False}, "checkpoint": {"everyRounds": rounds}}}


# --- the worker: many lightweight clients in one asyncio loop ----------------------------------

async def _client(target: str, partition: int) -> int:
    """One client's whole job; returns how many updates the aggregator accepted."""
    import grpc
    import numpy as np

    from fedkube.protocol import fedkube_pb2 as pb
    from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
    from fedkube.protocol.tensors import data_envelopes, receive_tensors, spec_from_header

    # A local subchannel pool: every client its own connection, as separate machines would have.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    accepted = 0
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.AggregatorStub(channel)
        session = (await stub.Join(pb.JoinRequest(partition=partition), wait_for_ready=True)).session
        while True:
            info, chunks = None, []
            async for envelope in stub.GetTask(pb.TaskRequest(partition=partition, session=session)):
                if envelope.HasField("done"):
                    return accepted
                if envelope.HasField("round"):
                    info = envelope.round
                else:
                    chunks.append(envelope.data)
            assert info is not None
            specs = [spec_from_header(h) for h in info.tensors]
            update = {name: np.full_like(w, 1e-3) for name, w in receive_tensors(specs, chunks).items()}
            header = pb.Envelope(update=pb.UpdateInfo(partition=partition, round=info.round, ticket=info.ticket,
                                                      num_examples=1, tensors=[s.header() for s in specs]))
            reply = await stub.SubmitUpdate(iter([header, *data_envelopes(update.values())]))
            accepted += reply.accepted


async def _worker(target: str, partitions: range) -> list[int]:
    return list(await asyncio.gather(*(_client(target, p) for p in partitions)))


def worker_main(target: str, first: int, count: int) -> int:
    accepted = asyncio.run(_worker(target, range(first, first + count)))
    print(json.dumps({"clients": count, "accepted": sum(accepted)}), flush=True)
    return 0


# --- the driver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    clients: int
    per_round: int
    rounds_timed: int
    seconds_per_round: float
    join_seconds: float
    peak_rss: int
    accepted: int


def _start_workers(target: str, clients: int, processes: int) -> list[subprocess.Popen[str]]:
    share = -(-clients // processes)
    return [subprocess.Popen([sys.executable, "-m", "bench.many_clients", "--worker", target, str(first),
                              str(min(share, clients - first))], stdout=subprocess.PIPE, text=True,
                             env=trainer_env(GRPC_VERBOSITY="ERROR"), cwd=ROOT)  # no GOAWAY chatter at the end
            for first in range(0, clients, share)]


def run_case(clients: int, per_round: int, rounds: int, params: int, processes: int = CLIENT_PROCESSES) -> Result:
    """One job; round times count only rounds sampled after every client had joined."""
    from rich.console import Console

    from fedkube.launcher import LocalRun, log_tail
    from fedkube.spec import parse_manifest

    os.environ.update(trainer_env())  # the aggregator imports bench.tasks
    with tempfile.TemporaryDirectory(prefix="fedkube-many-") as tmp:
        run = LocalRun(parse_manifest(job_manifest(clients, per_round, rounds, params)), Path(tmp) / "run",
                       Console(quiet=True))
        ports = run.start_aggregator(run.prepare(resume=False))
        aggregator = run.children[0].process
        started = time.monotonic()
        workers = _start_workers(f"127.0.0.1:{ports['port']}", clients, processes)
        joined_at, first_timed, ends, peak = None, None, {}, 0
        try:
            while aggregator.poll() is None:
                try:
                    peak = max(peak, rss_bytes(aggregator.pid, "VmHWM"))
                except (KeyError, OSError):  # it has just exited
                    continue
                status = run.status(ports["status_port"]) or {}
                now = time.monotonic()
                if joined_at is None and (status.get("clients") or {}).get("joined") == clients:
                    joined_at, first_timed = now, status.get("round", 0) + 1
                for h in status.get("history") or []:
                    ends.setdefault(h["round"], now)
                if now - started > JOIN_TIMEOUT + rounds * ROUND_TIMEOUT:
                    raise TimeoutError(f"{clients} clients: the job did not finish")
                time.sleep(0.05)
            if aggregator.returncode != 0:
                raise RuntimeError(f"the aggregator failed:\n{log_tail(run.children[0].log, 30)}")
            accepted = sum(json.loads(w.communicate(timeout=120)[0].splitlines()[-1])["accepted"] for w in workers)
        finally:
            run.stop()
            for w in workers:
                w.kill()
        history = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    if joined_at is None or first_timed is None:
        raise RuntimeError(f"never saw all {clients} clients joined")
    for h in history:
        ends.setdefault(h["round"], time.monotonic())
    timed = sorted(r for r in ends if r >= first_timed)
    if len(timed) < 2:
        raise RuntimeError(f"{clients} clients: only {len(timed)} rounds after all joined; raise --rounds")
    per_round_s = (ends[timed[-1]] - ends[timed[0]]) / (len(timed) - 1)
    return Result(clients, per_round, len(timed) - 1, per_round_s, joined_at - started, peak, accepted)


def run(clients: int, per_round: int, rounds: int, params: int) -> Report:
    report = Report(f"{clients} clients on one aggregator, {per_round} sampled a round",
                    ["clients joined", "sampled / round", "rounds timed", "s / round", "join s",
                     "aggregator peak RSS MB", "vs all-sampled: round time", "vs all-sampled: RSS"])
    peer = run_case(per_round, per_round, rounds, params)
    ours = run_case(clients, per_round, rounds, params)
    for r in (peer, ours):
        report.add(r.clients, r.per_round, r.rounds_timed, r.seconds_per_round, r.join_seconds, r.peak_rss / MB,
                   r.seconds_per_round / peer.seconds_per_round, r.peak_rss / peer.peak_rss)
    report.notes += [
        f"Model: {params} float32 values ({params * 4 / MB:.2f} MB); each client streams back a full update over "
        "real gRPC (one connection per client, asyncio clients in "
        f"{CLIENT_PROCESSES} processes), mTLS off; FedAvg; spec.transport.maxConcurrentStreams at its default (2).",
        "s / round: mean time between round ends, over the rounds sampled after every client had joined; "
        "join s: from starting the clients to all joined. The peer row is the same aggregator with only the "
        "sampled clients joined, so the ratios are what the idle joined clients cost.",
        f"Updates accepted: {peer.accepted} (peer), {ours.accepted} ({clients} clients).",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--worker"]:
        return worker_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--params", type=int, default=10_000, help="float32 values in the model")
    args = parser.parse_args(argv)
    run(args.clients, args.per_round, args.rounds, args.params).publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
