"""End-to-end fixtures: an emulated API server, the real kubectl, the real operator (as its own
process, so it can be SIGKILLed), and TEST-ONLY stand-ins for the kubelet and the garbage
collector. Everything else is the product.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from gc_stand_in import GarbageCollector
from k8s_emulator import EmulatorServer
from kubelet_stand_in import Kubelet

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
NAMESPACE = "default"
# Fast clocks for tests: reconcile often, retry failed pods after half a second.
OPERATOR_ARGS = ["--poll-interval", "0.3", "--backoff-base", "0.5", "--finished-pod-grace", "2"]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2,
             diagnose: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds.

    The bound stretches with the machine's load (up to 4x): on a shared, busy machine every
    process gets a fraction of a core, and a bound is a safety net, not a speed test.
    """
    timeout *= min(4.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (AssertionError, KeyError, subprocess.CalledProcessError) as exc:
            last_error = exc
        time.sleep(interval)
    details = f" (last error: {last_error})" if last_error else ""
    extra = "\n" + diagnose() if diagnose else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{details}{extra}")


@dataclass
class Cluster:
    """The emulated cluster and the product's operator, driven through kubectl."""

    emulator: EmulatorServer
    workdir: Path
    kubeconfig: Path
    operator: subprocess.Popen[bytes] | None = None
    operator_logs: list[Path] = field(default_factory=list)
    liveness_port: int = 0
    webhook_port: int | None = None
    kubelet: Kubelet | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}

    # -- kubectl -------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, *args], env=self.env, capture_output=True, text=True, input=input,
                                timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def apply(self, manifest: str | dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "--validate=false", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str | None = None) -> Any:
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        return json.loads(self.kubectl(*args).stdout)

    def job(self, name: str) -> dict[str, Any]:
        return self.get("federatedjob", name)

    def pods(self, job: str | None = None) -> list[dict[str, Any]]:
        items = self.get("pods")["items"]
        return [p for p in items if job is None or p["metadata"].get("labels", {}).get("fedkube.io/job") == job]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.get("events")["items"] if e.get("involvedObject", {}).get("name") == name]

    def wait_job(self, name: str, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> dict[str, Any]:
        return wait_for(lambda: (job := self.job(name)) and check(job) and job, timeout,
                        f"FederatedJob {name}: {what}", diagnose=lambda: self.diagnose(name))

    # -- the operator --------------------------------------------------------------------------
    def start_operator(self, *extra: str, webhook: bool = True) -> None:
        self.liveness_port = free_port()
        args = [sys.executable, "-m", "fedkube_operator", "--namespace", NAMESPACE,
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz", *OPERATOR_ARGS, *extra]
        if webhook:
            self.webhook_port = self.webhook_port or free_port()
            args += ["--webhook-port", str(self.webhook_port), "--webhook-addr", "127.0.0.1",
                     "--webhook-host", "127.0.0.1", "--webhook-config", "fedkube.io"]
        self.launch_operator(args, "fedkube.io" if webhook else None)

    def launch_operator(self, command: list[str], webhook_config: str | None) -> None:
        """Start `command` (serving liveness on `liveness_port`); wait until it is alive and, if it
        manages the ValidatingWebhookConfiguration `webhook_config`, until that points at it."""
        assert self.operator is None, "the operator is already running"
        log = self.workdir / f"operator-{len(self.operator_logs)}.log"
        self.operator_logs.append(log)
        with open(log, "wb") as out:
            self.operator = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        # Generous: starting Python, Kopf and the client libraries takes long on a loaded CI machine.
        wait_for(self._operator_alive, 90, "the operator's liveness endpoint", diagnose=self.operator_log)
        if webhook_config:
            wait_for(lambda: self._webhook_configured(webhook_config), 30,
                     f"the managed ValidatingWebhookConfiguration {webhook_config}", diagnose=self.operator_log)

    def _operator_alive(self) -> bool:
        assert self.operator is not None
        if self.operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.operator.returncode}:\n{self.operator_log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _webhook_configured(self, name: str) -> bool:
        result = self.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json", check=False)
        return result.returncode == 0 and any(
            str(self.webhook_port) in w.get("clientConfig", {}).get("url", "")
            for w in json.loads(result.stdout).get("webhooks") or [])

    def stop_operator(self, sig: int = signal.SIGTERM) -> None:
        if self.operator is None:
            return
        self.operator.send_signal(sig)
        try:
            self.operator.wait(20)
        except subprocess.TimeoutExpired:
            self.operator.kill()
            self.operator.wait(5)
        self.operator = None

    def operator_log(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-6000:] for p in self.operator_logs)

    def diagnose(self, job: str | None = None) -> str:
        parts = []
        try:
            parts.append(self.kubectl("get", "pods", check=False).stdout)
            if job:
                parts.append(json.dumps(self.job(job).get("status"), indent=1))
        except Exception as exc:  # diagnostics must not hide the real failure
            parts.append(f"(kubectl failed: {exc})")
        if self.kubelet is not None:
            parts.append(f"kubelet errors: {self.kubelet.errors}")
            for name in sorted(self.kubelet.logs):
                parts.append(f"--- log of pod {name}\n{self.kubelet.log(name)[-1500:]}")
        parts.append(self.operator_log()[-8000:])
        return "\n".join(parts)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash.setdefault(_failed_key, report.failed)
    return report


_failed_key = pytest.StashKey[bool]()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A fresh emulated API server with the CRD and the namespace; the operator not yet started."""
    with_emulator = EmulatorServer().start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(with_emulator.kubeconfig(NAMESPACE))
    c = Cluster(with_emulator, tmp_path, kubeconfig)
    try:
        c.kubectl("apply", "--validate=false", "-f", str(REPO / "crds" / "federatedjob.yaml"))
        c.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        yield c
    finally:
        if request.node.stash.get(_failed_key, False):
            print(c.diagnose())
        c.stop_operator()
        with_emulator.stop()


@pytest.fixture
def kubelet(cluster: Cluster) -> Iterator[Kubelet]:
    """TEST-ONLY kubelet stand-in running the cluster's pods as local processes.

    Its pretend node has no GPUs and one allocatable CPU: a job's pods share this machine's few
    cores, so each should size its thread pools for one (OMP_NUM_THREADS comes from limits.cpu,
    which falls back to the node's allocatable CPUs).
    """
    with Kubelet(cluster.emulator.url, cluster.kubeconfig, KUBECTL, NAMESPACE, bin_dirs=(str(BIN),), cpus=1,
                 python_path=(str(REPO / "trainer"), str(REPO / "operator"))) as k:
        cluster.kubelet = k
        yield k


@pytest.fixture
def garbage_collector(cluster: Cluster) -> Iterator[GarbageCollector]:
    with GarbageCollector(cluster.emulator.url, NAMESPACE) as gc:
        yield gc


def small_job(name: str = "digits", partitions: int = 4, rounds: int = 3, **spec: Any) -> dict[str, Any]:
    """A FederatedJob small enough for CI: digits, few partitions, few rounds."""
    manifest = yaml.safe_load((REPO / "examples" / "digits-fedavg.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["data"]["partitions"] = partitions
    manifest["spec"]["rounds"] = rounds
    manifest["spec"]["clients"]["minAvailable"] = min(manifest["spec"]["clients"]["minAvailable"], partitions)
    manifest["spec"]["clients"]["localEpochs"] = 1
    manifest["spec"].update(spec)
    return manifest


def failing_job(name: str, backoff_limit: int, **spec: Any) -> dict[str, Any]:
    """A job whose aggregator cannot start: Python refuses to run with a bogus PYTHONHOME."""
    manifest = small_job(name, backoffLimit=backoff_limit, **spec)
    manifest["spec"]["template"] = {"aggregator": {"env": [{"name": "PYTHONHOME", "value": "/nonexistent"}]}}
    return manifest
