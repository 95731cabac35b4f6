"""Running real jobs from tests: real aggregator and client processes talking gRPC on 127.0.0.1.

A thin layer over the local launcher's LocalRun, so tests exercise the same process handling
the product uses, plus bounded waits with messages that say what was expected.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from fedkube.client.main import open_channel
from fedkube.launcher import Child, LocalRun, log_tail
from fedkube.secure.tls import Identity, client_identity
from fedkube.spec import parse_manifest

HERE = Path(__file__).parent


def job_doc(name: str, partitions: int, rounds: int, min_available: int, **clients: Any) -> dict[str, Any]:
    """A small digits FederatedJob; keyword arguments go into spec.clients (camelCase)."""
    return {
        "apiVersion": "fedkube.io/v1alpha1",
        "kind": "FederatedJob",
        "metadata": {"name": name},
        "spec": {
            "task": {"entrypoint": "fedkube.tasks.digits:task"},
            "data": {"partitions": partitions},
            "rounds": rounds,
            "clients": {"minAvailable": min_available, "localEpochs": 2, "roundTimeoutSeconds": 60,
                        "joinTimeoutSeconds": 60, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                        **clients},
        },
    }


def with_task(doc: dict[str, Any], entrypoint: str, config: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["task"] = {"entrypoint": entrypoint, "config": config}
    return doc


class Job:
    """One job's processes under a temporary run directory."""

    def __init__(self, doc: dict[str, Any], run_dir: Path, resume: bool = False) -> None:
        # Task modules of the tests must import in the child processes too.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        self.job = parse_manifest(doc)
        self.run = LocalRun(self.job, run_dir, Console(quiet=True))
        self.manifest = self.run.prepare(resume=resume)  # resume keeps the run directory's checkpoints
        self.ports: dict[str, int] = {}

    def start(self, clients: list[int] | None = None, port: int = 0) -> Job:
        self.ports = self.run.start_aggregator(self.manifest, port)
        for p in range(self.job.spec.data.partitions) if clients is None else clients:
            self.run.start_client(self.manifest, p, self.ports["port"])
        return self

    @property
    def aggregator(self) -> Child:
        """The newest aggregator process (a restart adds one)."""
        return [c for c in self.run.children if c.name == "aggregator"][-1]

    def kill_aggregator(self) -> None:
        """SIGKILL, as a node failure or OOM would: no cleanup, no last checkpoint."""
        os.killpg(self.aggregator.process.pid, signal.SIGKILL)
        self.aggregator.process.wait()

    def restart_aggregator(self) -> None:
        """A fresh aggregator on the same port and checkpoint URI, as the operator recreates the pod."""
        old = self.aggregator
        kept = old.log.with_name(f"aggregator-{len(self.run.children)}.log")  # the new one reuses the name
        old.log = old.log.rename(kept)
        self.ports = self.run.start_aggregator(self.manifest, self.ports["port"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    def channel(self, partition: int) -> grpc.Channel:
        """A real (mTLS unless the spec opts out) channel to the aggregator with partition's certificate."""
        tls = Identity.read(self.run.tls_dir(client_identity(partition))) if self.run.tls else None
        return open_channel(self.target, tls)

    def status(self) -> dict[str, Any] | None:
        return self.run.status(self.ports["status_port"])

    def wait_for(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict:
        """The live status endpoint until `predicate` holds; once the aggregator exits, the status it left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.aggregator.process.poll() is not None
            left = self.run.run_dir / "status.json"
            doc = (self.final_status() if left.exists() else None) if exited else self.status()
            if doc is not None and predicate(doc):
                return doc
            if exited:
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; aggregator log:\n{self.aggregator_log()}")

    def kill_client(self, partition: int) -> None:
        (child,) = [c for c in self.run.children if c.name == f"client-{partition}"]
        os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()

    def wait_exit(self, timeout: float = 180) -> int:
        aggregator = self.aggregator.process
        try:
            code = aggregator.wait(timeout)
        except Exception as exc:
            raise AssertionError(f"aggregator still running after {timeout}s:\n{self.aggregator_log()}") from exc
        self.run.wait(timeout=15)
        return code

    def aggregator_log(self) -> str:
        return log_tail(self.aggregator.log, 40)

    def metrics(self) -> list[dict[str, Any]]:
        return json.loads((self.run.run_dir / "metrics.json").read_text())

    def final_status(self) -> dict[str, Any]:
        return json.loads((self.run.run_dir / "status.json").read_text())

    def stop(self) -> None:
        self.run.stop(grace=2.0)
