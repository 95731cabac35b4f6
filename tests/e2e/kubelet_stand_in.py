"""TEST-ONLY: a kubelet (and scheduler) stand-in that runs each Pod's command as a local process.

This is test code, never part of the product: the emulated API server has no nodes, so this
plays the node. For every Pod in its namespace it:

- schedules it onto one pretend node: a nodeSelector the node's labels do not satisfy, or more
  `nvidia.com/gpu` than the node has free, leaves the Pod Pending with the scheduler's
  `PodScheduled=False, reason=Unschedulable` condition and message;
- materialises its volumes into a temporary folder: ConfigMap and Secret keys (or the chosen
  `items`) as files, emptyDirs as empty folders, PersistentVolumeClaims as folders that outlive
  pods (so a recreated pod finds what its predecessor wrote), owned by the pod's fsGroup;
- starts the container's command + args in a private mount namespace (`unshare -m`) where each
  volume is bind-mounted at its `mountPath`, a hosts file maps the namespace's Services
  (`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`) to 127.0.0.1, the root
  filesystem is read-only when `readOnlyRootFilesystem` says so, and the process runs as
  `runAsUser`/`runAsGroup` with no new privileges; env from `value`, `fieldRef`,
  `secretKeyRef`, `configMapKeyRef`, `envFrom`;
- runs every pod in the node's own network namespace, reached from this machine through a veth
  pair at the node's address (the podIP), so fixed ports (7070, 8080) collide neither with this
  machine's services nor with other tests; without the rights for that, pods share this machine's
  network at 127.0.0.1;
- reports the phase through `kubectl patch pod --subresource=status`: Running (podIP the node's),
  then Succeeded or Failed with the exit code (128+signal when killed) and the termination
  message (the last log lines with FallbackToLogsOnError);
- kills the process when its Pod is deleted.

The image is ignored: the command runs from this machine's PATH (the project's venv first), with
the source tree under test on PYTHONPATH, as the image would carry it.
Every pod's aggregator listens on the same fixed ports, so run one job per kubelet at a time.
"""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPU = "nvidia.com/gpu"
TERMINATION_LOG_LINES = 80


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunningPod:
    name: str
    uid: str
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    started: str
    gpus: int
    policy: str
    message_file: Path
    container: str


@dataclass
class Kubelet:
    """TEST-ONLY kubelet stand-in: see the module docstring. Use as a context manager."""

    api_url: str
    kubeconfig: Path
    kubectl: str
    namespace: str = "default"
    node_labels: Mapping[str, str] = field(default_factory=lambda: {"kubernetes.io/hostname": "test-node"})
    gpus: int = 0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)  # the node's allocatable CPUs
    bin_dirs: tuple[str, ...] = ()
    python_path: tuple[str, ...] = ()  # the source roots under test: what the image would carry
    poll_seconds: float = 0.2
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fedkube-kubelet-", dir="/var/tmp")))

    def __post_init__(self) -> None:
        self.running: dict[str, RunningPod] = {}
        self.finished: dict[str, int] = {}  # pod uid -> exit code
        self.unschedulable: set[str] = set()
        self.logs: dict[str, Path] = {}  # pod name -> log of its latest run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet-stand-in", daemon=True)
        # Status patches go out in order from their own thread, so a slow kubectl never delays a pod's start.
        self._patches: queue.Queue[tuple[str, Mapping[str, Any]] | None] = queue.Queue()
        self._patcher = threading.Thread(target=self._send_patches, name="kubelet-patches", daemon=True)
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.netns: str | None = None
        self.pod_ip = "127.0.0.1"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Kubelet:
        self._make_network()
        self._thread.start()
        self._patcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._patches.put(None)
        self._patcher.join(30)
        with self._lock:
            for pod in list(self.running.values()):
                self._terminate(pod, grace=1.0)
            self.running.clear()
        if self.netns is not None:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _make_network(self) -> None:
        """A private network namespace for the node's pods, linked to this machine by a veth pair."""
        token = secrets.token_hex(3)
        name, host, peer = f"fedkube-{token}", f"fk{token}h", f"fk{token}p"
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.{4 * secrets.randbelow(64)}"
        base = subnet.rsplit(".", 1)
        host_ip, pod_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
        steps = [["ip", "netns", "add", name], ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
                 ["ip", "link", "set", peer, "netns", name], ["ip", "addr", "add", f"{host_ip}/30", "dev", host],
                 ["ip", "link", "set", host, "up"], ["ip", "-n", name, "addr", "add", f"{pod_ip}/30", "dev", peer],
                 ["ip", "-n", name, "link", "set", peer, "up"], ["ip", "-n", name, "link", "set", "lo", "up"]]
        for step in steps:
            try:
                result = subprocess.run(step, capture_output=True, text=True, timeout=10)
            except OSError as exc:
                result = subprocess.CompletedProcess(step, 1, "", str(exc))
            if result.returncode != 0:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
                subprocess.run(["ip", "link", "del", host], capture_output=True, check=False)
                sys.stderr.write(f"kubelet stand-in: no private pod network ({' '.join(step)}: "
                                 f"{result.stderr.strip()}); pods share this machine's network\n")
                return
        self.netns, self.pod_ip = name, pod_ip

    def kill(self, pod_name: str, sig: int = signal.SIGKILL) -> None:
        """Crash a pod's process, as if its container died."""
        with self._lock:
            pod = next((p for p in self.running.values() if p.name == pod_name), None)
            if pod is None:
                raise AssertionError(f"pod {pod_name} is not running; running: "
                                     f"{sorted(p.name for p in self.running.values())}")
            os.killpg(pod.process.pid, sig)

    def log(self, pod_name: str) -> str:
        path = self.logs.get(pod_name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    # -- API access ----------------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _patch_status(self, name: str, status: Mapping[str, Any]) -> None:
        self._patches.put((name, status))

    def _send_patches(self) -> None:
        while (item := self._patches.get()) is not None:
            self._send_patch(*item)

    def _send_patch(self, name: str, status: Mapping[str, Any]) -> None:
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, "patch", "pod", name,
             "--subresource=status", "--type=merge", "-p", json.dumps({"status": status})],
            capture_output=True, text=True, timeout=30)
        if result.returncode != 0 and "NotFound" not in result.stderr and "not found" not in result.stderr:
            self.errors.append(f"patch {name}: {result.stderr.strip()}")

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep serving; tests read .errors on failure
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    def _sync(self) -> None:
        listing = self._get(f"/api/v1/namespaces/{self.namespace}/pods") or {"items": []}
        pods = {p["metadata"]["uid"]: p for p in listing["items"]}
        with self._lock:
            for uid, running in list(self.running.items()):
                pod = pods.get(uid)
                if pod is None or pod["metadata"].get("deletionTimestamp"):
                    self._terminate(running, grace=2.0)
                    del self.running[uid]
                elif running.process.poll() is not None:
                    del self.running[uid]
                    self._report_exit(running)
            for uid, pod in pods.items():
                if uid in self.running or uid in self.finished or uid in self.unschedulable:
                    continue
                if pod["metadata"].get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
                        "Succeeded", "Failed"):
                    continue
                self._admit(pod)

    # -- scheduling -----------------------------------------------------------------------------
    @staticmethod
    def _gpus(pod: Mapping[str, Any]) -> int:
        total = 0
        for container in pod["spec"].get("containers", []):
            resources = container.get("resources") or {}
            value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0
            total += int(value)
        return total

    def _unschedulable_reason(self, pod: Mapping[str, Any]) -> str | None:
        selector = pod["spec"].get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        wanted = self._gpus(pod)
        free = self.gpus - sum(p.gpus for p in self.running.values())
        if wanted > free:
            return f"0/1 nodes are available: 1 Insufficient {GPU}."
        return None

    def _admit(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        reason = self._unschedulable_reason(pod)
        if reason is not None:
            self.unschedulable.add(meta["uid"])
            self._patch_status(meta["name"], {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason,
                 "lastTransitionTime": _now()}]})
            return
        try:
            running = self._start(pod)
        except Exception as exc:
            self.finished[meta["uid"]] = -1
            self.errors.append(f"start {meta['name']}: {exc}")
            self._patch_status(meta["name"], {"phase": "Failed", "reason": "StandInError", "message": str(exc)})
            return
        self.running[meta["uid"]] = running
        self._patch_status(meta["name"], {
            "phase": "Running", "podIP": self.pod_ip, "hostIP": self.pod_ip, "startTime": running.started,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": pod["spec"]["containers"][0]["name"], "ready": True,
                                   "restartCount": 0, "state": {"running": {"startedAt": running.started}}}]})

    # -- volumes, env, hosts --------------------------------------------------------------------
    def _object_data(self, kind: str, name: str) -> dict[str, bytes]:
        obj = self._get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        if obj is None:
            raise RuntimeError(f"{kind} {name!r} not found")
        if kind == "secrets":
            return {k: base64.b64decode(v or "") for k, v in (obj.get("data") or {}).items()}
        return {k: v.encode() for k, v in (obj.get("data") or {}).items()}

    def _materialise(self, volume: Mapping[str, Any], into: Path, owner: tuple[int, int]) -> Path:
        path = into / volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if self._get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}") is None:
                raise RuntimeError(f'persistentvolumeclaim "{claim}" not found')
            path = self.root / "claims" / claim
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, *owner)
            return path
        path.mkdir(parents=True)
        if "emptyDir" in volume:
            os.chown(path, *owner)
            return path
        source = volume.get("configMap") or volume.get("secret")
        if source is None:
            raise RuntimeError(f"volume {volume['name']}: only configMap, secret, emptyDir and PVCs are supported")
        kind, name = ("configmaps", source["name"]) if "configMap" in volume else ("secrets", source["secretName"])
        data = self._object_data(kind, name)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise RuntimeError(f"{kind} {name!r} has no key {item['key']!r}")
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
            os.chown(target, 0, owner[1])
            # With an fsGroup, kubelets make the files group-readable for it.
            os.chmod(target, item.get("mode", source.get("defaultMode", 0o644)) | 0o440)
        return path

    def _env(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        env = {"PATH": os.pathsep.join([*self.bin_dirs, "/usr/local/bin", "/usr/bin", "/bin"]),
               "HOSTNAME": pod["metadata"]["name"], "LANG": "C.UTF-8"}
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(self.python_path)
        fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": self.namespace,
                  "metadata.uid": pod["metadata"]["uid"], "status.podIP": self.pod_ip}
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                secret = self._object_data("secrets", source["secretRef"]["name"])
                env.update({k: v.decode() for k, v in secret.items()})
            if "configMapRef" in source:
                env.update({k: v.decode() for k, v in
                            self._object_data("configmaps", source["configMapRef"]["name"]).items()})
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var.get("valueFrom") or {}
            if "fieldRef" in ref:
                env[var["name"]] = fields[ref["fieldRef"]["fieldPath"]]
            elif "resourceFieldRef" in ref:
                env[var["name"]] = self._resource_field(container, ref["resourceFieldRef"])
            elif "secretKeyRef" in ref:
                env[var["name"]] = self._object_data("secrets", ref["secretKeyRef"]["name"])[
                    ref["secretKeyRef"]["key"]].decode()
            elif "configMapKeyRef" in ref:
                env[var["name"]] = self._object_data("configmaps", ref["configMapKeyRef"]["name"])[
                    ref["configMapKeyRef"]["key"]].decode()
        return env

    def _resource_field(self, container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
        """limits.cpu / requests.cpu in whole CPUs, rounded up; the node's CPUs when there is no limit."""
        kind, _, resource = ref["resource"].partition(".")
        if resource != "cpu":
            raise RuntimeError(f"resourceFieldRef {ref['resource']} is not supported by the stand-in")
        value = str(((container.get("resources") or {}).get(kind) or {}).get("cpu", self.cpus))
        cpus = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
        return str(max(1, math.ceil(cpus)))

    def _hosts(self, pod: Mapping[str, Any]) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost", f"127.0.0.1 {pod['metadata']['name']}"]
        services = self._get(f"/api/v1/namespaces/{self.namespace}/services") or {"items": []}
        for svc in services["items"]:
            name, ns = svc["metadata"]["name"], self.namespace
            lines.append(f"127.0.0.1 {name} {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local")
        return "\n".join(lines) + "\n"

    # -- processes ------------------------------------------------------------------------------
    def _host_roots(self) -> list[Path]:
        """What the pod's command needs from this machine: the interpreter, the venv, the source tree.

        The venv's bin folder and the source roots are taken with their common folder (the checkout),
        so links inside it (the package's schema points at crds/) resolve too.
        """
        shared = [*self.bin_dirs, *self.python_path]
        common = os.path.realpath(os.path.commonpath(shared)) if shared else "/"
        wanted = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                  *([common] if common != "/" else [os.path.realpath(p) for p in shared])]
        roots: list[Path] = []
        for path in sorted({Path(p) for p in wanted}, key=lambda p: len(p.parts)):
            if not any(path.is_relative_to(r) for r in roots):
                roots.append(path)
        return roots

    def _reach_steps(self, binds: list[tuple[Path, str, bool]], workdir: Path, non_root: bool) -> tuple[
            list[str], list[str]]:
        """Keep this machine's interpreter, venv and checkout at their own paths inside the pod.

        An image carries them; here they live on this machine, where a pod's volume may hide them (an
        emptyDir at /tmp over a checkout under /tmp) or a folder a non-root user cannot enter may
        block them (/root, or a 0700 mktemp folder). Each such root is bound to a stage before the
        volumes are mounted and bound back after; a blocking folder becomes a world-enterable tmpfs.
        A root that itself cannot be entered (a checkout cloned straight into a 0700 mktemp folder)
        becomes such a tmpfs too, with each of its entries bound back into it.
        Returns the steps to run before and after the volume binds.
        """
        covers = [Path(dst) for _src, dst, _ro in binds]
        before: list[str] = []
        tmpfs: list[Path] = []
        staged: list[tuple[Path, Path, bool]] = []
        for n, root in enumerate(self._host_roots()):
            hider = max((d for d in covers if root.is_relative_to(d)), key=lambda d: len(d.parts), default=None)
            blocked = [a for a in reversed(root.parents) if a != Path("/") and non_root
                       and (hider is None or not a.is_relative_to(hider))
                       and not os.stat(a).st_mode & stat.S_IXOTH]
            opaque = non_root and not os.stat(root).st_mode & stat.S_IXOTH
            if hider is None and not blocked and not opaque:
                continue
            if blocked and not any(blocked[0].is_relative_to(t) for t in tmpfs):
                tmpfs.append(blocked[0])
            stage = workdir / "stage" / str(n)
            stage.mkdir(parents=True)
            before.append(f"mount --bind {shlex.quote(str(root))} {shlex.quote(str(stage))}")
            staged.append((root, stage, opaque))
        after = [f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(t))}" for t in tmpfs]
        for root, stage, opaque in staged:
            after.append(f"mkdir -p {shlex.quote(str(root))}")
            if not opaque:
                after.append(f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(root))}")
                continue
            after.append(f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(root))}")
            for entry in sorted(root.iterdir()):
                target = shlex.quote(str(entry))
                after += [f"mkdir {target}" if entry.is_dir() else f"touch {target}",
                          f"mount --bind {shlex.quote(str(stage / entry.name))} {target}"]
        return before, after

    def _script(self, binds: list[tuple[Path, str, bool]], workdir: Path, read_only_root: bool,
                user: tuple[int, int] | None, groups: list[int], command: list[str]) -> str:
        """The shell run inside `unshare -m`: mount points, binds, read-only root, then exec."""
        stage_steps, reach_steps = self._reach_steps(binds, workdir, user is not None and user[0] != 0)
        steps = ["set -e", "umask 022", "mount --make-rprivate /", *stage_steps]
        overlays: list[str] = []
        for n, (_src, dst, _ro) in enumerate(sorted(binds, key=lambda b: b[1].count("/"))):
            parent = Path(dst)
            while not parent.exists():
                parent = parent.parent
            if str(parent) != dst and str(parent) not in overlays and not str(parent).startswith(str(self.root)):
                # Make the missing mount point in a private overlay, never on this machine's disk.
                upper, work = workdir / "overlay" / str(n) / "upper", workdir / "overlay" / str(n) / "work"
                upper.mkdir(parents=True)
                work.mkdir(parents=True)
                steps.append(f"mount -t overlay overlay -o lowerdir={shlex.quote(str(parent))},"
                             f"upperdir={shlex.quote(str(upper))},workdir={shlex.quote(str(work))} "
                             f"{shlex.quote(str(parent))}")
                overlays.append(str(parent))
        for src, dst, read_only in sorted(binds, key=lambda b: b[1].count("/")):
            kind = "-d" if src.is_dir() else "-f"
            steps.append(f"[ -e {shlex.quote(dst)} ] || {{ if [ {kind} = -d ]; then mkdir -p {shlex.quote(dst)}; "
                         f"else touch {shlex.quote(dst)}; fi; }}")
            steps.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}")
            if read_only:
                steps.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        if "/dev" in overlays:  # as in a container: a private, world-writable /dev/shm
            steps.append("mount -t tmpfs -o mode=1777 tmpfs /dev/shm")
        steps += reach_steps
        if read_only_root:
            steps.append("mount -o remount,bind,ro /")
            steps += [f"mount -o remount,ro {shlex.quote(o)}" for o in overlays if o != "/dev"]
        prefix: list[str] = []
        if user is not None:
            prefix = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}",
                      f"--groups={','.join(str(g) for g in groups) or str(user[1])}", "--no-new-privs", "--"]
        steps.append("exec " + shlex.join([*prefix, *command]))
        return "\n".join(steps)

    def _start(self, pod: Mapping[str, Any]) -> RunningPod:
        meta, spec = pod["metadata"], pod["spec"]
        (container,) = spec["containers"]
        pod_context = spec.get("securityContext") or {}
        context = {**pod_context, **(container.get("securityContext") or {})}
        uid, gid = context.get("runAsUser"), context.get("runAsGroup", context.get("runAsUser"))
        fs_group = pod_context.get("fsGroup", gid if gid is not None else 0)
        if context.get("runAsNonRoot") and not uid:
            raise RuntimeError("container has runAsNonRoot and would run as root")
        workdir = self.root / "pods" / meta["uid"]
        volumes_dir = workdir / "volumes"
        volumes_dir.mkdir(parents=True)
        owner = (uid or 0, fs_group)
        paths = {v["name"]: self._materialise(v, volumes_dir, owner) for v in spec.get("volumes") or []}
        binds: list[tuple[Path, str, bool]] = []
        for mount in container.get("volumeMounts") or []:
            binds.append((paths[mount["name"]], mount["mountPath"], bool(mount.get("readOnly"))))
        hosts = workdir / "hosts"
        hosts.write_text(self._hosts(pod))
        binds.append((hosts, "/etc/hosts", True))
        # Like a kubelet: a fresh file at terminationMessagePath, read back when the container exits.
        message_file = workdir / "termination-log"
        message_file.touch()
        os.chown(message_file, owner[0], owner[1])
        binds.append((message_file, container.get("terminationMessagePath", "/dev/termination-log"), False))
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        script = self._script(binds, workdir, bool(context.get("readOnlyRootFilesystem")),
                              (uid, gid) if uid is not None else None, [fs_group], command)
        log_path = workdir / "log"
        self.logs[meta["name"]] = log_path
        with open(log_path, "wb") as log:
            network = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
            process = subprocess.Popen([*network, "unshare", "-m", "--", "sh", "-c", script],
                                       env=self._env(pod, container), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=container.get("workingDir", "/"),
                                       start_new_session=True)
        return RunningPod(meta["name"], meta["uid"], process, log_path, workdir, _now(), self._gpus(pod),
                          container.get("terminationMessagePolicy", "File"), message_file, container["name"])

    @staticmethod
    def _terminate(pod: RunningPod, grace: float) -> None:
        if pod.process.poll() is not None:
            return
        try:
            os.killpg(pod.process.pid, signal.SIGTERM)
            pod.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(pod.process.pid, signal.SIGKILL)
            pod.process.wait(5)
        except ProcessLookupError:
            pass

    def _report_exit(self, pod: RunningPod) -> None:
        code = pod.process.returncode
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as kubelets report
        self.finished[pod.uid] = exit_code
        message = pod.message_file.read_text(errors="replace")[:4096]
        if not message and exit_code != 0 and pod.policy == "FallbackToLogsOnError":
            lines = pod.log_path.read_text(errors="replace").splitlines()
            message = "\n".join(lines[-TERMINATION_LOG_LINES:])[-2048:]
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "startedAt": pod.started, "finishedAt": _now()}
        if message:
            terminated["message"] = message
        self._patch_status(pod.name, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": pod.container, "ready": False, "restartCount": 0,
                                   "state": {"terminated": terminated}}]})
