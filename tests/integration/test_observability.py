"""A real run, observed from outside: /metrics scraped over HTTP while the aggregator runs, the
status document read by both its readers, JSON logs, and the report of the finished run.

One job (real aggregator and client processes, real gRPC) serves every check, with a straggler
so that a round has a dropped client (partition 2 sleeps through its second round's deadline) and
client-level differential privacy so that ε is spent every round.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from jobs import Job, job_doc, with_task
from prometheus_samples import scrape_metrics

from fedkube.checkpoint import write_checkpoint
from fedkube.report import load_run
from fedkube.report.plots import DROPPED, PLOTS, REPORTED, participation_matrix
from fedkube.status_document import AggregatorReport
from fedkube.stores import open_store
from fedkube_operator.probe import AggregatorProbe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TARGET_EPSILON = 1000.0  # far above what five rounds spend: the job runs to the end


def total(history: list[dict[str, Any]], key: str) -> float:
    return sum(h.get(key) or 0 for h in history)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the job once; keep a mid-run scrape, both readings of /status, and the run directory."""
    doc = with_task(job_doc("observed", partitions=3, rounds=5, min_available=2, roundTimeoutSeconds=25),
                    "fixture_tasks:straggler", {"slowPartition": 2, "slowCalls": [2], "seconds": 30})
    doc["spec"]["privacy"] = {"noiseMultiplier": 0.5, "clippingNorm": 10.0, "targetEpsilon": TARGET_EPSILON}
    job = Job(doc, tmp_path_factory.mktemp("obs") / "observed")
    job.run.log_format = "json"
    job.start()
    try:
        job.wait_for("two finished rounds", lambda s: len(s["history"]) >= 2, timeout=240)
        samples = scrape_metrics(job.ports["metrics_port"])
        history_then = job.metrics()
        assert job.run.children[0].process.poll() is None, "the aggregator must still run when scraped"
        launcher_view = AggregatorReport.parse(job.status())
        operator_view = asyncio.run(_probe(job.ports["status_port"]))
        assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
    finally:
        job.stop()
    return {"samples": samples, "history_then": history_then, "run_dir": job.run.run_dir,
            "launcher_view": launcher_view, "operator_view": operator_view}


async def _probe(port: int) -> AggregatorReport | None:
    probe = AggregatorProbe(port=port)
    try:
        return await probe.report("127.0.0.1")
    finally:
        await probe.close()


def test_scraped_metrics_agree_with_metrics_json(observed: dict[str, Any]) -> None:
    samples = observed["samples"]
    finished = int(sum(samples[f"fedkube_rounds_total{{outcome={o}}}"] for o in ("completed", "abandoned")))
    assert finished >= 2, samples
    history = observed["history_then"][:finished]  # metrics.json only grows: compare the rounds the scrape saw
    assert len(history) == finished
    assert samples["fedkube_job_info{federated_job=observed}"] == 1
    assert samples["fedkube_job_rounds"] == 5
    phase = {p for p in ("Pending", "Running", "Succeeded", "Failed") if samples[f"fedkube_job_phase{{phase={p}}}"]}
    assert phase == {"Running" if finished < 5 else "Succeeded"}, samples
    assert samples["fedkube_round"] >= finished
    assert samples["fedkube_round_duration_seconds_count"] == finished
    assert samples["fedkube_round_duration_seconds_sum"] == pytest.approx(total(history, "seconds"))
    assert samples["fedkube_client_updates_reported_total"] == total(history, "clients_reported")
    assert samples["fedkube_clients_dropped_total"] == total(history, "clients_dropped")
    assert samples["fedkube_received_bytes_total"] == total(history, "bytes_in")
    assert samples["fedkube_sent_bytes_total"] == total(history, "bytes_out") > 0
    assert samples["fedkube_training_examples_total"] == total(history, "num_examples")
    rejected = Counter()
    for h in history:
        rejected.update(h["rejected"])
    assert {k: v for k, v in samples.items() if k.startswith("fedkube_client_updates_rejected_total")} == {
        f"fedkube_client_updates_rejected_total{{reason={r}}}": n for r, n in rejected.items()}
    completed = [h for h in history if h["status"] == "completed"]
    assert samples["fedkube_aggregation_duration_seconds_count"] == len(completed)
    # Every round checkpoints (everyRounds defaults to 1); a scrape during the last one's write sees it pending.
    checkpointed = [h for h in history if "checkpoint_seconds" in h]
    assert len(checkpointed) in (finished, finished - 1)
    assert samples["fedkube_checkpoint_duration_seconds_count"] == len(checkpointed)
    assert samples["fedkube_checkpoint_duration_seconds_sum"] == pytest.approx(total(history, "checkpoint_seconds"))
    if history[-1]["accuracy"] is not None:
        assert samples["fedkube_evaluation_accuracy_ratio"] == pytest.approx(history[-1]["accuracy"])
        assert samples["fedkube_evaluation_loss"] == pytest.approx(history[-1]["loss"])
    assert samples["fedkube_clients_joined"] >= 1
    if completed:  # noise was added, so privacy was spent (an abandoned round spends none)
        assert history[-1]["epsilon"] > 0
    assert samples["fedkube_privacy_epsilon"] == pytest.approx(history[-1]["epsilon"])
    assert samples["fedkube_privacy_delta"] == pytest.approx(history[-1]["delta"])
    assert samples["fedkube_privacy_target_epsilon"] == TARGET_EPSILON


def test_launcher_and_operator_read_the_same_status_document(observed: dict[str, Any]) -> None:
    launcher, operator = observed["launcher_view"], observed["operator_view"]
    assert launcher is not None and operator is not None
    assert launcher.rounds == operator.rounds == 5
    shared = min(len(launcher.history), len(operator.history))
    assert shared >= 2 and launcher.history[:shared] == operator.history[:shared]
    history = observed["history_then"]
    assert [(r.round, r.accuracy, r.reported, r.dropped) for r in launcher.history[:2]] == [
        (h["round"], h["accuracy"], h["clients_reported"], h["clients_dropped"]) for h in history[:2]]


def test_every_line_of_a_round_names_job_round_and_partition(observed: dict[str, Any]) -> None:
    logs = Path(observed["run_dir"]) / "logs"
    for partition in range(3):
        lines = [json.loads(line) for line in (logs / f"client-{partition}.log").read_text().splitlines()
                 if line.startswith("{")]
        in_rounds = [d for d in lines if d["message"].startswith("round ")]
        assert in_rounds, f"client {partition} logged no round"
        for d in in_rounds:
            assert (d["job"], d["partition"]) == ("observed", partition)
            assert d["message"].startswith(f"round {d['round']}")
    aggregator = [json.loads(line) for line in (logs / "aggregator.log").read_text().splitlines()
                  if line.startswith("{")]
    ends = [d for d in aggregator if d["message"].startswith("round ") and "/5 " in d["message"]]
    assert [d["round"] for d in ends] == [1, 2, 3, 4, 5]
    assert all(d["job"] == "observed" and "partition" in d for d in aggregator)
    joins = [d for d in aggregator if d["message"] == "client joined"]
    assert sorted(d["partition"] for d in joins)[:3] == [0, 1, 2]


def test_report_of_the_finished_run(observed: dict[str, Any], tmp_path: Path) -> None:
    run_dir = Path(observed["run_dir"])
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "fedkube.cli", "report", str(run_dir), "-o", str(out)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    history = json.loads((run_dir / "metrics.json").read_text())
    markdown = (out / "summary.md").read_text()
    rows, times = summary_rows(markdown), summary_rows(markdown, "Where time went")
    evaluated = [h for h in history if h["accuracy"] is not None]
    best = max(evaluated, key=lambda h: h["accuracy"])
    assert rows["final accuracy"] == f"{evaluated[-1]['accuracy']:.4f} (round {evaluated[-1]['round']})"
    assert rows["final loss"] == f"{evaluated[-1]['loss']:.4f}"
    assert rows["best accuracy"] == f"{best['accuracy']:.4f} (round {best['round']})"
    assert rows["rounds finished"] == f"{len(history)} of 5"
    assert rows["updates reported"] == str(total(history, "clients_reported"))
    assert rows["clients dropped"] == str(total(history, "clients_dropped")) != "0"
    assert rows["training examples"] == str(total(history, "num_examples"))
    assert times["collecting updates"] == f"{total(history, 'seconds'):.2f}"
    assert times["checkpoint"] == f"{total(history, 'checkpoint_seconds'):.2f}"
    assert times["aggregation"] == f"{total(history, 'aggregation_seconds'):.2f}"
    assert summary_rows(markdown, "Configuration")["rounds"] == "`5`"
    assert rows["phase"] == "Succeeded"
    last = history[-1]
    assert (f"ε = {last['epsilon']:.4f} at δ = {last['delta']:g}, {100 * last['epsilon'] / TARGET_EPSILON:.1f}% "
            f"of the target ε = {TARGET_EPSILON:g}, after round 5.") in markdown


def summary_rows(markdown: str, section: str = "Final metrics") -> dict[str, str]:
    """First column -> second column of every table row in one `## section` of the summary."""
    rows, current = {}, ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line.removeprefix("## ")
        cells = [c.strip() for c in line.strip("|").split("|")]
        if current == section and line.startswith("| ") and len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows


def test_report_figures_hold_the_runs_data(observed: dict[str, Any]) -> None:
    record = load_run(str(observed["run_dir"]))
    history = record.history
    rounds = [h["round"] for h in history]
    evaluated = [h for h in history if h["accuracy"] is not None]

    left, right = PLOTS["accuracy_loss.png"](record).axes
    (accuracy,), (loss,) = left.get_lines(), right.get_lines()
    assert list(accuracy.get_xdata()) == [h["round"] for h in evaluated]
    assert list(accuracy.get_ydata()) == pytest.approx([h["accuracy"] for h in evaluated])
    assert list(loss.get_ydata()) == pytest.approx([h["loss"] for h in evaluated])
    assert (left.get_ylabel(), right.get_ylabel()) == ("accuracy", "loss")
    assert left.get_xlabel() == right.get_xlabel() == "round"

    (ax,) = PLOTS["epsilon.png"](record).axes
    spent, target = ax.get_lines()
    assert list(spent.get_xdata()) == [h["round"] for h in history if h.get("epsilon") is not None]
    assert list(spent.get_ydata()) == pytest.approx([h["epsilon"] for h in history if h.get("epsilon") is not None])
    assert len(spent.get_xdata()) >= 4 and set(target.get_ydata()) == {TARGET_EPSILON}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "ε (epsilon)")

    (ax, *_) = PLOTS["participation.png"](record).axes
    (image,) = ax.get_images()
    cells = image.get_array()
    assert cells.shape == (3, len(history)) and (ax.get_xlabel(), ax.get_ylabel()) == ("round", "client (partition)")
    for column, h in enumerate(history):
        assert {p for p in range(3) if cells[p][column] == REPORTED} == set(h["participants"]["reported"])
        assert {p for p in range(3) if cells[p][column] == DROPPED} == set(h["participants"]["dropped"])
    assert DROPPED in participation_matrix(record)[2]

    (ax,) = PLOTS["round_duration.png"](record).axes
    collecting = ax.containers[0]
    assert len(collecting) == len(history)
    assert [bar.get_height() for bar in collecting] == pytest.approx([h["seconds"] for h in history])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "seconds")

    (ax,) = PLOTS["bytes.png"](record).axes
    sent, received = ax.get_lines()
    assert list(sent.get_xdata()) == rounds and len(received.get_ydata()) == len(history)
    assert list(received.get_ydata()) == pytest.approx([h["bytes_in"] / 2**20 for h in history])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "MiB")


def test_report_from_the_checkpoints_alone(observed: dict[str, Any]) -> None:
    run_dir = Path(observed["run_dir"])
    record = load_run(f"file://{run_dir}/checkpoints")
    history = json.loads((run_dir / "metrics.json").read_text())
    assert record.job == "observed" and record.partitions == 3
    assert [(h["round"], h["accuracy"]) for h in record.history] == [(h["round"], h["accuracy"]) for h in history]
    older = load_run(f"file://{run_dir}/checkpoints/round-000003")
    assert [h["round"] for h in older.history] == [1, 2, 3]


def test_report_from_s3_checkpoints(observed: dict[str, Any], s3_server: str, s3_bucket: str,
                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDKUBE_S3_ENDPOINT_URL", s3_server)
    record = load_run(f"file://{Path(observed['run_dir'])}/checkpoints")
    store = open_store(f"s3://{s3_bucket}/jobs/observed")
    state = {"round": 5, "job": "observed", "history": record.history, "manifest": record.manifest}
    write_checkpoint(store, 5, {}, {}, state, keep_last=1)
    result = subprocess.run([sys.executable, "-m", "fedkube.cli", "report", f"s3://{s3_bucket}/jobs/observed",
                             "-o", str(tmp_path / "r")], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "report of observed (5 rounds)" in result.stdout
    assert summary_rows((tmp_path / "r" / "summary.md").read_text())["rounds finished"] == "5 of 5"


def test_report_of_nothing_says_what_it_expected(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "fedkube.cli", "report", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "has no metrics.json" in result.stderr


def test_fedkube_run_report_writes_the_report_at_the_end(tmp_path: Path) -> None:
    manifest = tmp_path / "tiny.yaml"
    doc = job_doc("tiny", partitions=2, rounds=2, min_available=2, localEpochs=1, joinTimeoutSeconds=300)
    manifest.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(manifest), "--output-dir", str(run_dir),
                             "--report", "--log-format", "json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report of tiny (2 rounds): {run_dir / 'report' / 'summary.md'}" in result.stdout
    for name in ("summary.md", *PLOTS, "overview.png"):
        assert (run_dir / "report" / name).stat().st_size > 0, name
    lines = (run_dir / "logs" / "client-0.log").read_text().splitlines()
    assert all(json.loads(line)["job"] == "tiny" for line in lines if line.startswith("{"))
