"""The report's figures, one function per plot: history in, matplotlib Figure out, no files.

Figures are built on `matplotlib.figure.Figure` with the Agg backend, never pyplot's global
state, so they render without a display and tests can read their data back (lines, bars, image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedkube.report.source import RunRecord
from fedkube.status_document import number, round_epsilon

matplotlib.use("Agg")  # no display needed; pyplot is never imported, figures save through Agg

History = Sequence[dict[str, Any]]
# Participation cells: what happened to each client in each round.
NOT_SELECTED, REPORTED, DROPPED, REJECTED = 0, 1, 2, 3
PARTICIPATION = (("not selected", "#e6e6e6"), ("reported", "#2ca02c"), ("dropped", "#ff7f0e"),
                 ("rejected", "#d62728"))
# Where a round's time went, in the order the bars stack.
TIME_PARTS = (("seconds", "collecting updates"), ("aggregation_seconds", "aggregation"),
              ("evaluation_seconds", "central evaluation"), ("checkpoint_seconds", "checkpoint"))
MIB = 1 << 20


def _series(history: History, value: Callable[[dict[str, Any]], float | None]) -> tuple[list[int], list[float]]:
    """(rounds, values) for the rounds where `value` has one."""
    pairs = [(int(h["round"]), v) for h in history if (v := value(h)) is not None]
    return [r for r, _ in pairs], [v for _, v in pairs]


def _key(name: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda h: number(h.get(name))


def _figure(title: str, columns: int = 1) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    axes = list(fig.subplots(1, columns, squeeze=False)[0])
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, axes


def _round_range(ax: Any, record: RunRecord) -> None:
    """Keep the x axis on the run's rounds even when a plot has no points."""
    rounds = [int(h["round"]) for h in record.history]
    if rounds:
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)


def accuracy_loss(record: RunRecord) -> Figure:
    """Central evaluation per round; the clients' training metrics when the task has no test set."""
    evaluated = any(number(h.get("accuracy")) is not None for h in record.history)
    prefix, source = ("", "central evaluation") if evaluated else ("train_", "training (mean over clients)")
    fig, axes = _figure(f"{record.job}: accuracy and loss per round ({source})", columns=2)
    for ax, key in zip(axes, ("accuracy", "loss"), strict=True):
        rounds, values = _series(record.history, _key(prefix + key))
        ax.plot(rounds, values, marker="o", markersize=3, label=f"{key}, {source}")
        ax.set_ylabel(key)
        _round_range(ax, record)
    return fig


def epsilon(record: RunRecord) -> Figure:
    """ε spent after each round, against the job's budget when it has one."""
    fig, (ax,) = _figure(f"{record.job}: privacy spent per round")
    rounds, values = _series(record.history, round_epsilon)
    ax.plot(rounds, values, marker="o", markersize=3, label="ε spent")
    target = number((record.spec.get("privacy") or {}).get("targetEpsilon"))
    if target is not None:
        ax.axhline(target, color="#d62728", linestyle="--", label=f"target ε = {target:g}")
    if not values:
        ax.text(0.5, 0.5, "differential privacy not enabled: no ε spent", transform=ax.transAxes,
                ha="center", va="center", color="#777777")
    else:
        ax.legend(loc="best")
    ax.set_ylabel("ε (epsilon)")
    _round_range(ax, record)
    return fig


def participation_matrix(record: RunRecord) -> list[list[int]]:
    """clients x rounds: NOT_SELECTED, REPORTED, DROPPED or REJECTED for each cell."""
    matrix = [[NOT_SELECTED] * len(record.history) for _ in range(record.partitions)]
    for column, h in enumerate(record.history):
        groups = h.get("participants") or {}
        for state, name in ((REPORTED, "reported"), (DROPPED, "dropped"), (REJECTED, "rejected")):
            for partition in groups.get(name) or []:
                if 0 <= partition < record.partitions:
                    matrix[partition][column] = state
    return matrix


def participation(record: RunRecord) -> Figure:
    fig = Figure(figsize=(8, max(2.5, 0.3 * record.partitions + 1.5)), layout="constrained")
    ax = fig.subplots()
    fig.suptitle(f"{record.job}: participation, clients x rounds")
    rounds = [int(h["round"]) for h in record.history]
    colors = ListedColormap([color for _, color in PARTICIPATION])
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], colors.N)
    first, last = (rounds[0], rounds[-1]) if rounds else (1, 1)
    ax.imshow(participation_matrix(record), cmap=colors, norm=norm, aspect="auto", interpolation="nearest",
              origin="lower", extent=(first - 0.5, last + 0.5, -0.5, record.partitions - 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks([r + 0.5 for r in rounds[:-1]], minor=True)  # white lines between cells
    ax.set_yticks([p + 0.5 for p in range(record.partitions - 1)], minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("round")
    ax.set_ylabel("client (partition)")
    ax.legend(handles=[Patch(color=color, label=label) for label, color in PARTICIPATION],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def round_duration(record: RunRecord) -> Figure:
    """Seconds per round, stacked by where they went."""
    fig, (ax,) = _figure(f"{record.job}: round duration")
    rounds = [int(h["round"]) for h in record.history]
    bottom = [0.0] * len(rounds)
    for key, label in TIME_PARTS:
        values = [number(h.get(key)) or 0.0 for h in record.history]
        if key == "seconds" or any(values):
            ax.bar(rounds, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("seconds")
    _round_range(ax, record)
    ax.legend(loc="best")
    return fig


def bytes_per_round(record: RunRecord) -> Figure:
    fig, (ax,) = _figure(f"{record.job}: model traffic per round")
    for key, label in (("bytes_out", "sent to clients"), ("bytes_in", "received from clients")):
        rounds, values = _series(record.history, _key(key))
        ax.plot(rounds, [v / MIB for v in values], marker="o", markersize=3, label=label)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    _round_range(ax, record)
    ax.legend(loc="best")
    return fig


def overview(record: RunRecord, images: Sequence[Any]) -> Figure:
    """Every plot on one page (two columns), the report at a glance: what the README shows."""
    rows = (len(images) + 1) // 2
    fig = Figure(figsize=(16, 3.6 * rows), layout="constrained")
    fig.suptitle(f"fedkube report: {record.job}", fontsize=16)
    for ax in fig.subplots(rows, 2, squeeze=False).flat:
        ax.set_axis_off()
    for ax, image in zip(fig.axes, images, strict=False):
        ax.imshow(image)
    return fig


# File name -> figure, in the order the summary shows them.
PLOTS: dict[str, Callable[[RunRecord], Figure]] = {
    "accuracy_loss.png": accuracy_loss,
    "epsilon.png": epsilon,
    "participation.png": participation,
    "round_duration.png": round_duration,
    "bytes.png": bytes_per_round,
}
