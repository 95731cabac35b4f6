"""Where a report's facts come from: a local run directory or a checkpoint in any store.

A run directory (what `fedkube run` and the aggregator write) holds metrics.json, status.json
and manifest.yaml. A checkpoint (`file://...` or `s3://...`, the store root or one
`round-NNNNNN` folder) holds the same history and manifest in its verified state.json, so a
job that ran in a cluster can be reported on from its bucket alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedkube.checkpoint import latest_checkpoint, read_checkpoint
from fedkube.stores import open_store

ROUND_FOLDER = re.compile(r"^(?P<store>.+?)/round-(?P<round>\d{6,})/?$")


class ReportSourceError(ValueError):
    """The source names nothing a report can be made from; the message says what was expected."""


@dataclass(frozen=True)
class RunRecord:
    """Everything a report shows, whatever it was read from."""

    source: str
    job: str
    history: list[dict[str, Any]]
    manifest: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.manifest.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def partitions(self) -> int:
        """Clients in the job: from the manifest, else the highest partition seen in any round."""
        declared = (self.spec.get("data") or {}).get("partitions")
        if isinstance(declared, int) and declared > 0:
            return declared
        seen = [p for h in self.history for group in (h.get("participants") or {}).values() for p in group]
        return max(seen, default=-1) + 1


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ReportSourceError(f"{path} is not valid JSON: {exc}") from exc


def from_run_dir(run_dir: Path) -> RunRecord:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise ReportSourceError(f"{run_dir} has no metrics.json: is it the run directory of a job that started?")
    history = _read_json(metrics)
    if not isinstance(history, list):
        raise ReportSourceError(f"{metrics} should hold a list of rounds")
    status_file, manifest_file = run_dir / "status.json", run_dir / "manifest.yaml"
    status = _read_json(status_file) if status_file.is_file() else {}
    manifest = yaml.safe_load(manifest_file.read_text()) if manifest_file.is_file() else {}
    job = status.get("job") or (manifest.get("metadata") or {}).get("name") or run_dir.name
    return RunRecord(str(run_dir), str(job), history, manifest or {}, status)


def from_checkpoint(uri: str) -> RunRecord:
    folder = ROUND_FOLDER.match(uri)
    store = open_store(folder["store"] if folder else uri)
    checkpoint = read_checkpoint(store, int(folder["round"])) if folder else latest_checkpoint(store)
    if checkpoint is None:
        raise ReportSourceError(f"no valid checkpoint under {uri}")
    state = checkpoint.state
    manifest = state.get("manifest") if isinstance(state.get("manifest"), dict) else {}
    return RunRecord(checkpoint.uri, str(state.get("job") or "job"), list(state.get("history") or []), manifest)


def load_run(source: str) -> RunRecord:
    """A run directory (a path), or a checkpoint URI (file://, s3://) or a local checkpoint folder."""
    if "://" in source:
        return from_checkpoint(source.rstrip("/"))
    path = Path(source).resolve()
    if not path.exists():
        raise ReportSourceError(f"{source}: no such run directory (or give a file:// or s3:// checkpoint URI)")
    if (path / "metrics.json").exists() or not ((path / "latest").exists() or ROUND_FOLDER.match(str(path))):
        return from_run_dir(path)
    return from_checkpoint(f"file://{path}")
