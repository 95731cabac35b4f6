"""`fedkube run job.yaml`: the whole job as local processes, the embedded default and the demo.

The launcher starts the same `fedkube aggregator` and `fedkube client` commands the operator
puts in pods, on 127.0.0.1, and follows the aggregator's status document (the one the operator
polls) to show progress. The processes fork from one warm interpreter (fedkube.zygote), so torch
is imported once per job, not once per process; FEDKUBE_ZYGOTE=0 starts a fresh interpreter for
each instead. Each process logs to its own file under the run directory, and reads its own
ephemeral mTLS material (a fresh job CA per run, files 0600) from `<run dir>/tls/<identity>`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedkube.logs import set_context
from fedkube.secure.tls import client_identity, make_transport_material
from fedkube.spec import FederatedJob, SpecError
from fedkube.spec.sources import client_manifest, local_errors
from fedkube.status_document import STATUS_PATH, AggregatorReport, RoundRecord
from fedkube.zygote import Forked, Zygote

POLL_SECONDS = 0.25
READY_TIMEOUT = 120.0


class LaunchError(RuntimeError):
    pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes] | Forked
    log: Path
    reported: bool = False


@dataclass
class LocalRun:
    """One local job: its run directory, its processes, its status."""

    job: FederatedJob
    run_dir: Path
    console: Console
    log_format: str = "text"
    children: list[Child] = field(default_factory=list)
    ckks_secret: Path | None = None  # the job's secret CKKS context, for clients only (secureAggregation.mode ckks)
    zygote: Zygote | None = None
    fresh_interpreters: bool = field(
        default_factory=lambda: os.environ.get("FEDKUBE_ZYGOTE", "1") == "0" or not hasattr(os, "fork"))

    def _spawn(self, name: str, args: list[str]) -> Child:
        log = self.run_dir / "logs" / f"{name}.log"
        args = [*args, "--log-format", self.log_format]
        zygote = self._zygote()
        if zygote is not None:
            process: subprocess.Popen[bytes] | Forked = zygote.spawn(args, log, name)
        else:
            with log.open("wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "fedkube.cli", *args], stdout=out,
                                           stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def _env(self) -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}

    def _zygote(self) -> Zygote | None:
        """The warm interpreter children fork from, started on first use; None for fresh interpreters."""
        if self.zygote is None and not self.fresh_interpreters:
            task_module = self.job.spec.task.entrypoint.partition(":")[0]
            # torch._dynamo (sympy and some 800 modules) is what a process's first torch optimizer imports.
            zygote = Zygote(["fedkube.cli", "fedkube.aggregator.main", "fedkube.client.main", "torch._dynamo",
                             task_module], self._env(), self.run_dir / "logs" / "zygote.log")
            if reason := zygote.ready(READY_TIMEOUT):
                self.console.print(f"[yellow]starting each process in a fresh interpreter: {reason}[/yellow]")
                zygote.close()
                self.fresh_interpreters = True
            else:
                self.zygote = zygote
        return self.zygote

    def prepare(self, resume: bool) -> Path:
        """Fresh run directory (keeping its checkpoints when resuming); returns the manifest path."""
        if errors := local_errors(self.job.spec):
            raise SpecError(errors)
        if self.run_dir.exists() and not resume:
            shutil.rmtree(self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        manifest = self.run_dir / "manifest.yaml"
        manifest.write_text(yaml.safe_dump(self.job.manifest, sort_keys=False))
        if self.tls:
            shutil.rmtree(self.run_dir / "tls", ignore_errors=True)
            for identity, material in make_transport_material(self.job.name, self.job.spec.data.partitions).items():
                material.write(self.tls_dir(identity))
        else:
            self.console.print("[bold red]spec.transport.tls is false: MUTUAL TLS IS OFF, updates travel in clear "
                               "text and any local process can speak for any partition (debugging only)[/bold red]")
        secure = self.job.spec.secure_aggregation
        if secure.mode == "ckks":  # an ephemeral job key, for the clients' eyes only
            from fedkube.he.keys import ensure_secret_file
            from fedkube.he.params import ckks_params

            self.ckks_secret = ensure_secret_file(self.run_dir / "keys", ckks_params(secure.ckks))
        return manifest

    @property
    def tls(self) -> bool:
        return self.job.spec.transport.tls is not False

    def tls_dir(self, identity: str) -> Path:
        """Where one process's mTLS material lives ("aggregator" or "client-<partition>")."""
        return self.run_dir / "tls" / identity

    def _tls_args(self, identity: str) -> list[str]:
        return ["--tls-dir", str(self.tls_dir(identity))] if self.tls else []

    def decrypted_final_accuracy(self, secret_context: Path) -> float | None:
        from fedkube.he.session import decrypted_final_model, evaluate_model
        from fedkube.stores import open_store

        checkpoint = self.job.spec.checkpoint
        store = open_store(checkpoint.uri or f"file://{self.run_dir}/checkpoints", checkpoint.endpoint_url)
        weights = decrypted_final_model(store, secret_context)
        return evaluate_model(self.job.spec.task, weights).get("accuracy")

    def _ckks_args(self) -> list[str]:
        return [] if self.ckks_secret is None else ["--ckks-context", str(self.ckks_secret)]

    def start_aggregator(self, manifest: Path, port: int = 0) -> dict[str, int]:
        """Start the aggregator (gRPC on `port`, 0 for a free one); returns {"port", "status_port"} once it serves.

        A restarted aggregator must take the old port, so its clients find it again.
        """
        ready = self.run_dir / "ready.json"
        ready.unlink(missing_ok=True)
        aggregator = self._spawn("aggregator", [
            "aggregator", "--manifest", str(manifest), "--host", "127.0.0.1", "--port", str(port),
            "--status-port", "0", "--metrics-port", "0", "--output-dir", str(self.run_dir), "--ready-file", str(ready),
            *self._tls_args("aggregator")])
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if aggregator.process.poll() is not None:
                raise LaunchError(f"the aggregator exited with code {aggregator.process.returncode} before "
                                  f"it was ready; last lines of {aggregator.log}:\n{log_tail(aggregator.log)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"the aggregator was not ready after {READY_TIMEOUT:g}s; see {aggregator.log}")
            time.sleep(0.05)
        ports: dict[str, int] = json.loads(ready.read_text())
        return ports

    def client_manifest(self, manifest: Path, partition: int) -> Path:
        """A job with data sources gives each client a manifest naming its own source only (0600)."""
        if not self.job.spec.data.sources:
            return manifest
        path = self.run_dir / "clients" / f"client-{partition}.yaml"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(client_manifest(self.job.manifest, self.job.spec, partition), sort_keys=False))
        return path

    def start_client(self, manifest: Path, partition: int, port: int) -> Child:
        manifest = self.client_manifest(manifest, partition)
        return self._spawn(f"client-{partition}", ["client", "--manifest", str(manifest), "--partition",
                                                   str(partition), "--aggregator", f"127.0.0.1:{port}",
                                                   *self._tls_args(client_identity(partition)),
                                                   *self._ckks_args()])

    def start(self, manifest: Path) -> dict[str, int]:
        ports = self.start_aggregator(manifest)
        for p in range(self.job.spec.data.partitions):
            self.start_client(manifest, p, ports["port"])
        return ports

    def status(self, status_port: int) -> dict[str, Any] | None:
        try:
            with urlopen(f"http://127.0.0.1:{status_port}{STATUS_PATH}", timeout=2) as response:
                return json.loads(response.read())
        except (URLError, OSError, ValueError):
            return None

    def report_crashes(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code not in (None, 0) and not child.reported:
                child.reported = True
                self.console.print(f"[red]{child.name} exited with code {code}[/red]; last lines of {child.log}:")
                self.console.print(log_tail(child.log), markup=False, highlight=False)

    def wait(self, timeout: float) -> None:
        """Let children finish on their own (clients exit once told the job is over)."""
        deadline = time.monotonic() + timeout
        while any(c.process.poll() is None for c in self.children) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate every child still running (SIGTERM, then SIGKILL after `grace`)."""
        alive = [c for c in self.children if c.process.poll() is None]
        for child in alive:
            os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in alive:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None


def _progress_fields(report: AggregatorReport) -> dict[str, Any]:
    return {"phase": report.phase,
            "clients": f"{report.reported}/{report.selected} reported, {report.joined} joined",
            "acc": _fmt(report.accuracy), "loss": _fmt(report.loss),
            "eps": _epsilon(report)}


def _epsilon(report: AggregatorReport) -> str:
    if report.epsilon is None:
        return ""
    target = report.target_epsilon
    return f"ε {report.epsilon:.3g}" + (f"/{target:g}" if target else "")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def final_table(history: tuple[RoundRecord, ...], rows: int = 10) -> Table:
    table = Table(title=f"rounds (last {min(rows, len(history))})")
    private = any(h.epsilon is not None for h in history)
    for column in ("round", "status", "accuracy", "loss", "reported", "dropped", "rejected", "seconds") + (
            ("epsilon",) if private else ()):
        table.add_column(column, justify="right")
    for h in history[-rows:]:
        table.add_row(str(h.round), h.outcome, _fmt(h.accuracy), _fmt(h.loss), str(h.reported),
                      str(h.dropped), str(h.rejected), "-" if h.seconds is None else f"{h.seconds:.2f}",
                      *((_fmt(h.epsilon),) if private else ()))
    return table


def follow(run: LocalRun, status_port: int) -> AggregatorReport | None:
    """Show progress until the aggregator exits; returns the last status document, parsed."""
    rounds = run.job.spec.rounds
    last: AggregatorReport | None = None
    aggregator = run.children[0]
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("round {task.completed}/{task.total}"),
               TextColumn("{task.fields[phase]}"), TextColumn("acc {task.fields[acc]}"),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[eps]}"),
               TextColumn("{task.fields[clients]}"), TimeElapsedColumn()]
    with Progress(*columns, console=run.console, transient=False) as progress:
        bar = progress.add_task(run.job.name, total=rounds, phase="Pending", acc="-", loss="-", eps="",
                               clients="")
        while aggregator.process.poll() is None:
            report = AggregatorReport.parse(run.status(status_port))
            if report is not None:
                last = report
                progress.update(bar, completed=len(report.history), **_progress_fields(report))
            run.report_crashes()
            time.sleep(POLL_SECONDS)
    status_file = run.run_dir / "status.json"
    if status_file.exists():
        last = AggregatorReport.parse_text(status_file.read_text()) or last
    return last


def run_local(job: FederatedJob, run_dir: Path, resume: bool = False, console: Console | None = None,
              log_format: str = "text") -> int:
    set_context(job=job.name)
    run = LocalRun(job, run_dir, console or Console(), log_format)
    manifest = run.prepare(resume)
    try:
        ports = run.start(manifest)
        run.console.print(f"job [bold]{job.name}[/bold]: aggregator on 127.0.0.1:{ports['port']}, "
                          f"{job.spec.data.partitions} clients, logs in {run_dir / 'logs'}")
        report = follow(run, ports["status_port"])
    except KeyboardInterrupt:
        run.console.print("[yellow]interrupted: stopping every process[/yellow]")
        run.stop(grace=2.0)
        return 130
    except LaunchError as exc:
        run.console.print(f"[red]{exc}[/red]")
        run.stop()
        return 1
    run.wait(timeout=15.0)
    run.report_crashes()
    run.stop()
    aggregator = run.children[0]
    history = report.history if report is not None else ()
    if history:
        run.console.print(final_table(history))
    if aggregator.process.returncode != 0:
        message = report.message if report is not None and report.message else "the aggregator crashed"
        run.console.print(f"[red]job {job.name} failed[/red]: {message}; "
                          f"last lines of {aggregator.log}:")
        run.console.print(log_tail(aggregator.log), markup=False, highlight=False)
        return 1
    accuracy = report.accuracy if report is not None else None
    if run.ckks_secret is not None:  # the aggregator cannot read a CKKS model; this launcher holds the key
        accuracy = run.decrypted_final_accuracy(run.ckks_secret)
    shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
    run.console.print(f"[green]job {job.name} succeeded[/green]: {len(history)} rounds, "
                      f"final test accuracy {shown}; metrics in {run_dir / 'metrics.json'}")
    if report is not None and report.reason:
        run.console.print(f"stopped early ({report.reason}): {report.message}")
    return 0
