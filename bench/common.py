"""What every benchmark shares: machine facts, peak-memory probes, tables and BENCHMARKS.md entries.

Peers run on the same machine in the same run, so each table carries ratios that survive a busy
machine; the load average before and after is recorded so a reader can tell when it was busy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS = ROOT / "BENCHMARKS.md"
# Flower pins protobuf < 7 and fedkube's stubs need protobuf >= 7.35, so Flower lives in its own
# venv (`make bench` builds it) that reuses the main venv's torch and numpy through a .pth file.
FLOWER_PYTHON = Path(os.environ.get("FEDKUBE_BENCH_FLOWER_PYTHON", ROOT / ".venv-bench" / "bin" / "python"))
MB = 1e6
GB = 1e9


def trainer_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this tree's code first, one BLAS thread per process."""
    path = os.pathsep.join([str(ROOT / "trainer"), str(ROOT / "operator"), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark of this process (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_bytes(pid: int | str = "self", key: str = "VmRSS") -> int:
    """Resident set (or VmHWM, the peak since the last reset) from /proc, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def flower_version() -> str:
    if not FLOWER_PYTHON.exists():
        return "not installed"
    out = subprocess.run([str(FLOWER_PYTHON), "-c", "import flwr; print(flwr.__version__)"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or "unavailable"


def machine_facts() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "ram_gb": round(mem / GB, 1), "cpu": cpu,
            "python": platform.python_version(), "fedkube": _version("fedkube"), "torch": _version("torch"),
            "numpy": _version("numpy"), "grpcio": _version("grpcio"), "protobuf": _version("protobuf"),
            "flwr": flower_version()}


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Report:
    """One benchmark's results: a table plus notes, printed and appended to BENCHMARKS.md."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    load_before: float = field(default_factory=load_average)

    def add(self, *row: Any) -> None:
        self.rows.append(row)

    def table(self) -> str:
        """The results alone as a markdown table, for a README section generated from a run."""
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def markdown(self, facts: dict[str, Any]) -> str:
        lines = [f"### {self.title} — {self.started:%Y-%m-%d %H:%M} UTC", "",
                 f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['ram_gb']} GB RAM; "
                 f"Python {facts['python']}; fedkube {facts['fedkube']}, flwr {facts['flwr']}, "
                 f"torch {facts['torch']}, numpy {facts['numpy']}, grpcio {facts['grpcio']}, "
                 f"protobuf {facts['protobuf']}. Load average {self.load_before:.1f} before, "
                 f"{load_average():.1f} after.", "", self.table().rstrip()]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def publish(self, facts: dict[str, Any] | None = None, path: Path = RESULTS) -> str:
        """Print the table and append it as a dated entry to BENCHMARKS.md."""
        text = self.markdown(facts or machine_facts())
        print("\n" + text, flush=True)
        with path.open("a") as f:
            f.write("\n" + text)
        return text

    def record(self, write: bool, readme: tuple[str, str] | None = None) -> None:
        """Publish, first regenerating the README section between the `readme` markers; or, not writing, print."""
        if not write:
            print(self.table(), end="")
            return
        if readme is not None:
            _write_readme_section(*readme, self.table())
        self.publish()


def _write_readme_section(start: str, end: str, text: str) -> None:
    """Replace what lies between the README's `start` and `end` markers: tables generated from a run."""
    readme = ROOT / "README.md"
    head, rest = readme.read_text().split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}{end}{tail}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def run_json(cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a worker process that prints one JSON object on its last line of stdout."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env or trainer_env(),
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def python_for(peer: str) -> str:
    return str(FLOWER_PYTHON) if peer == "flower" else sys.executable
