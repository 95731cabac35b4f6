"""How fast the operator turns FederatedJobs into pods, and how much memory it needs.

Two cases, each applied with one `kubectl apply` to the Kubernetes API emulator of the end-to-end
tests (pods are not run: there is no kubelet):

- many jobs: 200 FederatedJobs of 8 partitions (200 x (1 + 8) = 1,800 pods);
- one wide job: a single FederatedJob of 1,000 partitions (1,001 pods), created in batches.

Measured: seconds from the apply until every pod exists, seconds until every job's status says
so, the operator's CPU seconds and its peak resident memory (VmHWM). Targets for many jobs:
< 60 s and < 300 MB. The peer, measured in the same run on a fresh emulator, is `kubectl apply`
of the very objects the operator renders (Secrets, ConfigMaps, Services, claims and pods): the
API server's own floor, so the ratio is the operator's overhead over creating the objects directly.
The emulator runs in this process and every process shares the machine: on a busy machine the
seconds stretch with the load average (recorded), the CPU seconds much less.

    python -m bench.operator_scale [--jobs 200] [--partitions 8] [--wide 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "trainer"), str(ROOT / "operator"), str(ROOT / "tests" / "e2e")]

from k8s_emulator import EmulatorServer  # noqa: E402  (the e2e tests' API emulator)

from bench.common import MB, Report, rss_bytes, trainer_env  # noqa: E402
from fedkube.plan import make_plan  # noqa: E402
from fedkube_operator.manifest import parse  # noqa: E402
from fedkube_operator.names import slots  # noqa: E402
from fedkube_operator.render import Owner, RenderConfig, render_job_objects, render_pod  # noqa: E402

KUBECTL = str(Path(sys.executable).parent / "kubectl")
NAMESPACE = "default"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 300.0


def manifests(jobs: int, partitions: int) -> list[dict[str, Any]]:
    example = yaml.safe_load((ROOT / "examples" / "digits-fedavg.yaml").read_text())
    out = []
    for i in range(jobs):
        job = json.loads(json.dumps(example))
        job["metadata"] = {"name": f"scale-{i:04d}", "namespace": NAMESPACE}
        job["spec"]["data"]["partitions"] = partitions
        job["spec"]["clients"]["minAvailable"] = min(job["spec"]["clients"]["minAvailable"], partitions)
        out.append(job)
    return out


class Cluster:
    """A fresh emulator with the CRD and namespace, driven by kubectl."""

    def __init__(self, workdir: Path) -> None:
        self.emulator = EmulatorServer().start()
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(self.emulator.kubeconfig(NAMESPACE))
        self.env = trainer_env(KUBECONFIG=str(self.kubeconfig))
        self.kubectl("apply", "-f", str(ROOT / "crds" / "federatedjob.yaml"))
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])

    def kubectl(self, *args: str, input: str | None = None) -> str:
        extra = ["--validate=false"] if args[0] == "apply" else []  # the emulator serves no OpenAPI
        out = subprocess.run([KUBECTL, *args, *extra], env=self.env, input=input, capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr[-2000:]}")
        return out.stdout

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def items(self, path: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.emulator.url}{path}", timeout=60) as response:
            return json.loads(response.read())["items"]

    def pods(self) -> int:
        """Pods created so far, counted inside the emulator: polling must not load the API server."""
        return len(self.emulator.creations("pods"))

    def stop(self) -> None:
        self.emulator.stop()


def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Seconds until `check()` holds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:g}s")
        time.sleep(interval)
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_created(status: dict[str, Any]) -> bool:
    return bool(status.get("podsDesired")) and status.get("podsCreated") == status["podsDesired"]


def run_operator(jobs: list[dict[str, Any]], workdir: Path, timeout: float, settle: float) -> dict[str, float]:
    cluster = Cluster(workdir)
    log = open(workdir / "operator.log", "wb")  # noqa: SIM115  (open for the operator's lifetime)
    operator = subprocess.Popen([sys.executable, "-m", "fedkube_operator", "--namespace", NAMESPACE],
                                env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2.0)  # log in and start watching before the jobs arrive, as a running operator would
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited: {(workdir / 'operator.log').read_text()[-2000:]}")
        expected = len(jobs) * (1 + jobs[0]["spec"]["data"]["partitions"])
        start = time.monotonic()
        cluster.apply(jobs)
        applied = time.monotonic() - start
        pods = applied + wait(lambda: cluster.pods() >= expected, timeout, f"{expected} pods")
        statuses = pods + wait(lambda: all(all_created(j.get("status") or {})
                                           for j in cluster.items(f"/apis/fedkube.io/v1alpha1/namespaces/"
                                                                  f"{NAMESPACE}/federatedjobs")),
                               timeout, "every job's status", interval=1.0)
        time.sleep(settle)  # a few reconcile passes over every job at steady state
        return {"apply_s": applied, "pods_s": pods, "status_s": statuses, "pods": cluster.pods(),
                "rss_mb": rss_bytes(operator.pid, "VmHWM") / MB, "cpu_s": cpu_seconds(operator.pid)}
    finally:
        operator.terminate()
        operator.wait(30)
        log.close()
        cluster.stop()
        if os.environ.get("FEDKUBE_BENCH_KEEP_LOG"):
            print((workdir / "operator.log").read_text()[-int(os.environ["FEDKUBE_BENCH_KEEP_LOG"]):])


def run_direct(jobs: list[dict[str, Any]], workdir: Path, timeout: float) -> dict[str, float]:
    """The peer: the same objects, rendered here and applied with kubectl, no operator."""
    cluster = Cluster(workdir)
    try:
        objects: list[dict[str, Any]] = []
        for i, manifest in enumerate(jobs):
            plan = make_plan(parse(manifest))
            owner = Owner(manifest["metadata"]["name"], NAMESPACE, f"00000000-0000-0000-0000-{i:012d}")
            config = RenderConfig(image="fedkube/trainer:bench")
            objects += render_job_objects(plan, owner, config)
            objects += [render_pod(plan, slot, owner, config, 0) for slot in slots(len(plan.clients))]
        expected = sum(1 for o in objects if o["kind"] == "Pod")
        start = time.monotonic()
        cluster.apply(objects)
        pods = time.monotonic() - start
        pods += wait(lambda: cluster.pods() >= expected, timeout, f"{expected} pods")
        return {"pods_s": pods, "pods": cluster.pods()}
    finally:
        cluster.stop()


def versions() -> str:
    return ", ".join(f"{d} {metadata.version(d)}" for d in ("kopf", "aiohttp", "kmock"))


def measure(report: Report, case: str, jobs: list[dict[str, Any]], timeout: float, settle: float) -> bool:
    """Run the peer and the operator on one case, add both rows; True if the operator met the targets."""
    with tempfile.TemporaryDirectory(prefix="fedkube-bench-") as tmp:
        (Path(tmp) / "peer").mkdir()
        direct = run_direct(jobs, Path(tmp) / "peer", timeout)
        (Path(tmp) / "operator").mkdir()
        ours = run_operator(jobs, Path(tmp) / "operator", timeout, settle)
    report.add(case, "fedkube operator (kubectl apply of the FederatedJobs)", ours["pods_s"], ours["status_s"],
               ours["pods"], ours["cpu_s"], ours["rss_mb"], ours["pods_s"] / direct["pods_s"])
    report.add(case, "peer: kubectl apply of the same rendered objects, no operator", direct["pods_s"], None,
               direct["pods"], None, None, 1.0)
    return bool(ours["pods_s"] < TARGET_SECONDS and ours["rss_mb"] < TARGET_RSS_MB)


def run(jobs: int, partitions: int, wide: int, timeout: float = 900.0, settle: float = 10.0) -> tuple[Report, bool]:
    report = Report(f"Operator scale: {jobs} FederatedJobs x {partitions} partitions; one job of {wide} partitions",
                    ["case", "what", "s until every pod exists", "s until every status", "pods",
                     "operator CPU s", "operator peak RSS MB", "x peer time"])
    many = measure(report, f"{jobs} jobs x {partitions}", manifests(jobs, partitions), timeout, settle)
    if wide:
        measure(report, f"1 job x {wide}", manifests(1, wide), timeout, settle)
    mine = report.rows[0]
    verdict = "meets" if many else "MISSES"
    report.notes += [
        f"Targets for {jobs} jobs: < {TARGET_SECONDS:.0f} s and < {TARGET_RSS_MB:.0f} MB: {verdict} them "
        f"({mine[2] / TARGET_SECONDS:.2f} and {mine[6] / TARGET_RSS_MB:.2f} of the targets).",
        f"API server: the e2e tests' emulator ({versions()}), in the benchmark's process; pods are not run. "
        "The operator ran with its defaults: 16 API requests in flight, 100 pod creations a second, "
        "batches of up to spec.scheduling.podCreationBatch (50) pods per job.",
    ]
    return report, many


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--wide", type=int, default=1000, help="partitions of the one-job case (0: skip it)")
    p.add_argument("--quick", action="store_true", help="40 jobs and a job of 200 partitions: checks the bench runs")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds per phase")
    p.add_argument("--settle", type=float, default=10.0, help="seconds of steady state before reading memory")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.wide, args.settle = 40, 200, 2.0
    report, met = run(args.jobs, args.partitions, args.wide, args.timeout, args.settle)
    report.publish()
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
