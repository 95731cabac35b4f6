"""How fast the operator turns many FederatedJobs into pods, and how much memory it needs.

200 FederatedJobs of 8 partitions each are applied with one `kubectl apply` to the Kubernetes API
emulator of the end-to-end tests (pods are not run: there is no kubelet). Measured: seconds from
the apply until every pod (200 x (1 + 8) = 1,800) exists, seconds until every job's status says
so, and the operator's peak resident memory (VmHWM). Targets: < 60 s and < 300 MB.

The peer, measured in the same run on a fresh emulator, is `kubectl apply` of the very objects
the operator renders (Secrets, ConfigMaps, Services, claims and pods): the API server's own
floor, so the ratio is the operator's overhead over creating the objects directly.

    python bench/operator_scale.py [--jobs 200] [--partitions 8] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
sys.path[:0] = [str(ROOT / "trainer"), str(ROOT / "operator"), str(ROOT / "tests" / "e2e")]

from k8s_emulator import EmulatorServer  # noqa: E402  (the e2e tests' API emulator)

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
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "trainer"), str(ROOT / "operator")])}
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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


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
        statuses = pods + wait(lambda: all((j.get("status") or {}).get("podsCreated")
                                           for j in cluster.items(f"/apis/fedkube.io/v1alpha1/namespaces/"
                                                                  f"{NAMESPACE}/federatedjobs")),
                               timeout, "every job's status", interval=1.0)
        time.sleep(settle)  # a few reconcile passes over every job at steady state
        return {"apply_s": applied, "pods_s": pods, "status_s": statuses, "pods": cluster.pods(),
                "rss_mb": peak_rss_mb(operator.pid), "cpu_s": cpu_seconds(operator.pid)}
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


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("kopf", "aiohttp", "kmock"))
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.1f} GB RAM; Python {platform.python_version()}; "
            f"{versions}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds per phase")
    p.add_argument("--settle", type=float, default=10.0, help="seconds of steady state before reading memory")
    p.add_argument("--no-record", action="store_true", help="do not append the result to BENCHMARKS.md")
    args = p.parse_args(argv)

    jobs = manifests(args.jobs, args.partitions)
    load_before = os.getloadavg()[0]
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="fedkube-bench-") as tmp:
        (Path(tmp) / "peer").mkdir()
        direct = run_direct(jobs, Path(tmp) / "peer", args.timeout)
        (Path(tmp) / "operator").mkdir()
        ours = run_operator(jobs, Path(tmp) / "operator", args.timeout, args.settle)
    load_after = os.getloadavg()[0]

    verdict = "meets" if ours["pods_s"] < TARGET_SECONDS and ours["rss_mb"] < TARGET_RSS_MB else "MISSES"
    lines = [
        f"### Operator scale: {args.jobs} FederatedJobs x {args.partitions} partitions — "
        f"{started:%Y-%m-%d %H:%M} UTC", "",
        f"Machine: {machine()}. Load average {load_before:.1f} before, {load_after:.1f} after. "
        "API server: the e2e tests' emulator (kmock), in the benchmark's process; pods are not run.", "",
        "| what | seconds until every pod exists | pods | operator peak RSS (MB) |", "|---|---|---|---|",
        f"| fedkube operator (kubectl apply of the FederatedJobs) | {ours['pods_s']:.1f} | {ours['pods']:.0f} "
        f"| {ours['rss_mb']:.0f} |",
        f"| peer: kubectl apply of the same rendered objects, no operator | {direct['pods_s']:.1f} "
        f"| {direct['pods']:.0f} | - |", "",
        f"- Operator / direct apply: {ours['pods_s'] / direct['pods_s']:.2f}x the time. Every job's status "
        f"written after {ours['status_s']:.1f} s; the apply itself took {ours['apply_s']:.1f} s; the operator "
        f"used {ours['cpu_s']:.1f} s of CPU in all.",
        f"- Targets < {TARGET_SECONDS:.0f} s and < {TARGET_RSS_MB:.0f} MB: {verdict} them "
        f"({ours['pods_s'] / TARGET_SECONDS:.2f} and {ours['rss_mb'] / TARGET_RSS_MB:.2f} of the targets).",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_record:
        with (ROOT / "BENCHMARKS.md").open("a") as f:
            f.write("\n" + text)
    return 0 if verdict == "meets" else 1


if __name__ == "__main__":
    raise SystemExit(main())
