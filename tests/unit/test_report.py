"""fedkube report on hand-made histories: privacy, rejections, tasks without a test set, bad sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedkube.report import ReportSourceError, RunRecord, load_run, write_report
from fedkube.report.plots import DROPPED, NOT_SELECTED, PLOTS, REJECTED, REPORTED, participation_matrix
from fedkube.report.source import ROUND_FOLDER
from fedkube.report.summary import summary_markdown


def entry(round_: int, reported: list[int], dropped: list[int] = (), rejected: list[int] = (), **extra: Any) -> dict:
    return {"round": round_, "status": "completed", "accuracy": 0.5 + round_ / 10, "loss": 1.0 / round_,
            "clients_reported": len(reported), "clients_dropped": len(dropped), "clients_rejected": len(rejected),
            "rejected": {"non_finite": len(rejected)} if rejected else {},
            "participants": {"reported": reported, "dropped": list(dropped), "rejected": list(rejected)},
            "num_examples": 100 * len(reported), "seconds": float(round_), "bytes_in": 1 << 20, "bytes_out": 2 << 20,
            **extra}


PRIVATE = RunRecord(
    source="runs/private", job="private",
    history=[entry(1, [0, 1], epsilon=0.8), entry(2, [0], dropped=[2], epsilon=1.5),
             entry(3, [1, 2], rejected=[0], epsilon=2.1)],
    manifest={"spec": {"data": {"partitions": 4}, "rounds": 3, "privacy": {"targetEpsilon": 8.0, "delta": 1e-5}}})


def test_a_job_stopped_by_its_budget_says_so() -> None:
    stopped = RunRecord(PRIVATE.source, PRIVATE.job, PRIVATE.history, PRIVATE.manifest,
                        {"phase": "Succeeded", "reason": "PrivacyBudgetExhausted", "message": "round 4 would exceed"})
    assert "| stopped early | PrivacyBudgetExhausted: round 4 would exceed |" in summary_markdown(stopped)
    assert "stopped early" not in summary_markdown(PRIVATE)


def test_epsilon_plot_has_a_point_per_round_and_the_budget() -> None:
    (ax,) = PLOTS["epsilon.png"](PRIVATE).axes
    spent, target = ax.get_lines()
    assert list(spent.get_xdata()) == [1, 2, 3] and list(spent.get_ydata()) == [0.8, 1.5, 2.1]
    assert set(target.get_ydata()) == {8.0} and target.get_label() == "target ε = 8"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "ε (epsilon)")


def test_participation_marks_every_outcome() -> None:
    assert participation_matrix(PRIVATE) == [
        [REPORTED, REPORTED, REJECTED],
        [REPORTED, NOT_SELECTED, REPORTED],
        [NOT_SELECTED, DROPPED, REPORTED],
        [NOT_SELECTED, NOT_SELECTED, NOT_SELECTED],  # partition 3 never took part: still a row
    ]


def test_summary_states_privacy_spent_against_the_budget() -> None:
    text = summary_markdown(PRIVATE)
    assert "ε = 2.1000 at δ = 1e-05, 26.2% of the target ε = 8, after round 3." in text
    assert "| updates rejected | 1 (non_finite: 1) |" in text
    assert "| clients dropped | 1 |" in text
    assert "| collecting updates | 6.00 | 100.0% |" in text
    assert "Model traffic: 6.00 MiB sent to clients, 3.00 MiB received from them." in text


def test_without_a_test_set_the_clients_training_metrics_are_plotted() -> None:
    history = [{**entry(r, [0]), "accuracy": None, "loss": None, "train_accuracy": 0.1 * r, "train_loss": 2.0 / r}
               for r in (1, 2)]
    record = RunRecord("runs/x", "x", history)
    left, right = PLOTS["accuracy_loss.png"](record).axes
    (line,) = left.get_lines()
    assert list(line.get_ydata()) == pytest.approx([0.1, 0.2]) and "training" in line.get_label()
    assert list(right.get_lines()[0].get_ydata()) == pytest.approx([2.0, 1.0])
    assert "n/a (no central evaluation)" in summary_markdown(record)
    assert record.partitions == 1  # no manifest: the highest partition seen


def test_round_duration_stacks_every_part_that_was_measured() -> None:
    history = [entry(r, [0], aggregation_seconds=0.1, checkpoint_seconds=0.2) for r in (1, 2, 3)]
    (ax,) = PLOTS["round_duration.png"](RunRecord("s", "j", history)).axes
    assert [c.get_label() for c in ax.containers] == ["collecting updates", "aggregation", "checkpoint"]
    assert all(len(c) == 3 for c in ax.containers)
    assert [bar.get_y() for bar in ax.containers[2]] == pytest.approx([1.1, 2.1, 3.1])


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    written = write_report(PRIVATE, tmp_path / "out")
    assert [p.name for p in written] == ["summary.md", *PLOTS, "overview.png"]
    assert all(p.stat().st_size > 0 for p in written)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written[1:])


@pytest.mark.parametrize("name, make, message", [
    ("missing path", lambda d: str(d / "nope"), "no such run directory"),
    ("folder without metrics.json", lambda d: str(d), "has no metrics.json"),
    ("empty checkpoint store", lambda d: f"file://{d}", "no valid checkpoint"),
])
def test_bad_sources_say_what_was_expected(tmp_path: Path, name: str, make: Any, message: str) -> None:
    with pytest.raises(ReportSourceError, match=message):
        load_run(make(tmp_path))


def test_a_run_without_rounds_has_nothing_to_report(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(ReportSourceError, match="no finished round"):
        write_report(load_run(str(tmp_path)), tmp_path / "report")


def test_round_folder_uris() -> None:
    match = ROUND_FOLDER.match("s3://bucket/jobs/digits/round-000012")
    assert match and (match["store"], int(match["round"])) == ("s3://bucket/jobs/digits", 12)
    assert ROUND_FOLDER.match("s3://bucket/jobs/digits") is None
