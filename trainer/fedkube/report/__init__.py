"""`fedkube report RUN_DIR_OR_CHECKPOINT_URI`: PNG plots and a Markdown summary of one run.

Needs matplotlib (the `report` extra); nothing else of the runtime does, so training images
stay small.
"""

from __future__ import annotations

from pathlib import Path

from fedkube.report.source import ReportSourceError, RunRecord, load_run

__all__ = ["ReportSourceError", "RunRecord", "default_output", "load_run", "write_report"]

SUMMARY = "summary.md"
OVERVIEW = "overview.png"


def default_output(source: str, record: RunRecord) -> Path:
    """Beside the run for a run directory; `report-JOB` in the working directory for a URI."""
    if "://" not in source and (Path(source) / "metrics.json").exists():
        return Path(source) / "report"
    return Path(f"report-{record.job}")


def write_report(record: RunRecord, output: Path, dpi: int = 110) -> list[Path]:
    """Write every plot and the summary into `output`; returns the files written, summary first."""
    try:
        from matplotlib.image import imread

        from fedkube.report.plots import PLOTS, overview
        from fedkube.report.summary import summary_markdown
    except ImportError as exc:
        raise RuntimeError(f"fedkube report needs matplotlib: pip install 'fedkube[report]' ({exc})") from exc
    if not record.history:
        raise ReportSourceError(f"{record.source}: no finished round to report on yet")
    output.mkdir(parents=True, exist_ok=True)
    summary = output / SUMMARY
    summary.write_text(summary_markdown(record))
    written = [summary]
    for name, plot in PLOTS.items():
        plot(record).savefig(output / name, dpi=dpi)
        written.append(output / name)
    overview(record, [imread(path) for path in written[1:]]).savefig(output / OVERVIEW, dpi=dpi // 2)
    return [*written, output / OVERVIEW]
