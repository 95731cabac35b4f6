"""Flower's side of the side-by-side runs, in its two configurations (runs in .venv-bench).

- `deployment`: Flower's default deployment engine: a SuperLink and one SuperNode per client on
  127.0.0.1 with `--insecure`; each SuperNode starts a fresh ClientApp process per message.
- `legacy`: long-running client processes that stay connected across rounds (Flower's
  `start_server` / `start_client`, deprecated but the only persistent-process mode without Ray).

Both use the workloads of bench/workload.py and write a timeline: when each round ended and the
global model's accuracy, which bench/round_overhead.py and bench/digits.py turn into tables.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cpu import RoundCpu

FLOWER_APP = Path(__file__).resolve().parent / "flower_app"
FAILED = "authentication failed"  # the SuperLink refused an app process that called in too late


class Timeline:
    """Round end times (wall clock) and accuracies, rewritten after each round."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.rounds: list[list[Any]] = []
        self.done = False

    def record(self, server_round: int, accuracy: float | None) -> None:
        self.rounds.append([server_round, time.time(), accuracy])
        self._write()

    def finish(self) -> None:
        self.done = True
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"rounds": self.rounds, "done": self.done}))
        os.replace(tmp, self.path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_done(path: Path, processes: list[subprocess.Popen[bytes]], timeout: float,
              log: Path | None = None) -> dict[str, Any]:
    """Wait for the server side's timeline to say it is done; fail early when a log shows that the
    run cannot finish (Flower keeps its SuperLink up after a failed ServerApp)."""
    deadline, polls, cpu, rounds = time.monotonic() + timeout, 0, RoundCpu(), 0
    while time.monotonic() < deadline:
        if path.exists():
            doc: dict[str, Any] = json.loads(path.read_text())
            if len(doc["rounds"]) > rounds:
                rounds = len(doc["rounds"])
                cpu.round_ended(doc["rounds"][-1][0])
            if doc["done"]:
                return {**doc, "cpu_per_round": cpu.per_round()}
        if processes[0].poll() is not None and processes[0].returncode != 0:
            raise RuntimeError(f"{processes[0].args} exited with {processes[0].returncode}")
        polls += 1
        if log is not None and polls % 40 == 0 and FAILED in (text := log.read_text(errors="replace")):
            lines = text.splitlines()
            first = next(i for i, line in enumerate(lines) if FAILED in line)
            raise RuntimeError("the Flower run failed:\n" + "\n".join(lines[max(0, first - 8):first + 4]))
        time.sleep(0.05)
    raise TimeoutError(f"Flower did not finish within {timeout:g}s")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())


# --- legacy: long-running client processes ------------------------------------------------------
def legacy_server(task: str, clients: int, rounds: int, address: str, out: str) -> None:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    from bench.workload import Referee

    referee, timeline = Referee(task), Timeline(out)

    def evaluate(server_round: int, weights: list[Any], config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        accuracy = referee.accuracy(weights)
        timeline.record(server_round, accuracy)
        return 0.0, {} if accuracy is None else {"accuracy": accuracy}

    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients, min_available_clients=clients,
                      evaluate_fn=evaluate, on_fit_config_fn=lambda r: {"server-round": r},
                      initial_parameters=ndarrays_to_parameters(referee.initial()))
    start_server(server_address=address, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    timeline.finish()


def legacy_client(task: str, clients: int, partition: int, address: str) -> None:
    from flwr.client import NumPyClient, start_client

    from bench.workload import Party

    class BenchClient(NumPyClient):
        def __init__(self) -> None:
            self.party = Party(task, partition, clients)

        def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
            weights, examples = self.party.train(parameters, int(config["server-round"]))
            return weights, examples, {}

    start_client(server_address=address, client=BenchClient().to_client(), insecure=True)


def run_legacy(task: str, clients: int, rounds: int, workdir: Path, timeout: float) -> dict[str, Any]:
    address, out = f"127.0.0.1:{free_port()}", workdir / "timeline.json"
    me = [sys.executable, "-m", "bench.flower_peer"]
    common = ["--task", task, "--clients", str(clients), "--address", address]
    processes = [spawn([*me, "legacy-server", *common, "--rounds", str(rounds), "--out", str(out)],
                       workdir / "server.log")]
    processes += [spawn([*me, "legacy-client", *common, "--partition", str(p)], workdir / f"client-{p}.log")
                  for p in range(clients)]
    try:
        return wait_done(out, processes, timeout)
    finally:
        stop(processes)


# --- deployment engine: SuperLink + SuperNodes, a ClientApp process per message -------------------
def run_deployment(task: str, clients: int, rounds: int, workdir: Path, timeout: float) -> dict[str, Any]:
    bin_dir = Path(sys.executable).parent
    # Flower 1.42 serves the Fleet, Control and Runtime APIs over HTTP on one SuperLink port.
    link, out = free_port(), workdir / "timeline.json"
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    # The SuperLink and SuperNodes start flower-superexec and the app processes by name.
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes = [spawn([str(bin_dir / "flower-superlink"), "--insecure", "--port", str(link),
                        "--disable-runtime-dependency-installation"], workdir / "superlink.log", env)]
    processes += [spawn([str(bin_dir / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                         "--port", str(free_port()), "--node-config", f"partition-id={p} num-partitions={clients}"],
                        workdir / f"supernode-{p}.log", env) for p in range(clients)]
    try:
        wait_for_nodes(workdir / "superlink.log", clients, processes, timeout)
        config = f'task="{task}" clients={clients} rounds={rounds} out="{out}"'
        submit = None
        for _ in range(60):  # the SuperLink takes a while to listen on a busy machine
            submit = subprocess.run([str(bin_dir / "flwr"), "run", str(FLOWER_APP), "bench", "--run-config", config],
                                    capture_output=True, text=True, env=env, timeout=300)
            if submit.returncode == 0:
                break
            time.sleep(1)
        if submit is None or submit.returncode != 0:
            raise RuntimeError(f"flwr run failed: {submit.stdout if submit else ''}{submit.stderr if submit else ''}")
        return wait_done(out, processes, timeout, workdir / "superlink.log")
    finally:
        stop(processes)


def wait_for_nodes(log: Path, clients: int, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Submit the run only once every SuperNode has registered. The SuperLink gives the ServerApp
    process it starts 30 s (Flower's heartbeat interval) to call in; started while dozens of
    SuperNodes still import Flower on a 2-core machine, it missed that window and the SuperLink
    refused it ("Runtime task-token authentication failed")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count("Activated node_id") >= clients:
            return
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a Flower process exited before every SuperNode registered; see {log.parent}")
        time.sleep(0.2)
    raise TimeoutError(f"only some of {clients} SuperNodes registered within {timeout:g}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["legacy", "deployment", "legacy-server", "legacy-client"])
    parser.add_argument("--task", default="tiny")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partition", type=int, default=0)
    parser.add_argument("--address", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    if args.mode == "legacy-server":
        legacy_server(args.task, args.clients, args.rounds, args.address, args.out)
    elif args.mode == "legacy-client":
        legacy_client(args.task, args.clients, args.partition, args.address)
    else:
        run = run_legacy if args.mode == "legacy" else run_deployment
        started = time.time()
        doc = run(args.task, args.clients, args.rounds, Path(args.workdir), args.timeout)
        print(json.dumps({**doc, "started": started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
